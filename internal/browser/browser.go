// Package browser drives a headless Chromium for tests that need a real
// browser: reading the DOM a page's scripts produced, or taking a
// screenshot. It speaks the DevTools protocol over a pipe
// (--remote-debugging-pipe), so tests can wait for a condition in the page
// in real time; Chromium's --virtual-time-budget never expires on a page
// that holds an event stream open.
//
// It is used by the status-page tests of agent/api and agent.
package browser

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrNotFound is returned by Find when no Chromium-family browser is installed.
var ErrNotFound = errors.New("no chromium found: install Debian's chromium package or set $CHROMIUM")

// candidates are the executable names tried by Find, after $CHROMIUM.
var candidates = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"}

// Find returns the path of the browser to run: $CHROMIUM when set, otherwise
// the first of the usual Chromium executable names found in $PATH.
func Find() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("find browser: $CHROMIUM=%q: %w", p, err)
		}
		return path, nil
	}
	for _, name := range candidates {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", ErrNotFound
}

// Options tune a browser and the pages it opens. Zero values pick defaults.
type Options struct {
	// Path is the browser executable; empty means Find.
	Path string
	// Width and Height are the viewport size in CSS pixels (default 1280x800).
	Width, Height int
	// Mobile emulates a phone: the viewport meta tag applies and touch is on.
	Mobile bool
	// WaitFor is a JavaScript expression DumpDOM and Screenshot wait for to
	// be true before reading the page (default: the document has loaded).
	WaitFor string
	// Timeout bounds DumpDOM and Screenshot as a whole (default 60 s).
	Timeout time.Duration
	// AllowHosts are host patterns ("172.18.*", "node-1") the browser may
	// reach besides loopback, e.g. containers on a test's own network.
	// Everything else is unresolvable.
	AllowHosts []string
}

func (o Options) withDefaults() Options {
	if o.Width <= 0 {
		o.Width = 1280
	}
	if o.Height <= 0 {
		o.Height = 800
	}
	if o.WaitFor == "" {
		o.WaitFor = "document.readyState === 'complete'"
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
	return o
}

// DumpDOM loads url, waits until o.WaitFor holds, and returns the page's
// serialized DOM as its scripts left it.
func DumpDOM(ctx context.Context, url string, o Options) (string, error) {
	o = o.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var dom string
	err := withPage(ctx, url, o, func(p *Page) error {
		var err error
		dom, err = p.DOM(ctx)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("dump dom of %s: %w", url, err)
	}
	return dom, nil
}

// Screenshot loads url, waits until o.WaitFor holds, and writes a PNG of the
// viewport to file.
func Screenshot(ctx context.Context, url, file string, o Options) error {
	o = o.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	err := withPage(ctx, url, o, func(p *Page) error { return p.Screenshot(ctx, file) })
	if err != nil {
		return fmt.Errorf("screenshot of %s: %w", url, err)
	}
	return nil
}

func withPage(ctx context.Context, url string, o Options, fn func(*Page) error) error {
	b, err := Start(ctx, o)
	if err != nil {
		return err
	}
	defer b.Close()
	p, err := b.Open(ctx, url)
	if err != nil {
		return err
	}
	if err := p.WaitFor(ctx, o.WaitFor); err != nil {
		return err
	}
	return fn(p)
}

// Browser is a running headless Chromium with its own throwaway profile.
type Browser struct {
	o       Options
	cmd     *exec.Cmd
	profile string
	toB     io.WriteCloser // commands, Chromium's fd 3
	fromB   io.ReadCloser  // answers and events, Chromium's fd 4
	stderr  *tailBuffer

	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan message
	pages   map[string]*Page // by session id
	readErr error
	done    chan struct{} // closed when the reader stops

	closeOnce sync.Once
}

// message is one DevTools protocol message: an answer (ID set) or an event.
type message struct {
	ID        int64           `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	Result    json.RawMessage `json:"result,omitempty"`
	Error     *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// Start launches the browser. Background networking is off and every host
// except loopback and o.AllowHosts is unresolvable, so a test run talks only
// to the pages it opens. Close it when done.
func Start(ctx context.Context, o Options) (*Browser, error) {
	o = o.withDefaults()
	path := o.Path
	if path == "" {
		p, err := Find()
		if err != nil {
			return nil, err
		}
		path = p
	}
	profile, err := os.MkdirTemp("", "rpi-browser-")
	if err != nil {
		return nil, fmt.Errorf("start browser: create profile: %w", err)
	}
	cmdR, cmdW, err := os.Pipe()
	if err != nil {
		os.RemoveAll(profile)
		return nil, fmt.Errorf("start browser: %w", err)
	}
	evR, evW, err := os.Pipe()
	if err != nil {
		cmdR.Close()
		cmdW.Close()
		os.RemoveAll(profile)
		return nil, fmt.Errorf("start browser: %w", err)
	}
	cmd := exec.Command(path,
		"--headless",
		"--no-sandbox", // tests run as root in containers
		"--disable-gpu",
		"--disable-dev-shm-usage",
		"--remote-debugging-pipe",
		"--user-data-dir="+profile,
		"--no-first-run",
		"--no-default-browser-check",
		"--disable-extensions",
		"--disable-background-networking",
		"--disable-component-update",
		"--disable-sync",
		"--disable-default-apps",
		"--disable-domain-reliability",
		"--disable-client-side-phishing-detection",
		"--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
		"--no-pings",
		"--hide-scrollbars",
		"--host-resolver-rules="+resolverRules(o.AllowHosts),
		"--window-size="+strconv.Itoa(o.Width)+","+strconv.Itoa(o.Height),
		"about:blank",
	)
	cmd.Dir = profile
	cmd.ExtraFiles = []*os.File{cmdR, evW} // fd 3 and fd 4
	b := &Browser{
		o: o, cmd: cmd, profile: profile, toB: cmdW, fromB: evR,
		stderr:  &tailBuffer{max: 4096},
		pending: map[int64]chan message{},
		pages:   map[string]*Page{},
		done:    make(chan struct{}),
	}
	cmd.Stderr = b.stderr
	setProcessGroup(cmd)
	err = cmd.Start()
	cmdR.Close()
	evW.Close()
	if err != nil {
		cmdW.Close()
		evR.Close()
		os.RemoveAll(profile)
		return nil, fmt.Errorf("start browser %s: %w", path, err)
	}
	go b.read()
	// The browser answers once it is ready; a failed start shows up here.
	if err := b.call(ctx, "", "Browser.getVersion", nil, nil); err != nil {
		b.Close()
		return nil, fmt.Errorf("start browser %s: %w", path, err)
	}
	return b, nil
}

// resolverRules maps every host to "not found" except loopback and allow.
func resolverRules(allow []string) string {
	rules := []string{"MAP * ~NOTFOUND", "EXCLUDE localhost", "EXCLUDE 127.*", "EXCLUDE [::1]"}
	for _, h := range allow {
		rules = append(rules, "EXCLUDE "+h)
	}
	return strings.Join(rules, ", ")
}

// read dispatches answers to their callers and page events to their pages
// until the pipe closes.
func (b *Browser) read() {
	defer close(b.done)
	r := bufio.NewReaderSize(b.fromB, 1<<20)
	for {
		data, err := r.ReadBytes(0)
		if err != nil {
			b.mu.Lock()
			b.readErr = fmt.Errorf("browser exited: %w (stderr: %s)", err, b.stderr.String())
			b.mu.Unlock()
			return
		}
		var m message
		if err := json.Unmarshal(data[:len(data)-1], &m); err != nil {
			continue
		}
		b.mu.Lock()
		if m.ID != 0 {
			if ch, ok := b.pending[m.ID]; ok {
				delete(b.pending, m.ID)
				ch <- m
			}
		} else if p := b.pages[m.SessionID]; p != nil {
			p.event(m)
		}
		b.mu.Unlock()
	}
}

// call sends one command (to a page when sessionID is set) and decodes its
// result into out, if not nil.
func (b *Browser) call(ctx context.Context, sessionID, method string, params, out any) error {
	b.mu.Lock()
	if b.readErr != nil {
		err := b.readErr
		b.mu.Unlock()
		return err
	}
	b.nextID++
	id := b.nextID
	ch := make(chan message, 1)
	b.pending[id] = ch
	b.mu.Unlock()

	req := map[string]any{"id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	if sessionID != "" {
		req["sessionId"] = sessionID
	}
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	b.writeMu.Lock()
	_, err = b.toB.Write(append(data, 0))
	b.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: write to browser: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			return fmt.Errorf("%s: %s (code %d)", method, m.Error.Message, m.Error.Code)
		}
		if out != nil {
			if err := json.Unmarshal(m.Result, out); err != nil {
				return fmt.Errorf("%s: decode result: %w", method, err)
			}
		}
		return nil
	case <-b.done:
		b.mu.Lock()
		defer b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, b.readErr)
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Close stops the browser and removes its profile. It is safe to call more
// than once.
func (b *Browser) Close() error {
	b.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = b.call(ctx, "", "Browser.close", nil, nil)
		cancel()
		b.toB.Close()
		exited := make(chan struct{})
		go func() { b.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			killProcessGroup(b.cmd)
			<-exited
		}
		b.fromB.Close()
		<-b.done
		os.RemoveAll(b.profile)
	})
	return nil
}

// Page is one tab.
type Page struct {
	b         *Browser
	sessionID string

	mu         sync.Mutex
	exceptions []string // uncaught script exceptions, in order
}

// Open creates a tab sized as the Options say and navigates it to url. It
// returns once navigation has started; use WaitFor for the page's state.
func (b *Browser) Open(ctx context.Context, url string) (*Page, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return nil, fmt.Errorf("open %s: %w", url, err)
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		return nil, fmt.Errorf("open %s: %w", url, err)
	}
	p := &Page{b: b, sessionID: attached.SessionID}
	b.mu.Lock()
	b.pages[p.sessionID] = p
	b.mu.Unlock()

	type step struct {
		method string
		params any
	}
	steps := []step{
		{"Runtime.enable", nil},
		{"Page.enable", nil},
		{"Emulation.setDeviceMetricsOverride", map[string]any{
			"width": b.o.Width, "height": b.o.Height, "deviceScaleFactor": 1, "mobile": b.o.Mobile,
		}},
	}
	if b.o.Mobile {
		steps = append(steps, step{"Emulation.setTouchEmulationEnabled", map[string]any{"enabled": true}})
	}
	steps = append(steps, step{"Page.navigate", map[string]any{"url": url}})
	for _, s := range steps {
		if err := b.call(ctx, p.sessionID, s.method, s.params, nil); err != nil {
			return nil, fmt.Errorf("open %s: %w", url, err)
		}
	}
	return p, nil
}

// event records uncaught script exceptions. It runs on the reader
// goroutine and must not block.
func (p *Page) event(m message) {
	if m.Method != "Runtime.exceptionThrown" {
		return
	}
	var e struct {
		ExceptionDetails struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if json.Unmarshal(m.Params, &e) != nil {
		return
	}
	msg := strings.TrimSpace(e.ExceptionDetails.Text + " " + e.ExceptionDetails.Exception.Description)
	p.mu.Lock()
	p.exceptions = append(p.exceptions, msg)
	p.mu.Unlock()
}

// Exceptions returns the uncaught script exceptions seen so far.
func (p *Page) Exceptions() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.exceptions...)
}

// Eval evaluates a JavaScript expression in the page, awaiting it if it is a
// promise, and decodes its value into out (if not nil).
func (p *Page) Eval(ctx context.Context, expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	err := p.b.call(ctx, p.sessionID, "Runtime.evaluate", map[string]any{
		"expression": expr, "returnByValue": true, "awaitPromise": true,
	}, &res)
	if err != nil {
		return err
	}
	if d := res.ExceptionDetails; d != nil {
		return fmt.Errorf("evaluate %q: %s %s", expr, d.Text, d.Exception.Description)
	}
	if out == nil || len(res.Result.Value) == 0 {
		return nil
	}
	if err := json.Unmarshal(res.Result.Value, out); err != nil {
		return fmt.Errorf("evaluate %q: decode value: %w", expr, err)
	}
	return nil
}

// WaitFor polls a JavaScript expression until it is true or ctx ends.
func (p *Page) WaitFor(ctx context.Context, expr string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var ok bool
		err := p.Eval(ctx, "Boolean("+expr+")", &ok)
		if err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("still false")
			}
			return fmt.Errorf("wait for %s: %w (uncaught exceptions: %q)", expr, err, p.Exceptions())
		case <-tick.C:
		}
	}
}

// DOM returns the page's current serialized DOM.
func (p *Page) DOM(ctx context.Context) (string, error) {
	var html string
	if err := p.Eval(ctx, "'<!doctype html>\\n' + document.documentElement.outerHTML", &html); err != nil {
		return "", err
	}
	return html, nil
}

// Screenshot writes a PNG of the viewport to file.
func (p *Page) Screenshot(ctx context.Context, file string) error {
	var shot struct {
		Data string `json:"data"`
	}
	if err := p.b.call(ctx, p.sessionID, "Page.captureScreenshot", map[string]any{"format": "png"}, &shot); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		return fmt.Errorf("decode screenshot: %w", err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		return fmt.Errorf("write screenshot: %w", err)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it (the browser's stderr,
// quoted in errors).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

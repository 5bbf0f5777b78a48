// Package client is the typed Go client of the rpi-agent HTTP API. Every
// workstation tool (rpi-inventory, rpi-meta, rpi-launch) and the tests speak
// to agents through it; none of them import agent internals.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// DefaultTimeout bounds one request when the caller's context has no deadline.
const DefaultTimeout = 10 * time.Second

// Client talks to one agent.
type Client struct {
	// BaseURL is the agent's address, e.g. "http://192.168.1.20:8080".
	BaseURL string
	// Token is sent as "Authorization: Bearer <token>" on writes.
	Token string
	// HTTP is the client used; nil means a client with DefaultTimeout.
	HTTP *http.Client
	// Gate, when set, sees every node and desired-state list the agent
	// answers before the caller does (toolkit.Gate for the workstation
	// tools); nil passes them on as received.
	Gate Gate
	// Cluster is the cluster the agent said it belongs to when Find
	// picked it (empty for agents too old to say).
	Cluster string
}

// Gate checks what an agent reports. Nodes returns the nodes the caller may
// use, or an error that fails the call; Desired returns the entries the
// caller may use.
type Gate interface {
	Nodes([]apitypes.Node) ([]apitypes.Node, error)
	Desired([]apitypes.DesiredService) []apitypes.DesiredService
}

// gateNodes passes nodes through c.Gate.
func (c *Client) gateNodes(nodes []apitypes.Node, err error) ([]apitypes.Node, error) {
	if err != nil || c.Gate == nil {
		return nodes, err
	}
	return c.Gate.Nodes(nodes)
}

// gateNode passes one node through c.Gate; a node it leaves out is an
// error.
func (c *Client) gateNode(n apitypes.Node, err error) (apitypes.Node, error) {
	if err != nil || c.Gate == nil {
		return n, err
	}
	out, err := c.Gate.Nodes([]apitypes.Node{n})
	if err != nil {
		return apitypes.Node{}, err
	}
	if len(out) == 0 {
		return apitypes.Node{}, fmt.Errorf("node %s left out (see the warning)", apitypes.Quote(n.Name))
	}
	return out[0], nil
}

// New returns a client for the agent at base. base may omit the scheme
// ("10.0.0.5:8080") and the port (":8080" is assumed).
func New(base, token string) (*Client, error) {
	u, err := NormalizeURL(base)
	if err != nil {
		return nil, err
	}
	return &Client{BaseURL: u, Token: token}, nil
}

// NormalizeURL turns "host", "host:port" or a full URL into a base URL.
func NormalizeURL(base string) (string, error) {
	base = strings.TrimSpace(base)
	if base == "" {
		return "", errors.New("empty agent address")
	}
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("agent address %q: %w", base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("agent address %q: scheme must be http or https", base)
	}
	if u.Host == "" {
		return "", fmt.Errorf("agent address %q: no host", base)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "8080")
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// StatusError is returned when the agent answered with a non-2xx status.
type StatusError struct {
	Code    int
	Message string
	URL     string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("agent %s answered %d: %s", e.URL, e.Code, apitypes.Printable(e.Message))
}

// UnreachableError is returned when no connection to the agent could be made.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("no agent at %s: is rpi-agent running? set RPI_AGENT or --agent (%v)", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: DefaultTimeout}
}

// do sends body as JSON and decodes the JSON answer into out (unless nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	data, err := c.fetch(ctx, method, path, "application/json", rd)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}

// fetch makes one request and returns the answer's body, or the agent's
// error as a *StatusError.
func (c *Client) fetch(ctx context.Context, method, path, accept string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &UnreachableError{URL: c.BaseURL, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(data))
		var e struct {
			Error string `json:"error"`
			Err   string `json:"err"`
		}
		if json.Unmarshal(data, &e) == nil {
			if e.Error != "" {
				msg = e.Error
			} else if e.Err != "" {
				msg = e.Err
			}
		}
		return nil, &StatusError{Code: resp.StatusCode, Message: msg, URL: c.BaseURL + path}
	}
	return data, nil
}

// Metric returns one sample of the agent's /metrics, named as the
// exposition writes it: `rpi_gossip_bytes_total{direction="sent"}`, or the
// bare name of a sample without labels.
func (c *Client) Metric(ctx context.Context, sample string) (float64, error) {
	data, err := c.fetch(ctx, http.MethodGet, "/metrics", "text/plain", nil)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s/metrics: %s: %w", c.BaseURL, line, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("%s/metrics has no sample %s", c.BaseURL, sample)
}

// Nodes returns every member as seen by the agent.
func (c *Client) Nodes(ctx context.Context) ([]apitypes.Node, error) {
	var nodes []apitypes.Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, &nodes)
	return c.gateNodes(nodes, err)
}

// Node returns one member by name.
func (c *Client) Node(ctx context.Context, name string) (apitypes.Node, error) {
	var n apitypes.Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes/"+url.PathEscape(name), nil, &n)
	return c.gateNode(n, err)
}

// Self returns the agent's own node.
func (c *Client) Self(ctx context.Context) (apitypes.Node, error) {
	var n apitypes.Node
	err := c.do(ctx, http.MethodGet, "/v1/self", nil, &n)
	return c.gateNode(n, err)
}

// AddService records service on the agent's own node.
func (c *Client) AddService(ctx context.Context, service string) (apitypes.ServiceResult, error) {
	var r apitypes.ServiceResult
	err := c.do(ctx, http.MethodPut, "/v1/services/"+url.PathEscape(service), nil, &r)
	return r, err
}

// RemoveService removes service from the agent's own node.
func (c *Client) RemoveService(ctx context.Context, service string) (apitypes.ServiceResult, error) {
	var r apitypes.ServiceResult
	err := c.do(ctx, http.MethodDelete, "/v1/services/"+url.PathEscape(service), nil, &r)
	return r, err
}

// ServiceNodes returns the nodes whose services include service.
func (c *Client) ServiceNodes(ctx context.Context, service string) ([]apitypes.Node, error) {
	var nodes []apitypes.Node
	err := c.do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(service), nil, &nodes)
	return c.gateNodes(nodes, err)
}

// Health returns the agent's /healthz answer; an error unless it answers 200.
func (c *Client) Health(ctx context.Context) (apitypes.Health, error) {
	var h apitypes.Health
	err := c.do(ctx, http.MethodGet, "/healthz", nil, &h)
	return h, err
}

// Events follows GET /v1/events and calls fn for each event until ctx is
// cancelled, the agent cannot be reached again, or fn returns an error. It
// returns nil when ctx was cancelled.
func (c *Client) Events(ctx context.Context, fn func(apitypes.Event) error) error {
	return c.Follow(ctx, nil, fn)
}

// maxEmptyStreams is how many streams in a row may break before they
// delivered an event or lived 10 s before Follow gives up: a stream that
// keeps breaking (a proxy cutting it) is the caller's to handle, not a
// loop's.
const maxEmptyStreams = 3

// Follow is Events, calling opened (when not nil) once the agent has
// accepted the stream: every event from then on reaches fn.
//
// A stream that breaks (a network blip, or the agent closing a stream that
// fell behind) is resumed at once from the same agent with the id of the
// last event received (Last-Event-ID), and the agent sends the events
// missed in between. When it no longer keeps them, fn gets an event of
// kind apitypes.EventReset: reload the nodes. Follow returns when the agent
// cannot be reached again or refuses the stream, or when maxEmptyStreams
// streams in a row broke early without an event, so that callers can move
// to another agent.
func (c *Client) Follow(ctx context.Context, opened func(), fn func(apitypes.Event) error) error {
	var last string // the id of the last event received, kept across streams
	for empty := 0; ; {
		started, delivered := time.Now(), false
		err := c.stream(ctx, last, &last, func() {
			if opened != nil {
				opened()
				opened = nil
			}
		}, func(ev apitypes.Event) error {
			delivered = true
			return fn(ev)
		})
		if ctx.Err() != nil {
			return nil
		}
		var broken *streamBroken
		if !errors.As(err, &broken) || last == "" {
			return err
		}
		if delivered || time.Since(started) > 10*time.Second {
			empty = 0
		} else if empty++; empty >= maxEmptyStreams {
			return broken.err
		}
	}
}

// streamBroken is a stream that ended or failed after the agent accepted
// it: Follow resumes it.
type streamBroken struct{ err error }

func (e *streamBroken) Error() string { return e.err.Error() }
func (e *streamBroken) Unwrap() error { return e.err }

// stream runs one GET /v1/events resuming after event id since ("" for a
// new stream), keeping the id of each event received in *last. Errors of fn
// and of decoding come back as they are; a stream that breaks after the
// agent accepted it comes back as *streamBroken.
func (c *Client) stream(ctx context.Context, since string, last *string, opened func(), fn func(apitypes.Event) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/v1/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if since != "" {
		req.Header.Set("Last-Event-ID", since)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := (&http.Client{}).Do(req) // no timeout: the stream is long-lived
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return &UnreachableError{URL: c.BaseURL, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Code: resp.StatusCode, Message: resp.Status, URL: c.BaseURL + "/v1/events"}
	}
	opened()
	var fnErr error
	err = readSSE(resp.Body, last, func(kind string, data []byte) error {
		var ev apitypes.Event
		if err := json.Unmarshal(data, &ev); err != nil {
			fnErr = fmt.Errorf("decode event %q: %w", kind, err)
		} else {
			fnErr = fn(ev)
		}
		return fnErr
	})
	if err != nil && fnErr == nil {
		return &streamBroken{err: err}
	}
	return err
}

// readSSE parses a text/event-stream body, calling fn once per event that has
// data. Comment lines (":keepalive") are skipped. As in EventSource, *lastID
// takes the value of the last "id:" field at the end of each block, with or
// without data: it is what a resumed stream sends as Last-Event-ID.
func readSSE(r io.Reader, lastID *string, fn func(kind string, data []byte) error) error {
	rd := newLineReader(r)
	var kind string
	var data []byte
	id := *lastID
	for {
		line, err := rd.ReadLine()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		switch {
		case line == "":
			*lastID = id
			if len(data) > 0 {
				if err := fn(kind, data); err != nil {
					return err
				}
			}
			kind, data = "", nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id:"):
			if v := strings.TrimPrefix(strings.TrimPrefix(line, "id:"), " "); !strings.ContainsRune(v, 0) {
				id = v
			}
		case strings.HasPrefix(line, "event:"):
			kind = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if len(data) > 0 {
				data = append(data, '\n')
			}
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")...)
		}
	}
}

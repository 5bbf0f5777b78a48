package launcher

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// DefaultSSHPort is the port preflight probes when Launcher.SSHPort is 0.
const DefaultSSHPort = 22

// sshProbeTimeout bounds one host's SSH probe.
const sshProbeTimeout = 5 * time.Second

// DialSSH checks that node answers SSH on port: it connects and reads the
// server's identification line ("SSH-2.0-..."), which an SSH server sends
// first. It logs in to nothing.
func DialSSH(ctx context.Context, node apitypes.Node, port int) error {
	ctx, cancel := context.WithTimeout(ctx, sshProbeTimeout)
	defer cancel()
	addr := net.JoinHostPort(node.Address, strconv.Itoa(port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("ssh %s: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	line, err := bufio.NewReaderSize(conn, 256).ReadSlice('\n')
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		return fmt.Errorf("ssh %s: no SSH greeting: %w", addr, err)
	}
	if !bytes.HasPrefix(line, []byte("SSH-")) {
		return fmt.Errorf("ssh %s: answered %q, not an SSH greeting", addr, apitypes.Printable(strings.TrimSpace(string(line))))
	}
	return nil
}

// PreflightError lists everything preflight found wrong; nothing was run or
// recorded.
type PreflightError struct {
	Action, Service string
	Problems        []string
	// Hosts maps the chosen hosts that failed their own checks (SSH, their
	// agent's token) to what failed, one line each in Problems too: as
	// many Problems as Hosts means nothing but those hosts failed.
	Hosts map[string]string
}

func (e *PreflightError) Error() string {
	return fmt.Sprintf("%s %s: preflight failed, nothing was run or recorded:\n  %s", e.Action, e.Service, strings.Join(e.Problems, "\n  "))
}

// render is one set of templates a run will render: the service's own or
// a dependent's, with the view it will see.
type render struct {
	service string
	data    TemplateData
	// dependent is set for a service re-applied after the change, whose
	// install playbook must be there too.
	dependent bool
}

// renders lists what a change of service with view (the cluster after it)
// and targets renders: the service's own templates, and each dependent's
// where it runs.
func (l *Launcher) renders(service string, view, targets []apitypes.Node, dependents []string) []render {
	out := []render{{service: service, data: NewTemplateData(l.Cluster, view, targets)}}
	for _, d := range dependents {
		out = append(out, render{service: d, data: dependentData(l.Cluster, view, d), dependent: true})
	}
	return out
}

// dependentData is the template data of a re-apply of dependent: its
// targets are the alive nodes running it in view.
func dependentData(cluster string, view []apitypes.Node, dependent string) TemplateData {
	data := NewTemplateData(cluster, view, nil)
	targets := data.Service(dependent)
	data.Targets, data.Self = targets, targets
	return data
}

// preflight checks, before anything changes, what the run needs: every
// playbook it will run is there, every service whose playbook reads
// {{ rpi_build_dir }} has templates and they render with the view they will
// get, the agents written to accept the token, and every host the play
// targets answers SSH. It collects every problem, so one run shows them all.
func (l *Launcher) preflight(ctx context.Context, action, service string, renders []render, hosts []apitypes.Node) error {
	var problems []string
	for _, r := range renders {
		if r.dependent {
			if _, err := l.playbook(r.service, InstallPlaybook); err != nil {
				problems = append(problems, "dependent "+err.Error())
				continue
			}
		}
		if err := l.checkTemplates(r); err != nil {
			problems = append(problems, err.Error())
		}
	}
	other, byHost := l.checkHosts(ctx, service, hosts)
	problems = append(problems, other...)
	if len(problems) == 0 && len(byHost) == 0 {
		return nil
	}
	e := &PreflightError{Action: action, Service: service, Problems: problems, Hosts: byHost}
	for _, p := range byHost {
		e.Problems = append(e.Problems, p)
	}
	// Checks finish in any order; the report should not.
	slices.Sort(e.Problems)
	return e
}

// checkTemplates renders r without writing it, and fails when the
// service's install playbook reads the build directory but there is
// nothing to render.
func (l *Launcher) checkTemplates(r render) error {
	dir := filepath.Join(l.Templates, r.service)
	files, err := Render(dir, "", r.data)
	if err != nil {
		return fmt.Errorf("templates of %s: %w", r.service, err)
	}
	if len(files) > 0 {
		return nil
	}
	book, err := l.playbook(r.service, InstallPlaybook)
	if err != nil {
		return nil // a service without templates and without playbook is reported by the playbook check
	}
	data, err := os.ReadFile(book)
	if err != nil {
		return fmt.Errorf("templates of %s: %w", r.service, err)
	}
	if bytes.Contains(data, []byte(BuildDirVar)) {
		return fmt.Errorf("templates of %s: %s reads {{ %s }} but %s holds no templates (set --templates or RPI_TEMPLATES to the folder holding %s/)",
			r.service, book, BuildDirVar, dir, r.service)
	}
	return nil
}

// checkHosts asks each host's agent for a token check and probes its SSH
// port, all hosts at once.
func (l *Launcher) checkHosts(ctx context.Context, service string, hosts []apitypes.Node) ([]string, map[string]string) {
	port := l.SSHPort
	if port == 0 {
		port = DefaultSSHPort
	}
	reach := l.ReachSSH
	if reach == nil {
		reach = DialSSH
	}
	var (
		mu       sync.Mutex
		problems []string
		byHost   = map[string]string{}
		wg       sync.WaitGroup
	)
	check := func(host, what string, f func() error) {
		defer wg.Done()
		if err := f(); err != nil {
			mu.Lock()
			defer mu.Unlock()
			msg := what + ": " + err.Error()
			if host == "" {
				problems = append(problems, msg)
			} else if byHost[host] == "" {
				byHost[host] = msg
			} else {
				byHost[host] += "; " + msg
			}
		}
	}
	wg.Add(1)
	go check("", "token", func() error { return l.Client.CheckToken(ctx, service) })
	for _, h := range hosts {
		name := apitypes.Quote(h.Name)
		wg.Add(2)
		go check(h.Name, "node "+name+" token", func() error {
			c, err := toolkit.NodeClient(l.Client, h)
			if err != nil {
				return err
			}
			return c.CheckToken(ctx, service)
		})
		go check(h.Name, "node "+name+" reachability", func() error { return reach(ctx, h, port) })
	}
	wg.Wait()
	return problems, byHost
}

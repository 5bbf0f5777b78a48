package vcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Docker runs the docker CLI. The harness speaks to the engine through the
// CLI rather than the Go SDK: it is what a person would type to reproduce a
// step, and it keeps the module free of the engine's dependency tree.
type Docker struct {
	// Bin is the docker executable; empty means "docker" on PATH.
	Bin string
}

// CommandError is a failed docker (or other) command with its output.
type CommandError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if len(msg) > 2000 {
		msg = msg[len(msg)-2000:]
	}
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args, " "), e.Err, msg)
}

func (e *CommandError) Unwrap() error { return e.Err }

func (d *Docker) bin() string {
	if d == nil || d.Bin == "" {
		return "docker"
	}
	return d.Bin
}

// Run runs docker with args and returns its trimmed standard output.
func (d *Docker) Run(ctx context.Context, args ...string) (string, error) {
	return d.RunInput(ctx, nil, args...)
}

// RunInput is Run with stdin fed from in.
func (d *Docker) RunInput(ctx context.Context, in io.Reader, args ...string) (string, error) {
	return run(ctx, in, d.bin(), args...)
}

// Available reports whether the docker engine answers.
func (d *Docker) Available(ctx context.Context) error {
	if _, err := exec.LookPath(d.bin()); err != nil {
		return fmt.Errorf("docker not found: install Docker Engine (docker.io): %w", err)
	}
	if _, err := d.Run(ctx, "version", "--format", "{{.Server.Version}}"); err != nil {
		return fmt.Errorf("docker engine not reachable: is dockerd running and may this user use it? %w", err)
	}
	return nil
}

// ImageExists reports whether the engine holds ref.
func (d *Docker) ImageExists(ctx context.Context, ref string) (bool, error) {
	_, err := d.Run(ctx, "image", "inspect", "--format", "{{.Id}}", ref)
	if err == nil {
		return true, nil
	}
	var ce *CommandError
	if errors.As(err, &ce) && strings.Contains(strings.ToLower(ce.Stderr), "no such image") {
		return false, nil
	}
	return false, err
}

// ListByLabel returns the IDs (or names, for networks and volumes) of the
// objects of kind ("container", "network", "volume") carrying label, which
// is "key" or "key=value".
func (d *Docker) ListByLabel(ctx context.Context, kind, label string) ([]string, error) {
	var args []string
	switch kind {
	case "container":
		args = []string{"ps", "-a", "-q", "--filter", "label=" + label}
	case "network":
		args = []string{"network", "ls", "-q", "--filter", "label=" + label}
	case "volume":
		args = []string{"volume", "ls", "-q", "--filter", "label=" + label}
	default:
		return nil, fmt.Errorf("list %s: unknown kind", kind)
	}
	out, err := d.Run(ctx, args...)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// run executes name with args, returning trimmed stdout or a *CommandError.
func run(ctx context.Context, in io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin = in
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &CommandError{Args: append([]string{name}, args...), Stderr: stderr.String(), Err: err}
	}
	return strings.TrimSpace(stdout.String()), nil
}

package vcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// RepoRoot walks up from dir to the directory holding the project's go.mod.
func RepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/rpi-cluster/rpi-cluster\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("find repository: no rpi-cluster go.mod above %s: run from inside the repository", dir)
		}
	}
}

// Binaries are the executables the node image is made from.
type Binaries struct {
	// Agent is rpi-agent built for linux on this machine's architecture.
	Agent string
	// RPIImage is rpi-image for this machine.
	RPIImage string
}

// BuildBinaries builds rpi-agent (static, linux) and rpi-image from the
// repository at root into outDir. Go's build cache makes reruns quick, and
// an unchanged binary keeps the image tag, so the image stays cached.
func BuildBinaries(ctx context.Context, root, outDir string) (Binaries, error) {
	b := Binaries{
		Agent:    filepath.Join(outDir, "linux-"+runtime.GOARCH, "rpi-agent"),
		RPIImage: filepath.Join(outDir, "rpi-image"),
	}
	builds := []struct {
		out, pkg string
		env      []string
	}{
		{b.Agent, "./agent/cmd/rpi-agent", []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=" + runtime.GOARCH}},
		{b.RPIImage, "./image/cmd/rpi-image", []string{"CGO_ENABLED=0"}},
	}
	for _, x := range builds {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "urfave_cli_no_docs", "-o", x.out, x.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), x.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return b, fmt.Errorf("build %s: %s", x.pkg, strings.TrimSpace(string(out)))
			}
			return b, fmt.Errorf("build %s: %w", x.pkg, err)
		}
	}
	return b, nil
}

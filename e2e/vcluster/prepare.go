package vcluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
)

// PrepareOptions says where the repository is and what image to make.
type PrepareOptions struct {
	// RepoRoot is the repository; the cluster's SSH key and workstation
	// files live in RepoRoot/.cache/vcluster.
	RepoRoot string
	// CacheDir holds the base root filesystems; empty: DefaultCacheDir.
	CacheDir string
	// Bare builds the base booting systemd only: no agent, no
	// customisation. For testing the harness itself.
	Bare bool
	// Mirror overrides the Debian mirror (default: this machine's apt's).
	Mirror string
	Docker *Docker
	Logger *slog.Logger
}

// Prepared is what a cluster is started from.
type Prepared struct {
	// Image is the node image tag.
	Image string
	// Key is the cluster's SSH private key (Key+".pub" beside it).
	Key string
	// Dir is the workstation directory (.cache/vcluster).
	Dir string
}

// Prepare makes sure the cluster's SSH key exists, builds the binaries and
// the node image, reusing every cached step.
func Prepare(ctx context.Context, o PrepareOptions) (*Prepared, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Docker == nil {
		o.Docker = &Docker{}
	}
	if err := o.Docker.Available(ctx); err != nil {
		return nil, err
	}
	if o.CacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		o.CacheDir = d
	}
	p := &Prepared{Dir: filepath.Join(o.RepoRoot, ".cache", "vcluster")}
	key, err := EnsureSSHKey(p.Dir)
	if err != nil {
		return nil, err
	}
	p.Key = key
	imgOpts := ImageOptions{CacheDir: o.CacheDir, Mirror: o.Mirror, Logger: o.Logger}
	if !o.Bare {
		o.Logger.Info("building binaries")
		bins, err := BuildBinaries(ctx, o.RepoRoot, filepath.Join(p.Dir, "bin"))
		if err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
		imgOpts.AgentBinary = bins.Agent
		imgOpts.RPIImage = bins.RPIImage
		imgOpts.SSHPublicKey = key + ".pub"
		imgOpts.ConfigOut = filepath.Join(p.Dir, "rpi-image.yaml")
	}
	img, err := BuildImage(ctx, o.Docker, imgOpts)
	if err != nil {
		return nil, err
	}
	p.Image = img
	return p, nil
}

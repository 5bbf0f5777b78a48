package vcluster

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultSuite is the Debian release the node root filesystem is built from.
const DefaultSuite = "bookworm"

// ImageRepo is the repository part of every node image tag.
const ImageRepo = "rpi-cluster/node"

// DefaultPackages are installed at bootstrap time. Containers have no route to
// a package mirror, so everything a node needs must be here. python3-apt is
// what Ansible's apt module runs on (Raspberry Pi OS ships it too); without it
// Ansible tries to install it from the network. systemd is process 1 of every
// node, as on a Pi, and runs the image's units.
var DefaultPackages = []string{
	"ca-certificates", "curl", "dbus", "iproute2", "iputils-ping", "nginx",
	"openssh-server", "procps", "python3", "python3-apt", "sudo",
	"systemd", "systemd-sysv",
}

// InitPath is the container's process 1: systemd, as on a real Pi.
const InitPath = "/sbin/init"

// baseFormat is bumped whenever the way the base is made changes, so that
// stale cached tarballs are not reused.
const baseFormat = "2"

// nodeFormat is bumped whenever what the harness changes in a node image
// (see bootable) changes, so that stale images are not reused.
const nodeFormat = "systemd-1"

// ImageOptions says how to build the node image.
type ImageOptions struct {
	// CacheDir holds the cached base root filesystems (rootfs/) and scratch
	// space, outside the checkout (see DefaultCacheDir). Required.
	CacheDir string
	// Mirror is the Debian mirror for debootstrap. Empty: the one this
	// machine's apt is configured with (see AptMirror).
	Mirror string
	// Suite is the Debian release; empty means DefaultSuite.
	Suite string
	// Packages are included at bootstrap; nil means DefaultPackages.
	Packages []string
	// RPIImage is the rpi-image executable that applies the project's
	// customisation (`rpi-image rootfs DIR`). Empty builds a bare image: the
	// base booting systemd with no unit of ours, useful only to test the
	// harness itself.
	RPIImage string
	// AgentBinary is the linux rpi-agent binary baked into the image.
	// Required when RPIImage is set.
	AgentBinary string
	// SSHPublicKey is the workstation key allowed to log in as the node
	// user. Required when RPIImage is set.
	SSHPublicKey string
	// ConfigOut is the workstation config rpi-image writes; the cluster's
	// gossip key and token are kept beside it, so rebuilt images keep them.
	// Empty: rpi-image's default (the user's ~/.config).
	ConfigOut string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

func (o *ImageOptions) defaults() error {
	if o.CacheDir == "" {
		return errors.New("build image: no cache directory")
	}
	if o.Suite == "" {
		o.Suite = DefaultSuite
	}
	if o.Packages == nil {
		o.Packages = DefaultPackages
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Mirror == "" {
		m, err := AptMirror("/etc/apt")
		if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
		o.Mirror = m
	}
	if o.RPIImage != "" {
		if o.AgentBinary == "" || o.SSHPublicKey == "" {
			return errors.New("build image: customisation needs the agent binary and the SSH public key")
		}
	}
	return nil
}

// DefaultCacheDir is where base root filesystems are cached: $RPI_CACHE_DIR,
// else rpi-cluster in the user's cache directory ($XDG_CACHE_HOME, or
// ~/.cache). It is outside the checkout so that every clone and every CI run
// on the machine share it; its entries are named by what goes into them
// (BaseKey), so a changed package list or mirror never reuses a stale one.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("RPI_CACHE_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache directory: %w: set RPI_CACHE_DIR", err)
	}
	return filepath.Join(d, "rpi-cluster"), nil
}

// BaseKey identifies a base root filesystem by what goes into it.
func (o *ImageOptions) BaseKey() string {
	pkgs := append([]string(nil), o.Packages...)
	sort.Strings(pkgs)
	h := sha256.New()
	fmt.Fprintf(h, "format=%s\nsuite=%s\nvariant=minbase\narch=%s\nmirror=%s\npackages=%s\n",
		baseFormat, o.Suite, runtime.GOARCH, o.Mirror, strings.Join(pkgs, ","))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// BuildImage returns the tag of the node image for opts, building it only
// when the engine does not hold it yet. The tag is a hash of everything that
// goes into the image: the base key, the agent binary, the customisation tool,
// the SSH key and the harness's own changes (nodeFormat).
func BuildImage(ctx context.Context, d *Docker, opts ImageOptions) (string, error) {
	if err := opts.defaults(); err != nil {
		return "", err
	}
	tag, err := imageTag(&opts)
	if err != nil {
		return "", err
	}
	ok, err := d.ImageExists(ctx, tag)
	if err != nil {
		return "", fmt.Errorf("build image: %w", err)
	}
	if ok {
		opts.Logger.Info("node image cached", "image", tag)
		return tag, nil
	}
	base, err := EnsureBase(ctx, opts)
	if err != nil {
		return "", err
	}
	work, err := os.MkdirTemp(opts.CacheDir, "rootfs-work-")
	if err != nil {
		return "", fmt.Errorf("build image: %w", err)
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return "", fmt.Errorf("build image: %w", err)
	}
	start := time.Now()
	if _, err := run(ctx, nil, "tar", "-C", root, "--numeric-owner", "-xpf", base); err != nil {
		return "", fmt.Errorf("build image: unpack base: %w", err)
	}
	if opts.RPIImage != "" {
		if err := customise(ctx, &opts, work, root); err != nil {
			return "", err
		}
	}
	if err := bootable(root); err != nil {
		return "", err
	}
	if err := importRootfs(ctx, d, root, tag); err != nil {
		return "", err
	}
	opts.Logger.Info("node image built", "image", tag, "took", time.Since(start).Round(time.Millisecond))
	return tag, nil
}

// bootable adapts root to booting in a container and to nothing else: the
// units of the image (rpi-firstboot, rpi-agent, ssh) stay exactly as
// rpi-image wrote them. The base carries nginx and apt only because nodes
// cannot reach a mirror; a Pi gets nginx from the playbook, which enables
// and starts it, so here it is installed but not enabled. apt's daily
// timers would take dpkg's lock from under a playbook with nothing to
// fetch, so they are masked.
func bootable(root string) error {
	for _, unit := range []string{"multi-user.target.wants/nginx.service", "timers.target.wants/apt-daily.timer",
		"timers.target.wants/apt-daily-upgrade.timer"} {
		if err := os.Remove(filepath.Join(root, "etc/systemd/system", unit)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("build image: disable %s: %w", filepath.Base(unit), err)
		}
	}
	for _, unit := range []string{"apt-daily.timer", "apt-daily-upgrade.timer"} {
		if err := os.Symlink("/dev/null", filepath.Join(root, "etc/systemd/system", unit)); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("build image: mask %s: %w", unit, err)
		}
	}
	return nil
}

// customise runs `rpi-image rootfs` over root, the same code that prepares
// SD cards.
func customise(ctx context.Context, o *ImageOptions, work, root string) error {
	// rpi-image looks for the agent as <dir>/rpi-agent or
	// <dir>/linux-<arch>/rpi-agent; give it both.
	agentDir := filepath.Join(work, "bin")
	for _, p := range []string{filepath.Join(agentDir, "rpi-agent"), filepath.Join(agentDir, "linux-"+runtime.GOARCH, "rpi-agent")} {
		if err := copyFile(o.AgentBinary, p, 0o755); err != nil {
			return fmt.Errorf("build image: stage agent: %w", err)
		}
	}
	args := []string{"rootfs", "--ssh-key", o.SSHPublicKey, "--agent-dir", agentDir}
	if o.ConfigOut != "" {
		args = append(args, "--config-out", o.ConfigOut)
	}
	out, err := run(ctx, nil, o.RPIImage, append(args, root)...)
	if err != nil {
		return fmt.Errorf("build image: customise root filesystem: %w", err)
	}
	if out != "" {
		o.Logger.Debug("rpi-image rootfs", "output", out)
	}
	return nil
}

// importRootfs streams root as a tar archive into `docker import`.
func importRootfs(ctx context.Context, d *Docker, root, tag string) error {
	tarCmd := exec.CommandContext(ctx, "tar", "-C", root, "--numeric-owner", "-cf", "-", ".")
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	var tarErr strings.Builder
	tarCmd.Stderr = &tarErr
	if err := tarCmd.Start(); err != nil {
		return fmt.Errorf("import image: start tar: %w", err)
	}
	_, importErr := d.RunInput(ctx, pipe, "import",
		"--change", fmt.Sprintf(`ENTRYPOINT ["%s"]`, InitPath),
		// "container" tells systemd where it runs, as every container
		// manager does. The stop signal is set per container (SystemdFlags):
		// import cannot.
		"--change", "ENV container=docker",
		"--change", "LABEL "+LabelImage+"=1",
		"-", tag)
	// Drain whatever import left unread so tar can exit.
	_, _ = io.Copy(io.Discard, pipe)
	waitErr := tarCmd.Wait()
	if importErr != nil {
		return fmt.Errorf("import image %s: %w", tag, importErr)
	}
	if waitErr != nil {
		return fmt.Errorf("import image %s: tar: %v: %s", tag, waitErr, tarErr.String())
	}
	return nil
}

// EnsureBase returns the path of the cached base tarball for opts, running
// debootstrap when it is missing. The base is keyed by suite, mirror and
// package list, so it is built once and reused by every image.
func EnsureBase(ctx context.Context, opts ImageOptions) (string, error) {
	if err := opts.defaults(); err != nil {
		return "", err
	}
	dir := filepath.Join(opts.CacheDir, "rootfs")
	path := filepath.Join(dir, "base-"+opts.Suite+"-"+opts.BaseKey()+".tar")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("build base root filesystem: debootstrap not found: apt-get install debootstrap: %w", err)
	}
	if os.Geteuid() != 0 {
		return "", errors.New("build base root filesystem: debootstrap needs root: run as root (or with sudo)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build base root filesystem: %w", err)
	}
	work, err := os.MkdirTemp(dir, "debootstrap-")
	if err != nil {
		return "", fmt.Errorf("build base root filesystem: %w", err)
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	opts.Logger.Info("building base root filesystem with debootstrap (about a minute)",
		"suite", opts.Suite, "mirror", opts.Mirror, "cache", path)
	start := time.Now()
	if _, err := run(ctx, nil, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(opts.Packages, ","), opts.Suite, root, opts.Mirror); err != nil {
		return "", fmt.Errorf("build base root filesystem: %w", err)
	}
	// Downloaded packages are not needed in the image.
	debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb"))
	for _, f := range debs {
		_ = os.Remove(f)
	}
	tmp := path + ".tmp"
	if _, err := run(ctx, nil, "tar", "-C", root, "--numeric-owner", "-cf", tmp, "."); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("build base root filesystem: archive: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("build base root filesystem: %w", err)
	}
	opts.Logger.Info("base root filesystem cached", "path", path, "took", time.Since(start).Round(time.Second))
	return path, nil
}

// imageTag hashes everything that goes into the image.
func imageTag(o *ImageOptions) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "base=%s\nnode=%s\n", o.BaseKey(), nodeFormat)
	if o.RPIImage != "" {
		for _, f := range []string{o.RPIImage, o.AgentBinary, o.SSHPublicKey} {
			if err := hashFile(h, f); err != nil {
				return "", fmt.Errorf("build image: %w", err)
			}
		}
	} else {
		h.Write([]byte("bare\n"))
	}
	return ImageRepo + ":" + hex.EncodeToString(h.Sum(nil))[:16], nil
}

func hashFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(w, "file=%s\n", filepath.Base(path))
	_, err = io.Copy(w, f)
	return err
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// AptMirror returns the Debian archive URI this machine's apt uses, read from
// sources.list and sources.list.d (one-line and deb822 formats). It skips the
// security archive and third-party repositories.
func AptMirror(aptDir string) (string, error) {
	files := []string{filepath.Join(aptDir, "sources.list")}
	more, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*"))
	files = append(files, more...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, uri := range sourceURIs(string(data)) {
			u := strings.TrimRight(uri, "/")
			if strings.HasSuffix(u, "/debian") {
				return u, nil
			}
		}
	}
	return "", fmt.Errorf("no Debian mirror found in %s/sources.list or sources.list.d: set the mirror explicitly (--mirror)", aptDir)
}

// sourceURIs extracts archive URIs from one-line ("deb URI suite ...") and
// deb822 ("URIs: URI") source files.
func sourceURIs(text string) []string {
	var uris []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "URIs:"); ok {
			uris = append(uris, strings.Fields(rest)...)
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "deb" {
			i := 1
			if strings.HasPrefix(f[i], "[") { // options: [arch=amd64 signed-by=...]
				for i < len(f) && !strings.HasSuffix(f[i], "]") {
					i++
				}
				i++
			}
			if i < len(f) {
				uris = append(uris, f[i])
			}
		}
	}
	return uris
}

// AgentConfig is the part of a node image's /etc/rpi-cluster/agent.yaml the
// workstation needs.
type AgentConfig struct {
	Cluster  string `yaml:"cluster"`
	APIToken string `yaml:"api_token"`
}

// ImageAgentConfig reads the agent configuration baked into image (by
// rpi-image rootfs): the API token workstation tools send on writes.
func ImageAgentConfig(ctx context.Context, d *Docker, image string) (AgentConfig, error) {
	var cfg AgentConfig
	out, err := d.Run(ctx, "run", "--rm", "--network", "none", "--entrypoint", "cat", image, "/etc/rpi-cluster/agent.yaml")
	if err != nil {
		return cfg, fmt.Errorf("read agent config of %s: %w", image, err)
	}
	if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
		return cfg, fmt.Errorf("read agent config of %s: %w", image, err)
	}
	return cfg, nil
}

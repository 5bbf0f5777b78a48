package image

import (
	"bytes"
	"crypto/rand"
	"debug/elf"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

//go:embed files
var files embed.FS

func embedded(name string) []byte {
	data, err := files.ReadFile("files/" + name)
	if err != nil {
		panic("image: embedded file missing: " + name)
	}
	return data
}

// Paths inside the root filesystem.
const (
	agentUser       = "rpi-agent"
	AgentBinaryPath = "/usr/local/bin/rpi-agent"
	AgentConfigPath = "/etc/rpi-cluster/agent.yaml"
	AgentDataDir    = "/var/lib/rpi-agent"
	// NodeKeyPath is the agent's own signing key in its data dir.
	NodeKeyPath      = AgentDataDir + "/" + identity.KeyFile
	AgentUnitPath    = "/etc/systemd/system/rpi-agent.service"
	FirstbootPath    = "/usr/local/sbin/rpi-firstboot"
	FirstbootUnit    = "/etc/systemd/system/rpi-firstboot.service"
	FirstbootMarker  = "/var/lib/rpi-cluster/firstboot.done"
	SSHDDropInPath   = "/etc/ssh/sshd_config.d/10-rpi-cluster.conf"
	SudoersPath      = "/etc/sudoers.d/010-rpi-cluster"
	WatchdogConfPath = "/etc/systemd/system.conf.d/10-rpi-watchdog.conf"
	WiFiNMConnection = "/etc/NetworkManager/system-connections/rpi-cluster-wifi.nmconnection"
	multiUserWants   = "/etc/systemd/system/multi-user.target.wants/"
	sysinitWants     = "/etc/systemd/system/sysinit.target.wants/"
	factoryHostname  = "raspberrypi"
)

// Options say how to customise a root filesystem.
type Options struct {
	// Cluster is the cluster name the agent joins (default "rpi").
	Cluster string
	// User is the login user (default "pi"), created when missing.
	User string
	// AuthorizedKeys are the SSH public keys that may log in as User, in
	// authorized_keys format (see ParseAuthorizedKeys).
	AuthorizedKeys []byte
	// Encrypt is the gossip key (base64 of 16, 24 or 32 bytes) and Token the
	// API token. Generated when empty (see Secrets).
	Encrypt string
	Token   string
	// AgentDir holds the agent builds, DIR/linux-<arch>/rpi-agent
	// (default "bin", where `make cross` puts them).
	AgentDir string
	// WiFi configures a wireless network; nil leaves WiFi alone.
	WiFi *WiFi
}

// withDefaults fills defaults and validates everything before anything
// is written.
func (o Options) withDefaults() (Options, error) {
	if o.Cluster == "" {
		o.Cluster = "rpi"
	}
	if o.User == "" {
		o.User = "pi"
	}
	if o.AgentDir == "" {
		o.AgentDir = "bin"
	}
	if !apitypes.ValidName(o.Cluster, true) {
		return o, fmt.Errorf("cluster %q: use letters, digits, '_', '.', '-' (at most 63), starting with a letter or digit", o.Cluster)
	}
	if err := ValidateUserName(o.User); err != nil {
		return o, err
	}
	if len(o.AuthorizedKeys) > 0 {
		if _, err := ParseAuthorizedKeys(o.AuthorizedKeys, "ssh key"); err != nil {
			return o, err
		}
	}
	if err := ValidateEncryptKey(o.Encrypt); o.Encrypt != "" && err != nil {
		return o, err
	}
	if err := ValidateToken(o.Token); o.Token != "" && err != nil {
		return o, err
	}
	if o.WiFi != nil {
		if err := o.WiFi.Validate(); err != nil {
			return o, err
		}
	}
	return o, nil
}

// ParseAuthorizedKeys checks that data holds SSH public keys, one per line
// in authorized_keys format (comments and blank lines allowed), and returns
// them normalised. A private key or anything else is refused with an error
// that says so; name says where data came from.
func ParseAuthorizedKeys(data []byte, name string) ([]byte, error) {
	if bytes.Contains(data, []byte("PRIVATE KEY")) {
		return nil, fmt.Errorf("%s: this is a private key; give the public key (the .pub file next to it)", name)
	}
	var out bytes.Buffer
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, comment, options, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("%s line %d: not an SSH public key (%v); expected a line like \"ssh-ed25519 AAAA... you@host\", e.g. ~/.ssh/id_ed25519.pub", name, i+1, err)
		}
		if len(options) > 0 {
			out.WriteString(strings.Join(options, ",") + " ")
		}
		out.Write(bytes.TrimSpace(ssh.MarshalAuthorizedKey(key)))
		if comment != "" {
			out.WriteString(" " + comment)
		}
		out.WriteString("\n")
	}
	if out.Len() == 0 {
		return nil, fmt.Errorf("%s: no SSH public key in it", name)
	}
	return out.Bytes(), nil
}

// ValidateEncryptKey checks a gossip key: base64 of 16, 24 or 32 bytes.
func ValidateEncryptKey(k string) error {
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil {
		return fmt.Errorf("encrypt key: not base64 (%v); generate one with `rpi-agent keygen` or leave --encrypt out", err)
	}
	if n := len(b); n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("encrypt key: %d bytes, need 16, 24 or 32 (base64); generate one with `rpi-agent keygen`", n)
	}
	return nil
}

// ValidateToken checks an API token: at least 16 printable characters, no
// whitespace.
func ValidateToken(t string) error {
	if len(t) < 16 {
		return fmt.Errorf("token: %d characters, need at least 16; leave --token out to generate one", len(t))
	}
	for _, r := range t {
		if r <= ' ' || r == 0x7f || r > '~' {
			return errors.New("token: only printable ASCII without spaces is allowed")
		}
	}
	return nil
}

// NewEncryptKey returns a fresh gossip key: 32 random bytes, base64.
func NewEncryptKey() string {
	return base64.StdEncoding.EncodeToString(randomBytes(32))
}

// NewToken returns a fresh API token: 32 random bytes, base64url.
func NewToken() string {
	return base64.RawURLEncoding.EncodeToString(randomBytes(32))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics instead)
	return b
}

// Report says what Customize did.
type Report struct {
	Arch        string // arm64, armv7, armv6, amd64
	ArchProbe   string // the binary the architecture was read from
	AgentBinary string // the host file installed as the agent
	Cluster     string
	Encrypt     string
	Token       string
	User        Account
	AgentUser   Account
	Keys        int      // SSH keys now authorised for User
	Written     []string // paths written, in order
	Warnings    []string
}

func (r *Report) wrote(p string)           { r.Written = append(r.Written, p) }
func (r *Report) wroteAll(paths ...string) { r.Written = append(r.Written, paths...) }
func (r *Report) wroteBoot(name string)    { r.Written = append(r.Written, "boot:"+name) }
func (r *Report) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

// Customize turns the root filesystem fsys (and the boot partition boot,
// when there is one) into an rpi-cluster node: see the package
// documentation and `rpi-image --help` for the list. Secrets missing from o
// are generated and returned in the report.
func Customize(fsys FS, boot BootFS, o Options) (*Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if o.Encrypt == "" {
		o.Encrypt = NewEncryptKey()
	}
	if o.Token == "" {
		o.Token = NewToken()
	}
	r := &Report{Cluster: o.Cluster, Encrypt: o.Encrypt, Token: o.Token}

	// Everything that can fail for a reason the user can fix comes first.
	if r.Arch, r.ArchProbe, err = DetectArch(fsys); err != nil {
		return nil, err
	}
	agent, agentPath, err := readAgentBinary(o.AgentDir, r.Arch)
	if err != nil {
		return nil, err
	}
	r.AgentBinary = agentPath

	acc, err := readAccounts(fsys)
	if err != nil {
		return nil, err
	}
	if r.AgentUser, err = acc.ensureUser(agentUser, "rpi-cluster agent", AgentDataDir, "/usr/sbin/nologin", true); err != nil {
		return nil, err
	}
	shell := "/bin/sh"
	if ok, _ := exists(fsys, "/bin/bash"); ok {
		shell = "/bin/bash"
	}
	if r.User, err = acc.ensureUser(o.User, o.User, "/home/"+o.User, shell, false); err != nil {
		return nil, err
	}
	if r.User.Created {
		for _, g := range []string{"adm", "dialout", "cdrom", "sudo", "audio", "video", "plugdev", "games", "users", "input", "render", "netdev", "gpio", "i2c", "spi"} {
			acc.addMember(g, o.User)
		}
	}
	if err := acc.save(fsys); err != nil {
		return nil, err
	}
	r.wroteAll("/etc/passwd", "/etc/group", "/etc/shadow")
	if acc.gshadow.found {
		r.wrote("/etc/gshadow")
	}

	steps := []func(FS, BootFS, Options, *Report, []byte) error{
		installAgent, installLoginUser, installSSH, installFirstboot, disableRaspiosFirstboot, installWatchdog, installWiFi,
	}
	for _, step := range steps {
		if err := step(fsys, boot, o, r, agent); err != nil {
			return nil, err
		}
	}
	if err := ResetIdentity(fsys, r); err != nil {
		return nil, err
	}
	return r, nil
}

// readAgentBinary reads DIR/linux-<arch>/rpi-agent and checks it is built
// for arch.
func readAgentBinary(dir, arch string) ([]byte, string, error) {
	p := filepath.Join(dir, "linux-"+arch, "rpi-agent")
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", fmt.Errorf("agent binary %s not found: the root filesystem is %s; run `make cross` (or `make build` for amd64) or point --agent-dir at the builds", p, arch)
	}
	if err != nil {
		return nil, "", fmt.Errorf("read agent binary: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("agent binary %s: not an ELF binary (%v); rebuild it with `make cross`", p, err)
	}
	if f.Machine != machineOf(arch) {
		return nil, "", fmt.Errorf("agent binary %s is built for %v, the root filesystem is %s; rebuild it with `make cross`", p, f.Machine, arch)
	}
	return data, p, nil
}

// agentConfig is the part of the agent's configuration rpi-image writes;
// everything else keeps the agent's defaults, and the node name is left
// for the agent to derive (hostname, or rpi-<MAC> on a factory default).
type agentConfig struct {
	Cluster  string `yaml:"cluster"`
	Encrypt  string `yaml:"encrypt"`
	APIToken string `yaml:"api_token"`
	DataDir  string `yaml:"data_dir"`
}

func installAgent(fsys FS, _ BootFS, o Options, r *Report, agent []byte) error {
	a := r.AgentUser
	if err := fsys.WriteFile(AgentBinaryPath, agent, 0o755, 0, 0); err != nil {
		return err
	}
	r.wrote(AgentBinaryPath)
	cfg, err := yaml.Marshal(agentConfig{Cluster: o.Cluster, Encrypt: o.Encrypt, APIToken: o.Token, DataDir: AgentDataDir})
	if err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	cfg = append([]byte("# rpi-agent configuration, written by rpi-image. Unknown keys are an error.\n# It holds the cluster's secrets: keep it 0600.\n"), cfg...)
	if err := fsys.WriteFile(AgentConfigPath, cfg, 0o600, a.UID, a.GID); err != nil {
		return err
	}
	if err := fsys.Mkdir(AgentDataDir, 0o750, a.UID, a.GID); err != nil {
		return err
	}
	if err := fsys.WriteFile(AgentUnitPath, embedded("rpi-agent.service"), 0o644, 0, 0); err != nil {
		return err
	}
	if err := fsys.Symlink(AgentUnitPath, multiUserWants+"rpi-agent.service"); err != nil {
		return err
	}
	r.wroteAll(AgentConfigPath, AgentDataDir+"/", AgentUnitPath, multiUserWants+"rpi-agent.service")
	return nil
}

func installLoginUser(fsys FS, _ BootFS, o Options, r *Report, _ []byte) error {
	u := r.User
	if u.Home == "" || u.Home == "/" {
		return fmt.Errorf("user %s: has no home directory for ~/.ssh", u.Name)
	}
	if r.User.Created {
		if err := fsys.Mkdir(u.Home, 0o750, u.UID, u.GID); err != nil {
			return err
		}
		if err := copySkel(fsys, u); err != nil {
			return err
		}
		r.wrote(u.Home + "/")
	}
	sshDir := path.Join(u.Home, ".ssh")
	keysPath := path.Join(sshDir, "authorized_keys")
	var keys []byte
	old, err := fsys.ReadFile(keysPath)
	switch {
	case err == nil:
		keys = old
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	for _, line := range strings.Split(string(o.AuthorizedKeys), "\n") {
		if line != "" && !slices.Contains(strings.Split(string(keys), "\n"), line) {
			if len(keys) > 0 && !bytes.HasSuffix(keys, []byte("\n")) {
				keys = append(keys, '\n')
			}
			keys = append(keys, line+"\n"...)
		}
	}
	for _, line := range strings.Split(string(keys), "\n") {
		if strings.TrimSpace(line) != "" && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			r.Keys++
		}
	}
	if r.Keys == 0 {
		r.warn("no SSH key authorised for %s: nobody can log in (give --ssh-key)", u.Name)
	} else {
		if err := fsys.Mkdir(sshDir, 0o700, u.UID, u.GID); err != nil {
			return err
		}
		if err := fsys.WriteFile(keysPath, keys, 0o600, u.UID, u.GID); err != nil {
			return err
		}
		r.wroteAll(sshDir+"/", keysPath)
	}
	sudoers := fmt.Sprintf("# Written by rpi-image: %s administers the node with sudo, without a password\n# (it has none: login is by SSH key only).\n%s ALL=(ALL) NOPASSWD: ALL\n", u.Name, u.Name)
	if ok, _ := exists(fsys, "/etc/sudoers.d"); !ok {
		if err := fsys.Mkdir("/etc/sudoers.d", 0o750, 0, 0); err != nil {
			return err
		}
	}
	if err := fsys.WriteFile(SudoersPath, []byte(sudoers), 0o440, 0, 0); err != nil {
		return err
	}
	r.wrote(SudoersPath)
	if ok, _ := exists(fsys, "/usr/bin/sudo"); !ok {
		r.warn("sudo is not installed in the root filesystem: %s has no way to become root", u.Name)
	}
	return nil
}

// copySkel copies the regular files of /etc/skel into a new home.
func copySkel(fsys FS, u Account) error {
	names, err := fsys.ReadDir("/etc/skel")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, n := range names {
		info, err := fsys.Lstat("/etc/skel/" + n)
		if err != nil || !info.Mode.IsRegular() {
			continue
		}
		data, err := fsys.ReadFile("/etc/skel/" + n)
		if err != nil {
			return err
		}
		if err := fsys.WriteFile(path.Join(u.Home, n), data, info.Mode.Perm(), u.UID, u.GID); err != nil {
			return err
		}
	}
	return nil
}

// sshUnits are where Debian-based systems keep the OpenSSH server unit.
var sshUnits = []string{"/lib/systemd/system/ssh.service", "/usr/lib/systemd/system/ssh.service"}

func installSSH(fsys FS, boot BootFS, _ Options, r *Report, _ []byte) error {
	if err := fsys.WriteFile(SSHDDropInPath, embedded("10-rpi-cluster.conf"), 0o644, 0, 0); err != nil {
		return err
	}
	r.wrote(SSHDDropInPath)
	// Older sshd_config files do not read the drop-in directory.
	conf, err := fsys.ReadFile("/etc/ssh/sshd_config")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.warn("no /etc/ssh/sshd_config: is openssh-server installed?")
	case err != nil:
		return err
	case !regexp.MustCompile(`(?m)^\s*Include\s+/etc/ssh/sshd_config\.d/`).Match(conf):
		conf = append([]byte("Include /etc/ssh/sshd_config.d/*.conf\n\n"), conf...)
		if err := rewrite(fsys, "/etc/ssh/sshd_config", conf, 0o644, 0, 0); err != nil {
			return err
		}
		r.wrote("/etc/ssh/sshd_config")
	}
	enabled := false
	for _, unit := range sshUnits {
		if ok, _ := exists(fsys, unit); ok {
			if err := fsys.Symlink(unit, multiUserWants+"ssh.service"); err != nil {
				return err
			}
			r.wrote(multiUserWants + "ssh.service")
			enabled = true
			break
		}
	}
	if boot != nil {
		// Raspberry Pi OS enables sshd at boot when this file exists.
		if err := boot.WriteFile("ssh", nil); err != nil {
			return err
		}
		r.wroteBoot("ssh")
		enabled = true
	}
	if !enabled {
		r.warn("no ssh.service in the root filesystem: sshd not enabled (is openssh-server installed?)")
	}
	return nil
}

func installFirstboot(fsys FS, _ BootFS, _ Options, r *Report, _ []byte) error {
	if err := fsys.WriteFile(FirstbootPath, embedded("rpi-firstboot"), 0o755, 0, 0); err != nil {
		return err
	}
	if err := fsys.WriteFile(FirstbootUnit, embedded("rpi-firstboot.service"), 0o644, 0, 0); err != nil {
		return err
	}
	if err := fsys.Symlink(FirstbootUnit, sysinitWants+"rpi-firstboot.service"); err != nil {
		return err
	}
	r.wroteAll(FirstbootPath, FirstbootUnit, sysinitWants+"rpi-firstboot.service")
	return nil
}

// installWatchdog turns on the board's hardware watchdog through systemd,
// so that a hung Pi reboots itself.
func installWatchdog(fsys FS, _ BootFS, _ Options, r *Report, _ []byte) error {
	if ok, _ := exists(fsys, path.Dir(WatchdogConfPath)); !ok {
		if err := fsys.Mkdir(path.Dir(WatchdogConfPath), 0o755, 0, 0); err != nil {
			return err
		}
	}
	if err := fsys.WriteFile(WatchdogConfPath, embedded("rpi-watchdog.conf"), 0o644, 0, 0); err != nil {
		return err
	}
	r.wrote(WatchdogConfPath)
	return nil
}

// ResetIdentity makes the root filesystem fsys forget the identity of the
// node it came from, so that every copy is born unique at its first boot:
// empty machine-id ("uninitialized" kept: see resetMachineID), no SSH host
// keys, no node key (the agent makes its own on its first start), hostname
// raspberrypi, no first-boot marker. r, when not nil, records what was
// written.
func ResetIdentity(fsys FS, r *Report) error {
	if r == nil {
		r = &Report{}
	}
	if err := resetMachineID(fsys); err != nil {
		return err
	}
	r.wrote("/etc/machine-id")
	if info, err := fsys.Lstat("/var/lib/dbus/machine-id"); err == nil && info.Mode.IsRegular() {
		if err := fsys.Remove("/var/lib/dbus/machine-id"); err != nil {
			return err
		}
		r.wrote("/var/lib/dbus/machine-id (removed)")
	}
	names, err := fsys.ReadDir("/etc/ssh")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, "ssh_host_") {
			if err := fsys.Remove("/etc/ssh/" + n); err != nil {
				return err
			}
			r.wrote("/etc/ssh/" + n + " (removed)")
		}
	}
	if err := rewrite(fsys, "/etc/hostname", []byte(factoryHostname+"\n"), 0o644, 0, 0); err != nil {
		return err
	}
	r.wrote("/etc/hostname")
	hosts, err := fsys.ReadFile("/etc/hosts")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(hosts), "\n"), "\n") {
		if l != "" && !regexp.MustCompile(`^127\.0\.1\.1\s`).MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		lines = append(lines, "127.0.0.1\tlocalhost")
	}
	lines = append(lines, "127.0.1.1\t"+factoryHostname)
	if err := rewrite(fsys, "/etc/hosts", []byte(strings.Join(lines, "\n")+"\n"), 0o644, 0, 0); err != nil {
		return err
	}
	r.wrote("/etc/hosts")
	if err := fsys.Remove(FirstbootMarker); err != nil {
		return err
	}
	// A card cloned after it booted carries its node key: two nodes signing
	// with one key would be one identity to every peer.
	if ok, _ := exists(fsys, NodeKeyPath); ok {
		if err := fsys.Remove(NodeKeyPath); err != nil {
			return err
		}
		r.wrote(NodeKeyPath + " (removed)")
	}
	if ok, _ := exists(fsys, FirstbootPath); !ok {
		r.warn("%s is not installed: nothing will regenerate the identity at boot (build the image with rpi-image build)", FirstbootPath)
	}
	return nil
}

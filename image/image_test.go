package image

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestELFArch(t *testing.T) {
	cases := []struct {
		name string
		bin  []byte
		want string
	}{
		{"aarch64", makeELF(elf.EM_AARCH64, nil, ""), ArchARM64},
		{"x86-64", makeELF(elf.EM_X86_64, nil, ""), ArchAMD64},
		{"raspbian armv6kz", makeELF(elf.EM_ARM, armAttributes("6KZ", 7), ""), ArchARMv6},
		{"armv6", makeELF(elf.EM_ARM, armAttributes("6", 6), ""), ArchARMv6},
		{"debian armhf v7", makeELF(elf.EM_ARM, armAttributes("7-A", 10), ""), ArchARMv7},
		{"arm without attributes", makeELF(elf.EM_ARM, nil, ""), ArchARMv7},
	}
	for _, c := range cases {
		got, err := ELFArch(c.bin)
		if err != nil || got != c.want {
			t.Errorf("%s: ELFArch = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	if _, err := ELFArch([]byte("#!/bin/sh\necho hi\n")); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("script: err = %v, want 'not an ELF'", err)
	}
	if _, err := ELFArch(makeELF(elf.EM_MIPS, nil, "")); err == nil || !strings.Contains(err.Error(), "unsupported machine") {
		t.Errorf("mips: err = %v, want 'unsupported machine'", err)
	}
}

func TestParseAuthorizedKeys(t *testing.T) {
	k1, k2 := newSSHKey(t, "alice@laptop"), newSSHKey(t, "bob@desk")
	got, err := ParseAuthorizedKeys([]byte("# team keys\n"+k1+"\n\n"+k2+"\n"), "keys")
	if err != nil {
		t.Fatal(err)
	}
	if want := k1 + "\n" + k2 + "\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	bad := map[string]string{
		"private key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
		"garbage":     "hello world\n",
		"empty":       "\n# nothing\n",
		"truncated":   k1[:30] + "\n",
	}
	wants := map[string]string{"private key": "private key", "garbage": "not an SSH public key", "empty": "no SSH public key", "truncated": "not an SSH public key"}
	for name, data := range bad {
		if _, err := ParseAuthorizedKeys([]byte(data), "id.pub"); err == nil || !strings.Contains(err.Error(), wants[name]) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, wants[name])
		}
	}
}

// view reads a customised root filesystem for the checks, from outside the
// code under test: the host filesystem for a directory, debugfs for an image.
type view interface {
	stat(t *testing.T, path string) (statResult, bool)
	cat(t *testing.T, path string) string
}

type dirView string

func (d dirView) stat(t *testing.T, path string) (statResult, bool) {
	fi, err := os.Lstat(string(d) + path)
	if errors.Is(err, os.ErrNotExist) {
		return statResult{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	r := statResult{Mode: fmt.Sprintf("%04o", fi.Mode().Perm()), UID: int(st.Uid), GID: int(st.Gid), Type: "regular"}
	switch {
	case fi.IsDir():
		r.Type = "directory"
	case fi.Mode()&os.ModeSymlink != 0:
		r.Type = "symlink"
		r.Link, _ = os.Readlink(string(d) + path)
	}
	return r, true
}

func (d dirView) cat(t *testing.T, path string) string {
	data, err := os.ReadFile(string(d) + path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

type imgView string

func (i imgView) stat(t *testing.T, path string) (statResult, bool) {
	return debugfsStat(t, string(i), path)
}
func (i imgView) cat(t *testing.T, path string) string { return debugfsCat(t, string(i), path) }

// passwdEntry returns the uid and gid of user from the view's /etc/passwd.
func passwdEntry(t *testing.T, v view, user string) (uid, gid int, line string) {
	t.Helper()
	for _, l := range strings.Split(v.cat(t, "/etc/passwd"), "\n") {
		if strings.HasPrefix(l, user+":") {
			f := strings.Split(l, ":")
			fmt.Sscan(f[2], &uid)
			fmt.Sscan(f[3], &gid)
			return uid, gid, l
		}
	}
	t.Fatalf("/etc/passwd has no %s", user)
	return
}

// checkCustomised verifies every file, mode, owner and setting Customize
// promises. owners says whether file owners are expected to be set.
func checkCustomised(t *testing.T, v view, o Options, wantAgent string, owners bool) {
	t.Helper()
	agentUID, agentGID, agentLine := passwdEntry(t, v, "rpi-agent")
	if agentUID < 100 || agentUID >= 1000 || !strings.HasSuffix(agentLine, ":/var/lib/rpi-agent:/usr/sbin/nologin") {
		t.Errorf("rpi-agent passwd entry %q: want a system uid, home /var/lib/rpi-agent, nologin", agentLine)
	}
	uid, gid, userLine := passwdEntry(t, v, o.User)
	if uid < 1000 || !strings.HasSuffix(userLine, ":/home/"+o.User+":/bin/bash") {
		t.Errorf("%s passwd entry %q: want uid >= 1000, home /home/%s, bash", o.User, userLine, o.User)
	}
	shadow := v.cat(t, "/etc/shadow")
	for _, u := range []string{o.User, "rpi-agent"} {
		if !regexp.MustCompile(`(?m)^` + u + `:!:\d+:[^:\n]*(:[^:\n]*){5}$`).MatchString(shadow) {
			t.Errorf("/etc/shadow: want a locked 9-field entry for %s, have:\n%s", u, shadow)
		}
	}
	if strings.Count(v.cat(t, "/etc/passwd"), "\n"+o.User+":") != 1 {
		t.Errorf("/etc/passwd: %s listed more than once", o.User)
	}
	group := v.cat(t, "/etc/group")
	for _, want := range []string{fmt.Sprintf("\n%s:x:%d:\n", o.User, gid), fmt.Sprintf("\nrpi-agent:x:%d:\n", agentGID), "\nsudo:x:27:" + o.User + "\n", "\nvideo:x:44:" + o.User + "\n"} {
		if !strings.Contains("\n"+group, want) {
			t.Errorf("/etc/group lacks %q:\n%s", want, group)
		}
	}
	if gs := v.cat(t, "/etc/gshadow"); !strings.Contains(gs, "\n"+o.User+":!::\n") || !strings.Contains(gs, "sudo:*::"+o.User+"\n") {
		t.Errorf("/etc/gshadow not updated:\n%s", gs)
	}

	type want struct {
		path, typ, mode string
		uid, gid        int
	}
	files := []want{
		{"/usr/local/bin/rpi-agent", "regular", "0755", 0, 0},
		{"/etc/rpi-cluster/agent.yaml", "regular", "0600", agentUID, agentGID},
		{"/var/lib/rpi-agent", "directory", "0750", agentUID, agentGID},
		{"/etc/systemd/system/rpi-agent.service", "regular", "0644", 0, 0},
		{"/etc/systemd/system/rpi-firstboot.service", "regular", "0644", 0, 0},
		{"/usr/local/sbin/rpi-firstboot", "regular", "0755", 0, 0},
		{"/etc/ssh/sshd_config.d/10-rpi-cluster.conf", "regular", "0644", 0, 0},
		{"/etc/sudoers.d/010-rpi-cluster", "regular", "0440", 0, 0},
		{"/home/" + o.User, "directory", "0750", uid, gid},
		{"/home/" + o.User + "/.bashrc", "regular", "0644", uid, gid},
		{"/home/" + o.User + "/.ssh", "directory", "0700", uid, gid},
		{"/home/" + o.User + "/.ssh/authorized_keys", "regular", "0600", uid, gid},
		{"/etc/shadow", "regular", "0640", 0, 42},
		{"/etc/systemd/system.conf.d/10-rpi-watchdog.conf", "regular", "0644", 0, 0},
	}
	for _, w := range files {
		s, ok := v.stat(t, w.path)
		if !ok {
			t.Errorf("%s missing", w.path)
			continue
		}
		if s.Type != w.typ || s.Mode != w.mode || (owners && (s.UID != w.uid || s.GID != w.gid)) {
			t.Errorf("%s: %s %s %d:%d, want %s %s %d:%d", w.path, s.Type, s.Mode, s.UID, s.GID, w.typ, w.mode, w.uid, w.gid)
		}
	}
	links := map[string]string{
		"/etc/systemd/system/multi-user.target.wants/rpi-agent.service":  "/etc/systemd/system/rpi-agent.service",
		"/etc/systemd/system/sysinit.target.wants/rpi-firstboot.service": "/etc/systemd/system/rpi-firstboot.service",
		"/etc/systemd/system/multi-user.target.wants/ssh.service":        "/lib/systemd/system/ssh.service",
	}
	for p, target := range links {
		if s, ok := v.stat(t, p); !ok || s.Type != "symlink" || s.Link != target {
			t.Errorf("%s: %+v, want a link to %s", p, s, target)
		}
	}
	if got := v.cat(t, WatchdogConfPath); !strings.Contains(got, "\nRuntimeWatchdogSec=15s\n") {
		t.Errorf("%s does not turn the hardware watchdog on:\n%s", WatchdogConfPath, got)
	}
	if got := v.cat(t, "/usr/local/bin/rpi-agent"); !strings.HasSuffix(got, "agent-"+wantAgent) {
		t.Errorf("installed agent is not the %s build (ends %q)", wantAgent, got[max(0, len(got)-12):])
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(v.cat(t, "/etc/rpi-cluster/agent.yaml")), &cfg); err != nil {
		t.Fatalf("agent.yaml: %v", err)
	}
	if cfg["cluster"] != o.Cluster || cfg["data_dir"] != "/var/lib/rpi-agent" || cfg["api_token"] == "" || len(cfg) != 4 {
		t.Errorf("agent.yaml = %v, want exactly cluster %s, encrypt, api_token, data_dir", cfg, o.Cluster)
	}
	if key, err := base64.StdEncoding.DecodeString(fmt.Sprint(cfg["encrypt"])); err != nil || len(key) != 32 {
		t.Errorf("agent.yaml encrypt %v: want base64 of 32 bytes (%v)", cfg["encrypt"], err)
	}
	if o.Token != "" && cfg["api_token"] != o.Token {
		t.Errorf("agent.yaml api_token = %v, want the given %s", cfg["api_token"], o.Token)
	}
	if got := v.cat(t, "/etc/systemd/system/rpi-agent.service"); got != string(embedded("rpi-agent.service")) {
		t.Error("rpi-agent.service differs from image/files/rpi-agent.service")
	}
	if got := v.cat(t, "/home/"+o.User+"/.ssh/authorized_keys"); got != string(o.AuthorizedKeys) {
		t.Errorf("authorized_keys = %q, want %q", got, o.AuthorizedKeys)
	}
	if got := v.cat(t, "/etc/sudoers.d/010-rpi-cluster"); !strings.Contains(got, "\n"+o.User+" ALL=(ALL) NOPASSWD: ALL\n") {
		t.Errorf("sudoers drop-in = %q", got)
	}
	sshd := v.cat(t, "/etc/ssh/sshd_config.d/10-rpi-cluster.conf")
	for _, line := range []string{"PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin no", "PubkeyAuthentication yes"} {
		if !strings.Contains(sshd, "\n"+line+"\n") {
			t.Errorf("sshd drop-in lacks %q", line)
		}
	}
	// Identity cleared: every copy is born unique.
	if got := v.cat(t, "/etc/machine-id"); got != "" {
		t.Errorf("machine-id = %q, want empty", got)
	}
	for _, p := range []string{"/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub", "/var/lib/rpi-cluster/firstboot.done", "/var/lib/rpi-agent/node.key"} {
		if _, ok := v.stat(t, p); ok {
			t.Errorf("%s still there", p)
		}
	}
	if got := v.cat(t, "/etc/hostname"); got != "raspberrypi\n" {
		t.Errorf("hostname = %q, want raspberrypi", got)
	}
	if got := v.cat(t, "/etc/hosts"); got != "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n127.0.1.1\traspberrypi\n" {
		t.Errorf("hosts = %q", got)
	}
}

func TestRootfs(t *testing.T) {
	root := makeRootDir(t, elf.EM_AARCH64, nil)
	o := Options{Cluster: "lab", User: "alice", AuthorizedKeys: []byte(newSSHKey(t, "alice@laptop") + "\n"), Token: "0123456789abcdef-token", AgentDir: makeAgentDir(t)}
	for round := 1; round <= 2; round++ { // the second run must change nothing
		r, err := customizeDir(t, root, o)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if r.Arch != ArchARM64 || r.ArchProbe != "/bin/sh" || r.Keys != 1 || r.User.Created != (round == 1) {
			t.Errorf("round %d: report %+v", round, r)
		}
		checkCustomised(t, dirView(root), o, ArchARM64, os.Geteuid() == 0)
	}
}

func TestRootfsManifestWithoutChown(t *testing.T) {
	root := makeRootDir(t, elf.EM_ARM, armAttributes("6KZ", 7))
	fsys, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	fsys.Chown = false
	o := Options{AuthorizedKeys: []byte(newSSHKey(t, "me") + "\n"), AgentDir: makeAgentDir(t)}
	r, err := Customize(fsys, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Arch != ArchARMv6 {
		t.Errorf("arch = %s, want armv6", r.Arch)
	}
	o.User = "pi"
	o.Cluster = "rpi"
	checkCustomised(t, dirView(root), o, ArchARMv6, false)
	var b strings.Builder
	if err := fsys.WriteManifest(&b); err != nil {
		t.Fatal(err)
	}
	m := b.String()
	for _, want := range []string{
		fmt.Sprintf("0100600 %d %d /etc/rpi-cluster/agent.yaml\n", r.AgentUser.UID, r.AgentUser.GID),
		fmt.Sprintf("0040700 %d %d /home/pi/.ssh\n", r.User.UID, r.User.GID),
		fmt.Sprintf("0100600 %d %d /home/pi/.ssh/authorized_keys\n", r.User.UID, r.User.GID),
		"0100440 0 0 /etc/sudoers.d/010-rpi-cluster\n",
		"0120777 0 0 /etc/systemd/system/multi-user.target.wants/rpi-agent.service -> /etc/systemd/system/rpi-agent.service\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("manifest lacks %q:\n%s", want, m)
		}
	}
}

func TestRootfsRefusesMissingAgentBuild(t *testing.T) {
	root := makeRootDir(t, elf.EM_ARM, armAttributes("7-A", 10))
	agents := makeAgentDir(t)
	os.RemoveAll(filepath.Join(agents, "linux-armv7"))
	before := dirHash(t, root)
	fsys, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	_, err = Customize(fsys, nil, Options{AgentDir: agents})
	if err == nil || !strings.Contains(err.Error(), "linux-armv7/rpi-agent not found") || !strings.Contains(err.Error(), "make cross") {
		t.Fatalf("err = %v, want the missing armv7 build and `make cross`", err)
	}
	// A wrong-architecture build is refused too.
	writeFile(t, filepath.Join(agents, "linux-armv7", "rpi-agent"), string(makeELF(elf.EM_X86_64, nil, "x")), 0o755)
	if _, err = Customize(fsys, nil, Options{AgentDir: agents}); err == nil || !strings.Contains(err.Error(), "built for EM_X86_64") {
		t.Fatalf("err = %v, want a wrong-architecture error", err)
	}
	if dirHash(t, root) != before {
		t.Error("root filesystem changed although customisation was refused")
	}
}

func dirHash(t *testing.T, root string) string {
	h := sha256.New()
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", p, info.Mode())
		if info.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			h.Write(data)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

func fileHash(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func fsck(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", img, rootOff)).CombinedOutput(); err != nil {
		t.Errorf("e2fsck of the root partition: %v\n%s", err, out)
	}
}

func TestBuild(t *testing.T) {
	base := makeImage(t, makeRootDir(t, elf.EM_AARCH64, nil))
	baseHash := fileHash(t, base)
	out := filepath.Join(t.TempDir(), "cluster.img")
	o := Options{Cluster: "lab", User: "pi", AuthorizedKeys: []byte(newSSHKey(t, "me@ws") + "\n"), AgentDir: makeAgentDir(t),
		WiFi: &WiFi{SSID: "Home Net", PSK: "correct horse", Country: "GB"}}
	var progress strings.Builder
	res, err := Build(context.Background(), BuildOptions{Options: o, Base: base, Out: out, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if fileHash(t, base) != baseHash {
		t.Error("the base image was modified")
	}
	if res.Arch != ArchARM64 || res.Layout.Root.Offset != rootOff || res.Layout.Boot.Offset != bootOff {
		t.Errorf("result %+v", res)
	}
	checkCustomised(t, imgView(out), o, ArchARM64, true)
	fsck(t, out)
	if s, ok := mtype(t, out, "ssh"); !ok || s != "" {
		t.Errorf("boot partition: ssh file %q, %v; want an empty file", s, ok)
	}
	if s, _ := mtype(t, out, "cmdline.txt"); !strings.HasSuffix(s, " rootwait cfg80211.ieee80211_regdom=GB\n") {
		t.Errorf("cmdline.txt = %q, want the regulatory domain appended", s)
	}
	nm := debugfsCat(t, out, WiFiNMConnection)
	// PSK from wpa_passphrase "Home Net" "correct horse".
	if !strings.Contains(nm, "\nssid=Home Net\n") || !strings.Contains(nm, "\npsk=") || strings.Contains(nm, "correct horse") {
		t.Errorf("NetworkManager connection:\n%s", nm)
	}
	if s, ok := debugfsStat(t, out, WiFiNMConnection); !ok || s.Mode != "0600" || s.UID != 0 {
		t.Errorf("wifi connection stat %+v", s)
	}
	if entries, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*tmp*")); len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}

	// reset-identity on an image of a card that has booted.
	booted := filepath.Join(t.TempDir(), "booted.img")
	run(t, "", "cp", "--sparse=always", out, booted)
	cmds := filepath.Join(t.TempDir(), "cmds")
	writeFile(t, cmds, "rm /etc/machine-id\nwrite "+cmds+" /etc/machine-id\nwrite "+cmds+" /etc/ssh/ssh_host_rsa_key\nwrite "+cmds+" /var/lib/rpi-cluster/firstboot.done\nrm /etc/hostname\nwrite "+cmds+" /etc/hostname\n", 0o644)
	run(t, "", "debugfs", "-w", "-f", cmds, fmt.Sprintf("%s?offset=%d", booted, rootOff))
	if _, ok := debugfsStat(t, booted, "/var/lib/rpi-cluster/firstboot.done"); !ok {
		t.Fatal("test setup: marker not written")
	}
	if _, err := ResetImage(booted); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/etc/ssh/ssh_host_rsa_key", "/var/lib/rpi-cluster/firstboot.done"} {
		if _, ok := debugfsStat(t, booted, p); ok {
			t.Errorf("reset-identity left %s", p)
		}
	}
	if got := debugfsCat(t, booted, "/etc/machine-id"); got != "" {
		t.Errorf("machine-id after reset = %q", got)
	}
	if got := debugfsCat(t, booted, "/etc/hostname"); got != "raspberrypi\n" {
		t.Errorf("hostname after reset = %q", got)
	}
	fsck(t, booted)
}

func TestBuildXZ(t *testing.T) {
	requireTools(t, "xz")
	base := makeImage(t, makeRootDir(t, elf.EM_ARM, armAttributes("6KZ", 7)))
	run(t, "", "xz", "-0", "-T1", base)
	out := filepath.Join(t.TempDir(), "cluster.img")
	o := Options{AuthorizedKeys: []byte(newSSHKey(t, "me") + "\n"), AgentDir: makeAgentDir(t)}
	res, err := Build(context.Background(), BuildOptions{Options: o, Base: base + ".xz", Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if res.Arch != ArchARMv6 {
		t.Errorf("arch %s, want armv6", res.Arch)
	}
	o.User, o.Cluster = "pi", "rpi"
	checkCustomised(t, imgView(out), o, ArchARMv6, true)
	fsck(t, out)

	// A truncated download: xz fails, nothing is left behind.
	xzData, err := os.ReadFile(base + ".xz")
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.img.xz")
	writeFile(t, cut, string(xzData[:len(xzData)/2]), 0o644)
	out2 := filepath.Join(t.TempDir(), "cluster.img")
	_, err = Build(context.Background(), BuildOptions{Options: o, Base: cut, Out: out2})
	if err == nil || !strings.Contains(err.Error(), "truncated or corrupt") {
		t.Errorf("truncated xz: err = %v", err)
	}
	assertNothingLeft(t, out2)
}

func assertNothingLeft(t *testing.T, out string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("output directory not empty after a failed build: %v", entries)
	}
}

func TestBuildRefusesBadInput(t *testing.T) {
	base := makeImage(t, makeRootDir(t, elf.EM_AARCH64, nil))
	baseData, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	good := Options{AuthorizedKeys: []byte(newSSHKey(t, "me") + "\n"), AgentDir: makeAgentDir(t)}
	dir := t.TempDir()
	truncated := filepath.Join(dir, "truncated.img")
	writeFile(t, truncated, string(baseData[:len(baseData)-5<<20]), 0o644)
	garbage := filepath.Join(dir, "garbage.img")
	writeFile(t, garbage, strings.Repeat("not a disk image ", 1000), 0o644)
	cases := []struct {
		name string
		base string
		o    Options
		want string
	}{
		{"truncated", truncated, good, "image " + truncated + ": partition 2 extends beyond the end of the file (truncated download?)"},
		{"garbage", garbage, good, "no MBR partition table"},
		{"private key", base, Options{AuthorizedKeys: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"), AgentDir: good.AgentDir}, "private key"},
		{"no key", base, Options{AgentDir: good.AgentDir}, "SSH public key is required"},
		{"bad encrypt", base, Options{AuthorizedKeys: good.AuthorizedKeys, AgentDir: good.AgentDir, Encrypt: "c2hvcnQ="}, "need 16, 24 or 32"},
		{"wifi without country", base, Options{AuthorizedKeys: good.AuthorizedKeys, AgentDir: good.AgentDir, WiFi: &WiFi{SSID: "x", PSK: "12345678"}}, "--country is required"},
		{"bad user", base, Options{AuthorizedKeys: good.AuthorizedKeys, AgentDir: good.AgentDir, User: "Root!"}, "user \"Root!\""},
	}
	for _, c := range cases {
		out := filepath.Join(t.TempDir(), "cluster.img")
		_, err := Build(context.Background(), BuildOptions{Options: c.o, Base: c.base, Out: out})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
		assertNothingLeft(t, out)
	}
	if _, err := Build(context.Background(), BuildOptions{Options: good, Base: base, Out: base}); err == nil || !strings.Contains(err.Error(), "is the base image") {
		t.Errorf("out = base: err = %v", err)
	}
	if string(mustRead(t, base)) != string(baseData) {
		t.Error("base image modified")
	}
}

func mustRead(t *testing.T, p string) []byte {
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestWorkstationAndKeptSecrets(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	keyDir := t.TempDir()
	writeFile(t, keyDir+"/id_ed25519", "private", 0o600)
	writeFile(t, keyDir+"/id_ed25519.pub", newSSHKey(t, "me"), 0o644)
	o := Options{Cluster: "lab"}
	if kept, err := FillSecrets(cfgPath, &o); err != nil || kept != "" || o.Token != "" {
		t.Fatalf("nothing kept yet: %q %v %+v", kept, err, o)
	}
	r := &Report{Cluster: "lab", Encrypt: NewEncryptKey(), Token: NewToken(), User: Account{Name: "pi"}}
	if _, err := SaveWorkstation(cfgPath, r, keyDir+"/id_ed25519.pub"); err != nil {
		t.Fatal(err)
	}
	data := string(mustRead(t, cfgPath))
	for _, want := range []string{"token: " + r.Token, "cluster: lab", "ssh_user: pi", "ssh_key: " + keyDir + "/id_ed25519", "known_hosts: " + dir + "/known_hosts"} {
		if !strings.Contains(data, want) {
			t.Errorf("workstation config lacks %q:\n%s", want, data)
		}
	}
	if info, _ := os.Stat(SecretsPath(cfgPath, "lab")); info == nil || info.Mode().Perm() != 0o600 {
		t.Errorf("secrets file: %v", info)
	}
	o2 := Options{Cluster: "lab"}
	if kept, err := FillSecrets(cfgPath, &o2); err != nil || kept == "" || o2.Encrypt != r.Encrypt || o2.Token != r.Token {
		t.Errorf("second image of the cluster must reuse its secrets: %q %v %+v", kept, err, o2)
	}
}

func TestWiFiPSK(t *testing.T) {
	// Reference value: wpa_passphrase "IEEE" "password" (IEEE 802.11i test vector).
	w := &WiFi{SSID: "IEEE", PSK: "password", Country: "US"}
	k, err := w.key()
	if err != nil || k != "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e" {
		t.Errorf("key = %s, %v", k, err)
	}
	for _, bad := range []WiFi{{SSID: "", PSK: "password", Country: "US"}, {SSID: "x", PSK: "short", Country: "US"}, {SSID: "x", PSK: "password", Country: "usa"}, {SSID: "a\"b", PSK: "password", Country: "US"}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

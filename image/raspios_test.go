package image

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// makeRaspiosRootDir is makeRootDir shaped like a Raspberry Pi OS Lite
// image as pi-gen leaves it: the user-rename wizard armed (rename-user -f
// -s: userconfig.service enabled, getty@tty1 disabled, an sshd banner),
// regenerate_ssh_host_keys.service enabled, and /etc/machine-id saying
// "uninitialized" (export-image/05-finalise).
func makeRaspiosRootDir(t *testing.T) string {
	t.Helper()
	root := makeRootDir(t, elf.EM_AARCH64, nil)
	writeFile(t, root+"/usr/lib/systemd/system/userconfig.service", "[Service]\nExecStart=/usr/lib/userconf-pi/userconf-service\n", 0o644)
	writeFile(t, root+"/usr/lib/systemd/system/regenerate_ssh_host_keys.service", "[Service]\nExecStart=/usr/lib/raspberrypi-sys-mods/regenerate_ssh_host_keys\n", 0o644)
	writeFile(t, root+"/usr/lib/systemd/system/getty@.service", "[Service]\nExecStart=-/sbin/agetty -o '-p -- \\\\u' --noclear - $TERM\n", 0o644)
	writeFile(t, root+"/usr/lib/systemd/system/rpi-resize.service", "[Unit]\nConditionFirstBoot=yes\n", 0o644)
	writeFile(t, root+"/etc/ssh/sshd_config.d/rename_user.conf", "Banner /usr/share/userconf-pi/sshd_banner\n", 0o644)
	writeFile(t, root+"/etc/machine-id", "uninitialized\n", 0o444)
	for _, unit := range []string{"userconfig.service", "regenerate_ssh_host_keys.service", "rpi-resize.service"} {
		link := root + "/etc/systemd/system/multi-user.target.wants/" + unit
		if unit == "rpi-resize.service" {
			link = root + "/etc/systemd/system/sysinit.target.wants/" + unit
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/lib/systemd/system/"+unit, link); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// checkRaspiosFirstboot checks what rpi-image did to Raspberry Pi OS's own
// first-boot steps.
func checkRaspiosFirstboot(t *testing.T, v view) {
	t.Helper()
	for _, p := range []string{
		"/etc/systemd/system/multi-user.target.wants/userconfig.service",
		"/etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service",
		"/etc/ssh/sshd_config.d/rename_user.conf",
	} {
		if _, ok := v.stat(t, p); ok {
			t.Errorf("%s still there: Raspberry Pi OS's first boot would undo or block rpi-firstboot's", p)
		}
	}
	if s, ok := v.stat(t, "/etc/systemd/system/getty.target.wants/getty@tty1.service"); !ok || s.Type != "symlink" || s.Link != "/lib/systemd/system/getty@.service" {
		t.Errorf("getty@tty1: %+v, want it enabled again (a link to the getty@ template)", s)
	}
	// Not rpi-cluster's business: the root filesystem still grows to the
	// card on the first boot, which systemd must see as the first.
	if s, ok := v.stat(t, "/etc/systemd/system/sysinit.target.wants/rpi-resize.service"); !ok || s.Type != "symlink" {
		t.Errorf("rpi-resize.service no longer enabled: %+v", s)
	}
	if got := v.cat(t, "/etc/machine-id"); got != "uninitialized\n" {
		t.Errorf("machine-id = %q, want \"uninitialized\\n\" as in the base (systemd's first boot, which rpi-resize.service needs)", got)
	}
}

func TestRootfsTakesOverRaspiosFirstboot(t *testing.T) {
	root := makeRaspiosRootDir(t)
	o := Options{Cluster: "lab", User: "pi", AuthorizedKeys: []byte(newSSHKey(t, "me@ws") + "\n"), AgentDir: makeAgentDir(t)}
	for round := 1; round <= 2; round++ { // the second run must change nothing
		r, err := customizeDir(t, root, o)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(r.Warnings) != 0 {
			t.Errorf("round %d: warnings %q", round, r.Warnings)
		}
		checkRaspiosFirstboot(t, dirView(root))
	}
}

func TestBuildTakesOverRaspiosFirstboot(t *testing.T) {
	base := makeImage(t, makeRaspiosRootDir(t))
	out := filepath.Join(t.TempDir(), "cluster.img")
	o := Options{Cluster: "lab", User: "pi", AuthorizedKeys: []byte(newSSHKey(t, "me@ws") + "\n"), AgentDir: makeAgentDir(t)}
	if _, err := Build(context.Background(), BuildOptions{Options: o, Base: base, Out: out}); err != nil {
		t.Fatal(err)
	}
	checkRaspiosFirstboot(t, imgView(out))
	fsck(t, out)
}

// A Desktop base keeps its first-run wizard on the screen; rpi-image says
// so rather than pretend the node comes up headless.
func TestRaspiosDesktopWarns(t *testing.T) {
	root := makeRaspiosRootDir(t)
	writeFile(t, root+piwizAutostart, "[Desktop Entry]\nExec=piwiz\n", 0o644)
	r, err := customizeDir(t, root, Options{User: "pi", AuthorizedKeys: []byte(newSSHKey(t, "me@ws") + "\n"), AgentDir: makeAgentDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "Desktop image") || !strings.Contains(r.Warnings[0], "Lite") {
		t.Errorf("warnings %q, want one about the Desktop image's wizard", r.Warnings)
	}
}

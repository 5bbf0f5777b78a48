package image

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// requireTools skips the test when a tool it needs is not installed.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian: e2fsprogs, mtools, dosfstools, fdisk, xz-utils)", tool)
		}
	}
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out.String(), errb.String())
	}
	return out.String()
}

// makeELF returns a minimal valid ELF executable header for machine (with
// an .ARM.attributes section when attrs is not nil), padded with marker so
// fake binaries can be told apart.
func makeELF(machine elf.Machine, attrs []byte, marker string) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	if machine != elf.EM_ARM {
		hdr := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(machine), Version: 1, Ehsize: 64}
		copy(hdr.Ident[:], elf.ELFMAG)
		hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
		binary.Write(&b, le, hdr)
		b.WriteString(marker)
		return b.Bytes()
	}
	// ELF32 with sections: null, .ARM.attributes, .shstrtab.
	shstr := []byte("\x00.ARM.attributes\x00.shstrtab\x00")
	dataOff := uint32(52)
	strOff := dataOff + uint32(len(attrs))
	shOff := strOff + uint32(len(shstr))
	hdr := elf.Header32{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_ARM), Version: 1, Ehsize: 52, Flags: 0x5000400}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS], hdr.Ident[elf.EI_DATA], hdr.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS32), byte(elf.ELFDATA2LSB), 1
	if attrs != nil {
		hdr.Shoff, hdr.Shentsize, hdr.Shnum, hdr.Shstrndx = shOff, 40, 3, 2
	}
	binary.Write(&b, le, hdr)
	if attrs != nil {
		b.Write(attrs)
		b.Write(shstr)
		binary.Write(&b, le, elf.Section32{})
		binary.Write(&b, le, elf.Section32{Name: 1, Type: 0x70000003, Off: dataOff, Size: uint32(len(attrs)), Addralign: 1})
		binary.Write(&b, le, elf.Section32{Name: 17, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint32(len(shstr)), Addralign: 1})
	}
	b.WriteString(marker)
	return b.Bytes()
}

// armAttributes builds an .ARM.attributes section with Tag_CPU_name and
// Tag_CPU_arch, as GCC writes them.
func armAttributes(cpuName string, cpuArch byte) []byte {
	var file bytes.Buffer
	file.WriteByte(5) // Tag_CPU_name
	file.WriteString(cpuName + "\x00")
	file.Write([]byte{6, cpuArch}) // Tag_CPU_arch
	file.Write([]byte{8, 1})       // Tag_ARM_ISA_use
	var sub bytes.Buffer
	sub.WriteString("aeabi\x00")
	sub.WriteByte(1) // Tag_File
	binary.Write(&sub, binary.LittleEndian, uint32(5+file.Len()))
	sub.Write(file.Bytes())
	var out bytes.Buffer
	out.WriteByte('A')
	binary.Write(&out, binary.LittleEndian, uint32(4+sub.Len()))
	out.Write(sub.Bytes())
	return out.Bytes()
}

func newSSHKey(t *testing.T, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " " + comment
}

func writeFile(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

// makeRootDir builds a small Debian-like root filesystem: merged /usr
// (/bin -> usr/bin), /bin/sh -> dash an ELF of machine, accounts, a hostname
// and machine-id from a "previous life", SSH host keys, an sshd unit.
func makeRootDir(t *testing.T, machine elf.Machine, attrs []byte) string {
	t.Helper()
	root := t.TempDir()
	writeFile(t, root+"/usr/bin/dash", string(makeELF(machine, attrs, "dash")), 0o755)
	writeFile(t, root+"/usr/bin/bash", "fake bash", 0o755)
	writeFile(t, root+"/usr/bin/sudo", "fake sudo", 0o755)
	for _, l := range [][2]string{{"usr/bin", "bin"}, {"usr/lib", "lib"}, {"usr/sbin", "sbin"}, {"dash", "usr/bin/sh"}} {
		if err := os.Symlink(l[0], filepath.Join(root, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, root+"/etc/passwd", "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n", 0o644)
	writeFile(t, root+"/etc/group", "root:x:0:\nadm:x:4:\nshadow:x:42:\nsudo:x:27:\nvideo:x:44:\nusers:x:100:\n", 0o644)
	writeFile(t, root+"/etc/shadow", "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nsshd:!:19000::::::\n", 0o640)
	writeFile(t, root+"/etc/gshadow", "root:*::\nadm:*::\nshadow:*::\nsudo:*::\nvideo:*::\nusers:*::\n", 0o640)
	writeFile(t, root+"/etc/hostname", "oldnode\n", 0o644)
	writeFile(t, root+"/etc/hosts", "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost\n127.0.1.1\toldnode\n", 0o644)
	writeFile(t, root+"/etc/machine-id", "0123456789abcdef0123456789abcdef\n", 0o444)
	writeFile(t, root+"/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n", 0o644)
	writeFile(t, root+"/etc/ssh/ssh_host_ed25519_key", "old private host key", 0o600)
	writeFile(t, root+"/etc/ssh/ssh_host_ed25519_key.pub", "old public host key", 0o644)
	writeFile(t, root+"/etc/skel/.bashrc", "# bashrc\n", 0o644)
	writeFile(t, root+"/usr/lib/systemd/system/ssh.service", "[Service]\nExecStart=/usr/sbin/sshd -D\n", 0o644)
	writeFile(t, root+"/var/lib/rpi-cluster/firstboot.done", "2015-01-01", 0o644)
	writeFile(t, root+"/var/lib/rpi-agent/node.key", "the booted card's own node key", 0o600)
	if os.Geteuid() == 0 {
		for _, f := range []string{"/etc/shadow", "/etc/gshadow"} {
			if err := os.Chown(root+f, 0, 42); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(root+"/etc/NetworkManager/system-connections", 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// customizeDir runs Customize on the root filesystem in directory root, as
// `rpi-image rootfs` does.
func customizeDir(t *testing.T, root string, o Options) (*Report, error) {
	t.Helper()
	fsys, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	return Customize(fsys, nil, o)
}

// makeAgentDir holds fake agent builds for every architecture.
func makeAgentDir(t *testing.T) string {
	dir := t.TempDir()
	for arch, m := range map[string]elf.Machine{ArchARM64: elf.EM_AARCH64, ArchARMv7: elf.EM_ARM, ArchARMv6: elf.EM_ARM, ArchAMD64: elf.EM_X86_64} {
		writeFile(t, filepath.Join(dir, "linux-"+arch, "rpi-agent"), string(makeELF(m, nil, "agent-"+arch)), 0o755)
	}
	return dir
}

// Synthetic image geometry: MBR, 40 MiB FAT32 boot, 40 MiB ext4 root.
const (
	bootStart = 2048 // sectors
	bootSecs  = 40 << 11
	rootStart = bootStart + bootSecs
	rootSecs  = 40 << 11
	rootOff   = rootStart * 512
	bootOff   = bootStart * 512
)

// makeImage builds a Raspberry Pi OS-like disk image from root with the
// system's own tools: sfdisk for the MBR, mkfs.vfat and mkfs.ext4 -d at
// the partitions' offsets, mcopy for the boot files.
func makeImage(t *testing.T, root string) string {
	t.Helper()
	requireTools(t, "sfdisk", "mkfs.vfat", "mkfs.ext4", "debugfs", "mcopy")
	img := filepath.Join(t.TempDir(), "raspios.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate((rootStart + rootSecs) * 512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, fmt.Sprintf("label: dos\nstart=%d, size=%d, type=c\nstart=%d, size=%d, type=83\n", bootStart, bootSecs, rootStart, rootSecs), "sfdisk", "-q", img)
	run(t, "", "mkfs.vfat", "-F", "32", "-n", "bootfs", "--offset", strconv.Itoa(bootStart), img, strconv.Itoa(bootSecs/2))
	run(t, "", "mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", root, "-E", "offset="+strconv.Itoa(rootOff), img, strconv.Itoa(rootSecs/2)+"k")
	boot := t.TempDir()
	writeFile(t, boot+"/cmdline.txt", "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 fsck.repair=yes rootwait\n", 0o644)
	writeFile(t, boot+"/config.txt", "arm_64bit=1\n", 0o644)
	run(t, "", "mcopy", "-i", fmt.Sprintf("%s@@%d", img, bootOff), boot+"/cmdline.txt", boot+"/config.txt", "::/")
	return img
}

// debugfsStat reads type, octal mode and owner of path in the image's root
// partition, independently of the code under test.
type statResult struct {
	Type     string
	Mode     string
	UID, GID int
	Link     string
}

var (
	reType  = regexp.MustCompile(`Type: (\w+)`)
	reMode  = regexp.MustCompile(`Mode:\s+(\d+)`)
	reOwner = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	reLink  = regexp.MustCompile(`Fast link dest: "(.*)"`)
)

func debugfsStat(t *testing.T, img, path string) (statResult, bool) {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "stat "+path, fmt.Sprintf("%s?offset=%d", img, rootOff)).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs stat %s: %v\n%s", path, err, out)
	}
	s := string(out)
	if strings.Contains(s, "File not found") {
		return statResult{}, false
	}
	var r statResult
	r.Type = reType.FindStringSubmatch(s)[1]
	r.Mode = reMode.FindStringSubmatch(s)[1]
	o := reOwner.FindStringSubmatch(s)
	r.UID, _ = strconv.Atoi(o[1])
	r.GID, _ = strconv.Atoi(o[2])
	if l := reLink.FindStringSubmatch(s); l != nil {
		r.Link = l[1]
	}
	return r, true
}

func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, fmt.Sprintf("%s?offset=%d", img, rootOff)).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func mtype(t *testing.T, img, name string) (string, bool) {
	t.Helper()
	cmd := exec.Command("mtype", "-i", fmt.Sprintf("%s@@%d", img, bootOff), "::/"+name)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.Output()
	if err != nil {
		return "", false
	}
	return string(out), true
}

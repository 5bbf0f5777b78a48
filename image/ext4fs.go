package image

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Ext4FS is an ext4 filesystem inside an image file (at a byte offset, e.g.
// a partition), read and written with e2fsprogs' debugfs: no mount, no root.
//
// Writes are queued as debugfs commands and run in one batch before the
// next read and on Close, so a customisation costs a handful of debugfs
// runs. Errors debugfs reports on stderr (it exits 0 regardless) fail the
// batch.
type Ext4FS struct {
	image  string
	dev    string // debugfs device: "image?offset=N"
	tmp    string // staged file contents
	staged int
	queue  []string
	dirs   map[string]bool // directories known to exist
	res    resolver
	closed bool
}

var _ FS = (*Ext4FS)(nil)

// OpenExt4 opens the ext4 filesystem that starts offset bytes into the file
// image. It needs debugfs (Debian: e2fsprogs).
func OpenExt4(image string, offset int64) (*Ext4FS, error) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		return nil, errors.New("open ext4 filesystem: debugfs not found: install e2fsprogs (apt-get install e2fsprogs)")
	}
	if err := checkExt4(image, offset); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "rpi-image-ext4-")
	if err != nil {
		return nil, fmt.Errorf("open ext4 filesystem: %w", err)
	}
	e := &Ext4FS{image: image, dev: fmt.Sprintf("%s?offset=%d", image, offset), tmp: tmp, dirs: map[string]bool{"/": true}}
	e.res.lstat = e.lstat
	return e, nil
}

// checkExt4 looks for the ext2/3/4 superblock magic at offset.
func checkExt4(image string, offset int64) error {
	f, err := os.Open(image)
	if err != nil {
		return fmt.Errorf("open ext4 filesystem: %w", err)
	}
	defer f.Close()
	magic := make([]byte, 2)
	if _, err := f.ReadAt(magic, offset+1024+56); err != nil {
		return fmt.Errorf("open ext4 filesystem in %s at offset %d: %w", image, offset, err)
	}
	if magic[0] != 0x53 || magic[1] != 0xef {
		return fmt.Errorf("open ext4 filesystem in %s at offset %d: no ext2/3/4 superblock there", image, offset)
	}
	return nil
}

// debugfsBanner is the version line debugfs prints on stderr.
var debugfsBanner = regexp.MustCompile(`^debugfs \d`)

// run runs debugfs with commands (at least one); write opens the
// filesystem read-write. It returns stdout; any unexpected stderr line is an
// error.
func (e *Ext4FS) run(write bool, cmds ...string) ([]byte, error) {
	// A single command goes on the command line: with -f, debugfs echoes
	// each command on stdout, mixing it into what cat prints.
	args := []string{"-R", cmds[0], e.dev}
	if len(cmds) > 1 {
		script := filepath.Join(e.tmp, "cmds")
		if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("debugfs: %w", err)
		}
		args = []string{"-f", script, e.dev}
	}
	if write {
		args = append([]string{"-w"}, args...)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("debugfs", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("debugfs on %s: %w: %s", e.image, err, strings.TrimSpace(stderr.String()))
	}
	var problems []string
	for _, line := range strings.Split(stderr.String(), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "", debugfsBanner.MatchString(line):
		case strings.HasPrefix(line, "rm: File not found by ext2_lookup"):
			// Remove of a file that does not exist: nothing to do.
		default:
			problems = append(problems, line)
		}
	}
	if len(problems) > 0 {
		return stdout.Bytes(), &debugfsError{image: e.image, lines: problems}
	}
	return stdout.Bytes(), nil
}

type debugfsError struct {
	image string
	lines []string
}

func (d *debugfsError) Error() string {
	return fmt.Sprintf("debugfs on %s: %s", d.image, strings.Join(d.lines, "; "))
}

func (d *debugfsError) notFound() bool {
	for _, l := range d.lines {
		if !strings.Contains(l, "File not found by ext2_lookup") {
			return false
		}
	}
	return true
}

// flush runs the queued writes.
func (e *Ext4FS) flush() error {
	if len(e.queue) == 0 {
		return nil
	}
	cmds := e.queue
	e.queue = nil
	if _, err := e.run(true, cmds...); err != nil {
		return fmt.Errorf("write ext4 filesystem: %w", err)
	}
	return nil
}

// read runs a read-only command after flushing pending writes. A "not
// found" answer becomes fs.ErrNotExist.
func (e *Ext4FS) read(cmd string) ([]byte, error) {
	if err := e.flush(); err != nil {
		return nil, err
	}
	out, err := e.run(false, cmd)
	var de *debugfsError
	if errors.As(err, &de) && de.notFound() {
		return nil, fs.ErrNotExist
	}
	return out, err
}

var (
	statType  = regexp.MustCompile(`Type: (\w+)`)
	statMode  = regexp.MustCompile(`Mode:\s+0?([0-7]+)`)
	statOwner = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+)`)
	statSize  = regexp.MustCompile(`Size: (\d+)`)
	statLink  = regexp.MustCompile(`Fast link dest: "(.*)"`)
)

func (e *Ext4FS) lstat(p string) (Info, error) {
	out, err := e.read("stat " + p)
	if err != nil {
		return Info{}, err
	}
	return e.parseStat(p, string(out))
}

func (e *Ext4FS) parseStat(p, out string) (Info, error) {
	t, m, o := statType.FindStringSubmatch(out), statMode.FindStringSubmatch(out), statOwner.FindStringSubmatch(out)
	if t == nil || m == nil || o == nil {
		return Info{}, fmt.Errorf("stat %s: unexpected debugfs output %q", p, out)
	}
	perm, _ := strconv.ParseUint(m[1], 8, 32)
	info := Info{Mode: fs.FileMode(perm) & fs.ModePerm}
	info.UID, _ = strconv.Atoi(o[1])
	info.GID, _ = strconv.Atoi(o[2])
	if s := statSize.FindStringSubmatch(out); s != nil {
		info.Size, _ = strconv.ParseInt(s[1], 10, 64)
	}
	switch t[1] {
	case "directory":
		info.Mode |= fs.ModeDir
	case "symlink":
		info.Mode |= fs.ModeSymlink
		if l := statLink.FindStringSubmatch(out); l != nil {
			info.Target = l[1]
		} else {
			// A slow link keeps its target in a data block.
			data, err := e.read("cat " + p)
			if err != nil {
				return Info{}, fmt.Errorf("read link %s: %w", p, err)
			}
			info.Target = string(bytes.TrimRight(data, "\x00"))
		}
	case "regular":
	default:
		info.Mode |= fs.ModeIrregular
	}
	return info, nil
}

func (e *Ext4FS) resolve(name string, followLast bool) (string, error) {
	clean, err := cleanName(name)
	if err != nil {
		return "", err
	}
	return e.res.resolve(clean, followLast)
}

// Lstat implements FS.
func (e *Ext4FS) Lstat(name string) (Info, error) {
	p, err := e.resolve(name, false)
	if err != nil {
		return Info{}, err
	}
	info, err := e.lstat(p)
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", name, err)
	}
	return info, nil
}

// ReadFile implements FS.
func (e *Ext4FS) ReadFile(name string) ([]byte, error) {
	p, err := e.resolve(name, true)
	if err != nil {
		return nil, err
	}
	info, err := e.lstat(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if !info.Mode.IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file", name)
	}
	data, err := e.read("cat " + p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) != info.Size {
		return nil, fmt.Errorf("read %s: got %d bytes, the inode says %d", name, len(data), info.Size)
	}
	return data, nil
}

var lsLine = regexp.MustCompile(`^/\d+/[0-7]+/\d+/\d+/([^/]*)/`)

// ReadDir implements FS.
func (e *Ext4FS) ReadDir(name string) ([]string, error) {
	p, err := e.resolve(name, true)
	if err != nil {
		return nil, err
	}
	out, err := e.read("ls -p " + p)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", name, err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		m := lsLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || m[1] == "." || m[1] == ".." || m[1] == "" {
			continue
		}
		names = append(names, m[1])
	}
	sort.Strings(names)
	return names, nil
}

// ensureDir makes sure the resolved directory p exists, creating it (and
// its parents) root-owned, 0755.
func (e *Ext4FS) ensureDir(p string) error {
	if e.dirs[p] {
		return nil
	}
	info, err := e.lstat(p)
	switch {
	case err == nil && info.Mode.IsDir():
	case err == nil:
		return fmt.Errorf("mkdir %s: exists and is not a directory", p)
	case errors.Is(err, fs.ErrNotExist):
		if err := e.ensureDir(path.Dir(p)); err != nil {
			return err
		}
		e.queue = append(e.queue, "mkdir "+p)
	default:
		return err
	}
	e.dirs[p] = true
	return nil
}

func (e *Ext4FS) setOwner(p string, typ uint32, perm fs.FileMode, uid, gid int) {
	e.queue = append(e.queue,
		fmt.Sprintf("set_inode_field %s mode 0%o", p, typ|uint32(perm.Perm())),
		fmt.Sprintf("set_inode_field %s uid %d", p, uid),
		fmt.Sprintf("set_inode_field %s gid %d", p, gid),
	)
}

// Mkdir implements FS.
func (e *Ext4FS) Mkdir(name string, perm fs.FileMode, uid, gid int) error {
	p, err := e.resolve(name, true)
	if err != nil {
		return err
	}
	if err := e.ensureDir(p); err != nil {
		return err
	}
	e.setOwner(p, 0o040000, perm, uid, gid)
	return nil
}

// WriteFile implements FS.
func (e *Ext4FS) WriteFile(name string, data []byte, perm fs.FileMode, uid, gid int) error {
	p, err := e.resolve(name, false)
	if err != nil {
		return err
	}
	if err := e.ensureDir(path.Dir(p)); err != nil {
		return err
	}
	e.staged++
	local := filepath.Join(e.tmp, fmt.Sprintf("f%d", e.staged))
	if err := os.WriteFile(local, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	e.queue = append(e.queue,
		"rm "+p,
		"cd "+path.Dir(p),
		fmt.Sprintf("write %s %s", local, path.Base(p)),
		"cd /",
	)
	e.setOwner(p, 0o100000, perm, uid, gid)
	return nil
}

// Symlink implements FS.
func (e *Ext4FS) Symlink(target, name string) error {
	p, err := e.resolve(name, false)
	if err != nil {
		return err
	}
	if _, err := cleanName("/" + target); err != nil {
		return fmt.Errorf("symlink %s: target %q: %w", name, target, err)
	}
	if err := e.ensureDir(path.Dir(p)); err != nil {
		return err
	}
	e.queue = append(e.queue, "rm "+p, fmt.Sprintf("symlink %s %s", p, target))
	return nil
}

// Remove implements FS.
func (e *Ext4FS) Remove(name string) error {
	p, err := e.resolve(name, false)
	if err != nil {
		return err
	}
	e.queue = append(e.queue, "rm "+p)
	return nil
}

// Close implements FS: it runs the pending writes and removes staged files.
// It is safe to call more than once.
func (e *Ext4FS) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	err := e.flush()
	if rerr := os.RemoveAll(e.tmp); err == nil && rerr != nil {
		err = fmt.Errorf("close ext4 filesystem: %w", rerr)
	}
	return err
}

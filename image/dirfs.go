package image

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
)

// DirFS is a root filesystem in a host directory. Every operation is
// confined to the directory through os.Root; symbolic links are resolved
// inside it.
//
// Only root can give files away, so DirFS chowns when Chown is true (the
// default when running as root) and always records what it wrote in a
// manifest (path, mode, owner) that an image writer can apply later.
type DirFS struct {
	// Chown makes DirFS set file owners. Default: running as root.
	Chown bool

	dir      string
	root     *os.Root
	res      resolver
	manifest map[string]ManifestEntry
}

// ManifestEntry is one file DirFS wrote, with the mode and owner it should
// have in the image.
type ManifestEntry struct {
	Path string
	Mode fs.FileMode
	UID  int
	GID  int
	// Link is the target of a symbolic link.
	Link string
}

var _ FS = (*DirFS)(nil)

// OpenDir opens the root filesystem in directory dir.
func OpenDir(dir string) (*DirFS, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open root filesystem %s: %w", dir, err)
	}
	d := &DirFS{Chown: os.Geteuid() == 0, dir: dir, root: root, manifest: make(map[string]ManifestEntry)}
	d.res.lstat = d.lstat
	return d, nil
}

// rel turns a resolved absolute name into a path relative to the root.
func rel(p string) string {
	if p == "/" {
		return "."
	}
	return strings.TrimPrefix(p, "/")
}

func (d *DirFS) resolve(name string, followLast bool) (string, error) {
	clean, err := cleanName(name)
	if err != nil {
		return "", err
	}
	return d.res.resolve(clean, followLast)
}

func (d *DirFS) lstat(p string) (Info, error) {
	fi, err := d.root.Lstat(rel(p))
	if err != nil {
		return Info{}, err
	}
	info := Info{Mode: fi.Mode(), Size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		info.UID, info.GID = int(st.Uid), int(st.Gid)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		if info.Target, err = d.root.Readlink(rel(p)); err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

// Lstat implements FS.
func (d *DirFS) Lstat(name string) (Info, error) {
	p, err := d.resolve(name, false)
	if err != nil {
		return Info{}, err
	}
	info, err := d.lstat(p)
	if err != nil {
		return Info{}, fmt.Errorf("stat %s: %w", name, err)
	}
	return info, nil
}

// ReadFile implements FS.
func (d *DirFS) ReadFile(name string) ([]byte, error) {
	p, err := d.resolve(name, true)
	if err != nil {
		return nil, err
	}
	data, err := d.root.ReadFile(rel(p))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return data, nil
}

// ReadDir implements FS.
func (d *DirFS) ReadDir(name string) ([]string, error) {
	p, err := d.resolve(name, true)
	if err != nil {
		return nil, err
	}
	f, err := d.root.Open(rel(p))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", name, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", name, err)
	}
	sort.Strings(names)
	return names, nil
}

// mkdirParents creates the missing directories above resolved path p.
func (d *DirFS) mkdirParents(p string) error {
	dir := path.Dir(p)
	if dir == "/" {
		return nil
	}
	if _, err := d.lstat(dir); err == nil {
		return nil
	}
	if err := d.mkdirParents(dir); err != nil {
		return err
	}
	return d.mkdir(dir, 0o755, 0, 0)
}

func (d *DirFS) mkdir(p string, perm fs.FileMode, uid, gid int) error {
	err := d.root.Mkdir(rel(p), perm)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("mkdir %s: %w", p, err)
	}
	return d.own(p, fs.ModeDir|perm, uid, gid, "")
}

// own sets mode and owner of resolved path p and records it.
func (d *DirFS) own(p string, mode fs.FileMode, uid, gid int, link string) error {
	if link == "" {
		if err := d.root.Chmod(rel(p), mode.Perm()); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	if d.Chown {
		if err := d.root.Lchown(rel(p), uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	d.manifest[p] = ManifestEntry{Path: p, Mode: mode, UID: uid, GID: gid, Link: link}
	return nil
}

// Mkdir implements FS.
func (d *DirFS) Mkdir(name string, perm fs.FileMode, uid, gid int) error {
	p, err := d.resolve(name, true)
	if err != nil {
		return err
	}
	if err := d.mkdirParents(p); err != nil {
		return err
	}
	return d.mkdir(p, perm, uid, gid)
}

// WriteFile implements FS. The file is written to a temporary name and
// renamed over name, so a crash never leaves it half written.
func (d *DirFS) WriteFile(name string, data []byte, perm fs.FileMode, uid, gid int) error {
	p, err := d.resolve(name, false)
	if err != nil {
		return err
	}
	if err := d.mkdirParents(p); err != nil {
		return err
	}
	tmp := path.Join(path.Dir(p), "."+path.Base(p)+".rpi-image-tmp")
	f, err := d.root.OpenFile(rel(tmp), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.own(tmp, perm, uid, gid, "")
		delete(d.manifest, tmp)
	}
	if err == nil {
		err = d.root.Rename(rel(tmp), rel(p))
	}
	if err != nil {
		_ = d.root.Remove(rel(tmp))
		return fmt.Errorf("write %s: %w", name, err)
	}
	d.manifest[p] = ManifestEntry{Path: p, Mode: perm, UID: uid, GID: gid}
	return nil
}

// Symlink implements FS.
func (d *DirFS) Symlink(target, name string) error {
	p, err := d.resolve(name, false)
	if err != nil {
		return err
	}
	if err := d.mkdirParents(p); err != nil {
		return err
	}
	if err := d.root.Remove(rel(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("symlink %s: %w", name, err)
	}
	if err := d.root.Symlink(target, rel(p)); err != nil {
		return fmt.Errorf("symlink %s: %w", name, err)
	}
	return d.own(p, fs.ModeSymlink|0o777, 0, 0, target)
}

// Remove implements FS.
func (d *DirFS) Remove(name string) error {
	p, err := d.resolve(name, false)
	if err != nil {
		return err
	}
	if err := d.root.Remove(rel(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	delete(d.manifest, p)
	return nil
}

// Manifest returns what DirFS wrote, sorted by path.
func (d *DirFS) Manifest() []ManifestEntry {
	out := make([]ManifestEntry, 0, len(d.manifest))
	for _, e := range d.manifest {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// WriteManifest writes the manifest as text, one file per line:
// "MODE UID GID PATH" with MODE in octal including the type bits
// (0100644 a file, 040755 a directory, 0120777 a link, followed by
// " -> TARGET").
func (d *DirFS) WriteManifest(w io.Writer) error {
	for _, e := range d.Manifest() {
		line := fmt.Sprintf("%07o %d %d %s", unixMode(e.Mode), e.UID, e.GID, e.Path)
		if e.Link != "" {
			line += " -> " + e.Link
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return fmt.Errorf("write manifest: %w", err)
		}
	}
	return nil
}

// unixMode converts a Go file mode to the st_mode bits of a regular file,
// directory or symbolic link.
func unixMode(m fs.FileMode) uint32 {
	bits := uint32(m.Perm())
	switch {
	case m&fs.ModeDir != 0:
		bits |= syscall.S_IFDIR
	case m&fs.ModeSymlink != 0:
		bits |= syscall.S_IFLNK
	default:
		bits |= syscall.S_IFREG
	}
	return bits
}

// Close implements FS.
func (d *DirFS) Close() error {
	return d.root.Close()
}

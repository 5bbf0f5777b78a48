// Package image customises Raspberry Pi root filesystems and SD-card images
// for rpi-cluster: the agent and its configuration, the login user with SSH
// keys only, sshd hardening and a first-boot step that gives every clone its
// own identity.
//
// One code path does the work (Customize) over an abstract FS, with two
// implementations: DirFS for a root filesystem in a directory (the virtual
// cluster's node image, `rpi-image rootfs`) and Ext4FS for the ext4 root
// partition inside an image file, written through debugfs without mounting
// (`rpi-image build`). The FAT boot partition is written with mtools.
package image

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// FS is a root filesystem being customised. Names are absolute slash
// paths inside that root ("/etc/passwd"); symbolic links, absolute ones
// included, resolve inside the root, never on the host.
//
// Implementations are not safe for concurrent use.
type FS interface {
	// ReadFile returns the content of name, following symbolic links.
	// A missing file is an error wrapping fs.ErrNotExist.
	ReadFile(name string) ([]byte, error)
	// WriteFile creates or replaces name with data, mode perm, owned by
	// uid:gid. Missing parent directories are created root-owned, 0755.
	WriteFile(name string, data []byte, perm fs.FileMode, uid, gid int) error
	// Mkdir makes sure name is a directory with mode perm owned by uid:gid,
	// creating missing parents root-owned, 0755.
	Mkdir(name string, perm fs.FileMode, uid, gid int) error
	// Symlink creates or replaces name as a symbolic link to target.
	Symlink(target, name string) error
	// Remove removes the file name; a missing file is not an error.
	Remove(name string) error
	// Lstat describes name without following a final symbolic link.
	Lstat(name string) (Info, error)
	// ReadDir lists the names in directory name.
	ReadDir(name string) ([]string, error)
	// Close writes anything pending and releases resources.
	Close() error
}

// Info describes one file of an FS.
type Info struct {
	// Mode holds the type bits (fs.ModeDir, fs.ModeSymlink) and permissions.
	Mode fs.FileMode
	UID  int
	GID  int
	Size int64
	// Target is the destination of a symbolic link.
	Target string
}

// maxLinkDepth bounds symbolic link resolution, as the kernel's ELOOP does.
const maxLinkDepth = 40

// resolver resolves symbolic links inside a root through an lstat function,
// treating absolute link targets as relative to the root. It caches resolved
// directories: customisation never replaces a directory with a link.
type resolver struct {
	lstat func(name string) (Info, error)
	dirs  map[string]string
}

// resolve returns name with every symbolic link in its directories
// resolved, and the final one too when followLast. Components that do not
// exist are kept as they are, so the result can name a file to create.
func (r *resolver) resolve(name string, followLast bool) (string, error) {
	return r.resolveDepth(name, followLast, 0)
}

func (r *resolver) resolveDepth(name string, followLast bool, depth int) (string, error) {
	name = path.Clean("/" + name)
	if name == "/" {
		return "/", nil
	}
	dir, base := path.Split(name)
	rdir, err := r.resolveDir(path.Clean(dir), depth)
	if err != nil {
		return "", err
	}
	p := path.Join(rdir, base)
	if !followLast {
		return p, nil
	}
	return r.follow(p, depth)
}

func (r *resolver) resolveDir(dir string, depth int) (string, error) {
	if dir == "/" {
		return "/", nil
	}
	if res, ok := r.dirs[dir]; ok {
		return res, nil
	}
	parent, base := path.Split(dir)
	rparent, err := r.resolveDir(path.Clean(parent), depth)
	if err != nil {
		return "", err
	}
	res, err := r.follow(path.Join(rparent, base), depth)
	if err != nil {
		return "", err
	}
	if r.dirs == nil {
		r.dirs = make(map[string]string)
	}
	r.dirs[dir] = res
	return res, nil
}

// follow follows p while it is a symbolic link. p's directories are resolved.
func (r *resolver) follow(p string, depth int) (string, error) {
	for {
		depth++
		if depth > maxLinkDepth {
			return "", fmt.Errorf("resolve %s: too many levels of symbolic links", p)
		}
		info, err := r.lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return p, nil
		}
		if err != nil {
			return "", err
		}
		if info.Mode&fs.ModeSymlink == 0 {
			return p, nil
		}
		target := info.Target
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p, err = r.resolveDepth(target, false, depth)
		if err != nil {
			return "", err
		}
	}
}

// cleanName validates and cleans a name given to an FS method.
func cleanName(name string) (string, error) {
	if !strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("path %q: must be absolute inside the root filesystem", name)
	}
	if strings.ContainsAny(name, "\x00\n\r\t \"'\\") {
		return "", fmt.Errorf("path %q: whitespace, quotes and backslashes are not supported", name)
	}
	return path.Clean(name), nil
}

// exists reports whether name exists in fsys (without following a final link).
func exists(fsys FS, name string) (bool, error) {
	_, err := fsys.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// rewrite replaces the content of an existing file, keeping its mode and
// owner; a missing file is created with the given defaults.
func rewrite(fsys FS, name string, data []byte, perm fs.FileMode, uid, gid int) error {
	info, err := fsys.Lstat(name)
	switch {
	case err == nil && info.Mode.IsRegular():
		perm, uid, gid = info.Mode.Perm(), info.UID, info.GID
	case err == nil:
		return fmt.Errorf("write %s: exists and is not a regular file", name)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return fsys.WriteFile(name, data, perm, uid, gid)
}

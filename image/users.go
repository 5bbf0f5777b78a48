package image

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// colonDB is a colon-separated account database (/etc/passwd, /etc/group,
// /etc/shadow, /etc/gshadow), edited line by line so that everything not
// touched is written back exactly as it was read.
type colonDB struct {
	name  string
	lines []string
	found bool // the file existed
}

func readDB(fsys FS, name string) (*colonDB, error) {
	data, err := fsys.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return &colonDB{name: name}, nil
	}
	if err != nil {
		return nil, err
	}
	text := strings.TrimSuffix(string(data), "\n")
	db := &colonDB{name: name, found: true}
	if text != "" {
		db.lines = strings.Split(text, "\n")
	}
	return db, nil
}

// find returns the fields of the entry named name and its line index.
func (db *colonDB) find(name string) ([]string, int) {
	for i, l := range db.lines {
		f := strings.Split(l, ":")
		if f[0] == name {
			return f, i
		}
	}
	return nil, -1
}

// ids returns the numbers in field i (uid in passwd, gid in group).
func (db *colonDB) ids(i int) map[int]bool {
	out := make(map[int]bool)
	for _, l := range db.lines {
		f := strings.Split(l, ":")
		if len(f) > i {
			if n, err := strconv.Atoi(f[i]); err == nil {
				out[n] = true
			}
		}
	}
	return out
}

func (db *colonDB) set(i int, fields []string) { db.lines[i] = strings.Join(fields, ":") }
func (db *colonDB) add(fields ...string)       { db.lines = append(db.lines, strings.Join(fields, ":")) }

// save writes the database back, keeping the file's mode and owner.
func (db *colonDB) save(fsys FS, perm fs.FileMode, gid int) error {
	return rewrite(fsys, db.name, []byte(strings.Join(db.lines, "\n")+"\n"), perm, 0, gid)
}

// accounts holds the four account databases of a root filesystem.
type accounts struct {
	passwd, group, shadow, gshadow *colonDB
}

func readAccounts(fsys FS) (*accounts, error) {
	a := &accounts{}
	var err error
	for _, x := range []struct {
		db   **colonDB
		name string
	}{{&a.passwd, "/etc/passwd"}, {&a.group, "/etc/group"}, {&a.shadow, "/etc/shadow"}, {&a.gshadow, "/etc/gshadow"}} {
		if *x.db, err = readDB(fsys, x.name); err != nil {
			return nil, fmt.Errorf("read accounts: %w", err)
		}
	}
	if !a.passwd.found || !a.group.found {
		return nil, errors.New("read accounts: /etc/passwd or /etc/group missing: is this a Linux root filesystem?")
	}
	return a, nil
}

func (a *accounts) save(fsys FS) error {
	shadowGID := 0
	if f, _ := a.group.find("shadow"); len(f) > 2 {
		shadowGID, _ = strconv.Atoi(f[2])
	}
	if err := a.passwd.save(fsys, 0o644, 0); err != nil {
		return err
	}
	if err := a.group.save(fsys, 0o644, 0); err != nil {
		return err
	}
	if err := a.shadow.save(fsys, 0o640, shadowGID); err != nil {
		return err
	}
	if a.gshadow.found {
		return a.gshadow.save(fsys, 0o640, shadowGID)
	}
	return nil
}

// Account is a user of the root filesystem.
type Account struct {
	Name    string
	UID     int
	GID     int
	Home    string
	Created bool
}

// userNameRE is what Debian's adduser accepts by default.
var userNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// ValidateUserName checks a login user name.
func ValidateUserName(name string) error {
	if !userNameRE.MatchString(name) {
		return fmt.Errorf("user %q: use lowercase letters, digits, '_' and '-', starting with a letter or '_', at most 32", name)
	}
	if name == "root" || name == agentUser {
		return fmt.Errorf("user %q: reserved; pick the name you log in with (default pi)", name)
	}
	return nil
}

// daysSinceEpoch is the shadow "last change" field for today. (0 would
// force a password change at the next login, which breaks key-only login.)
func daysSinceEpoch() string {
	return strconv.FormatInt(time.Now().Unix()/86400, 10)
}

// freeID returns the first id in [lo, hi] (or [hi, lo] walking down) that
// is free in every map.
func freeID(lo, hi int, used ...map[int]bool) (int, error) {
	step := 1
	if lo > hi {
		step = -1
	}
	for id := lo; id != hi+step; id += step {
		if !slices.ContainsFunc(used, func(m map[int]bool) bool { return m[id] }) {
			return id, nil
		}
	}
	return 0, fmt.Errorf("no free id between %d and %d", lo, hi)
}

// ensureGroup returns the gid of group name, creating it with a free gid
// (preferring want) when missing.
func (a *accounts) ensureGroup(name string, want int, lo, hi int) (int, error) {
	if f, _ := a.group.find(name); f != nil {
		if len(f) < 3 {
			return 0, fmt.Errorf("/etc/group: malformed entry for %s", name)
		}
		return strconv.Atoi(f[2])
	}
	gid := want
	if gid < 0 || a.group.ids(2)[gid] {
		var err error
		if gid, err = freeID(lo, hi, a.group.ids(2)); err != nil {
			return 0, fmt.Errorf("create group %s: %w", name, err)
		}
	}
	a.group.add(name, "x", strconv.Itoa(gid), "")
	if a.gshadow.found {
		if f, _ := a.gshadow.find(name); f == nil {
			a.gshadow.add(name, "!", "", "")
		}
	}
	return gid, nil
}

// addMember adds user to the member list of group, if the group exists.
func (a *accounts) addMember(group, user string) {
	for _, db := range []*colonDB{a.group, a.gshadow} {
		f, i := db.find(group)
		if len(f) < 4 {
			continue
		}
		members := strings.Split(f[3], ",")
		if f[3] == "" {
			members = nil
		}
		if !slices.Contains(members, user) {
			f[3] = strings.Join(append(members, user), ",")
			db.set(i, f)
		}
	}
}

// lockPassword sets the shadow password of name to "!" (locked: no
// password works, key login still does), adding the shadow entry if needed.
func (a *accounts) lockPassword(name string, system bool) {
	f, i := a.shadow.find(name)
	if f != nil && len(f) >= 2 {
		f[1] = "!"
		a.shadow.set(i, f)
		return
	}
	if system {
		a.shadow.add(name, "!", daysSinceEpoch(), "", "", "", "", "", "")
	} else {
		a.shadow.add(name, "!", daysSinceEpoch(), "0", "99999", "7", "", "", "")
	}
}

// ensureUser returns user name, creating it when missing: a system user
// (uid below 1000, picked downwards from 999 as systemd-sysusers does) or a
// login user (uid from 1000 up, with a group of the same name).
func (a *accounts) ensureUser(name, gecos, home, shell string, system bool) (Account, error) {
	if f, _ := a.passwd.find(name); f != nil {
		if len(f) < 7 {
			return Account{}, fmt.Errorf("/etc/passwd: malformed entry for %s", name)
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err := errors.Join(err1, err2); err != nil {
			return Account{}, fmt.Errorf("/etc/passwd: entry for %s: %w", name, err)
		}
		a.lockPassword(name, system)
		return Account{Name: name, UID: uid, GID: gid, Home: f[5]}, nil
	}
	lo, hi := 1000, 59999
	if system {
		lo, hi = 999, 100
	}
	uid, err := freeID(lo, hi, a.passwd.ids(2), a.group.ids(2))
	if err != nil {
		return Account{}, fmt.Errorf("create user %s: %w", name, err)
	}
	gid, err := a.ensureGroup(name, uid, lo, hi)
	if err != nil {
		return Account{}, err
	}
	a.passwd.add(name, "x", strconv.Itoa(uid), strconv.Itoa(gid), gecos, home, shell)
	a.lockPassword(name, system)
	return Account{Name: name, UID: uid, GID: gid, Home: home, Created: true}, nil
}

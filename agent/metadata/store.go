// Package metadata keeps the node's meta-data.json: the list of services the
// node runs, in the original project's format {"services": ["nginx_webserver"]}.
//
// The file is the source of truth across restarts, so it is treated with care:
// every change is written atomically (temporary file in the same directory,
// fsync, rename, fsync of the directory), a corrupt file is reported and left
// exactly as it is, and keys other tools put into the file are kept.
package metadata

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// FileName is the name of the metadata file inside the data directory.
const FileName = "meta-data.json"

// servicesKey is the original project's key; old scripts read it.
const servicesKey = "services"

// Store is the node's metadata file and its in-memory copy. It is safe for
// concurrent use; writes are serialised and the in-memory state changes only
// after the new file is durably in place.
type Store struct {
	path string

	mu       sync.Mutex
	services []string // sorted, unique
	// extra holds keys of the file other than "services", preserved verbatim
	// on rewrite so fields added by other scripts are not lost.
	extra map[string]json.RawMessage
}

// Open reads dir/meta-data.json, creating dir (mode 0755) if it is missing. A
// missing file means no services. A file that is not valid metadata is an
// error naming the file and what is wrong with it; the file is not touched.
// Duplicate service names in a hand-edited file are merged.
func Open(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open meta-data: no data directory given (set data_dir)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open meta-data: create data directory: %w", err)
	}
	s := &Store{path: filepath.Join(dir, FileName)}
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("read meta-data %s: %w", s.path, err)
	}
	services, extra, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("read meta-data %s: %w (the file was left untouched: fix it, or move it away to start with no services)", s.path, err)
	}
	s.services, s.extra = services, extra
	return s, nil
}

// parse decodes the file's content into a sorted, de-duplicated service list
// and the other top-level keys.
func parse(data []byte) ([]string, map[string]json.RawMessage, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil, errors.New("file is empty, expected a JSON object like {\"services\": []}")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, nil, fmt.Errorf("invalid JSON at byte %d: %w", syn.Offset, err)
		}
		return nil, nil, fmt.Errorf("not a JSON object like {\"services\": []}: %w", err)
	}
	if top == nil { // the file says "null"
		return nil, nil, errors.New("file holds null, expected a JSON object like {\"services\": []}")
	}
	raw, ok := top[servicesKey]
	delete(top, servicesKey)
	if len(top) == 0 {
		top = nil
	}
	if !ok {
		return nil, top, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, nil, fmt.Errorf("%q must be a list of service names: %w", servicesKey, err)
	}
	for i, name := range list {
		if err := apitypes.ValidateServiceName(name); err != nil {
			return nil, nil, fmt.Errorf("%q entry %d: %w", servicesKey, i, err)
		}
	}
	slices.Sort(list)
	return slices.Compact(list), top, nil
}

// Path is the metadata file's path.
func (s *Store) Path() string { return s.path }

// Services returns the node's services, sorted. The slice is a copy.
func (s *Store) Services() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.services)
}

// Add records service in the file. Adding a service already present changes
// nothing and reports changed false. The name is checked with
// apitypes.ValidateServiceName.
func (s *Store) Add(service string) (changed bool, err error) {
	if err := apitypes.ValidateServiceName(service); err != nil {
		return false, fmt.Errorf("add service: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearch(s.services, service)
	if found {
		return false, nil
	}
	next := slices.Insert(slices.Clone(s.services), i, service)
	if err := s.write(next); err != nil {
		return false, fmt.Errorf("add service %s: %w", service, err)
	}
	s.services = next
	return true, nil
}

// Remove deletes service from the file. Removing a service that is not
// present changes nothing and reports changed false.
func (s *Store) Remove(service string) (changed bool, err error) {
	if err := apitypes.ValidateServiceName(service); err != nil {
		return false, fmt.Errorf("remove service: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearch(s.services, service)
	if !found {
		return false, nil
	}
	next := slices.Delete(slices.Clone(s.services), i, i+1)
	if err := s.write(next); err != nil {
		return false, fmt.Errorf("remove service %s: %w", service, err)
	}
	s.services = next
	return true, nil
}

// write replaces the file with services plus the preserved keys: temporary
// file in the same directory, write, fsync, rename over the old file, fsync
// the directory. On any failure the old file is intact and the temporary file
// is removed. The caller holds s.mu.
func (s *Store) write(services []string) error {
	top := make(map[string]any, len(s.extra)+1)
	for k, v := range s.extra {
		top[k] = v
	}
	if services == nil {
		services = []string{} // "services": [], never null
	}
	top[servicesKey] = services
	data, err := json.MarshalIndent(top, "", "  ")
	if err != nil {
		return fmt.Errorf("encode meta-data: %w", err)
	}
	data = append(data, '\n')

	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, "."+FileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("write meta-data %s: %w (the agent needs write access to %s: check data_dir and its owner)", s.path, err, dir)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write meta-data %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write meta-data %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write meta-data %s: sync: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write meta-data %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("write meta-data %s: %w", s.path, err)
	}
	committed = true
	// The rename is what makes the change visible; syncing the directory
	// makes it survive a power cut. A failure here leaves the new content in
	// place and visible, so the change has happened and the in-memory state
	// must follow it; reporting it as failed would make the caller and the
	// file disagree.
	_ = syncDir(dir)
	return nil
}

// syncDir fsyncs a directory so a rename inside it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

package identity

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"sync"

	"github.com/rpi-cluster/rpi-cluster/internal/atomicfile"
)

// ErrKeyChanged is returned when a name is pinned to another key.
var ErrKeyChanged = errors.New("node key changed")

// MaxPins bounds the names a pin file holds, so a member inventing names
// cannot grow it without limit. Pins outlive membership on purpose (a
// reaped name must not be free for another key to take), so the bound is
// generous.
const MaxPins = 65536

// ErrTooManyPins is returned by Check when a new name would pass MaxPins.
var ErrTooManyPins = errors.New("too many pinned node keys")

// Pins ties node names to the key first seen for each (trust on first
// use), persisted as a JSON object {"name": "base64 key"}. Check changes
// only memory, so it is cheap enough for a gossip handler; Flush writes
// what changed. Set and Remove, the explicit re-key and forget, write at
// once. Safe for concurrent use.
type Pins struct {
	path  string
	wmu   sync.Mutex // serialises Flush, so an older snapshot never lands last
	mu    sync.Mutex
	m     map[string]string
	dirty bool
}

// OpenPins reads the pins in path; a missing file is an empty set. A
// corrupt file is an error that names it: pins are never silently reset.
// An empty path keeps the pins in memory only (Flush writes nothing).
func OpenPins(path string) (*Pins, error) {
	p := &Pins{path: path, m: map[string]string{}}
	if path == "" {
		return p, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pinned node keys %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &p.m); err != nil {
		return nil, fmt.Errorf("read pinned node keys %s: corrupt (%v): fix or remove the file; every node is then pinned again on first sight", path, err)
	}
	for name, k := range p.m {
		if _, err := ParsePublicKey(k); err != nil {
			return nil, fmt.Errorf("read pinned node keys %s: entry %q: %w", path, name, err)
		}
	}
	return p, nil
}

// Path is the file the pins live in.
func (p *Pins) Path() string { return p.path }

// Check pins name to pub if the name has no pin yet (firstSight), and
// returns an error wrapping ErrKeyChanged, with both fingerprints, if it is
// pinned to another key.
func (p *Pins) Check(name string, pub ed25519.PublicKey) (firstSight bool, err error) {
	enc := EncodePublicKey(pub)
	p.mu.Lock()
	defer p.mu.Unlock()
	have, ok := p.m[name]
	switch {
	case ok && have == enc:
		return false, nil
	case ok:
		pinned, _ := ParsePublicKey(have)
		return false, fmt.Errorf("%w for %q: pinned %s, offered %s", ErrKeyChanged, name, Fingerprint(pinned), Fingerprint(pub))
	case len(p.m) >= MaxPins:
		return false, fmt.Errorf("pin %q: %w (%d)", name, ErrTooManyPins, MaxPins)
	}
	p.m[name] = enc
	p.dirty = true
	return true, nil
}

// Lookup returns the key pinned for name.
func (p *Pins) Lookup(name string) (ed25519.PublicKey, bool) {
	p.mu.Lock()
	enc, ok := p.m[name]
	p.mu.Unlock()
	if !ok {
		return nil, false
	}
	pub, err := ParsePublicKey(enc)
	return pub, err == nil
}

// Set pins name to pub whatever it was pinned to, and saves: the explicit
// re-key after a card is reinstalled.
func (p *Pins) Set(name string, pub ed25519.PublicKey) error {
	p.mu.Lock()
	p.m[name] = EncodePublicKey(pub)
	p.dirty = true
	p.mu.Unlock()
	return p.Flush()
}

// Remove forgets name's pin, and saves.
func (p *Pins) Remove(name string) error {
	p.mu.Lock()
	if _, ok := p.m[name]; ok {
		delete(p.m, name)
		p.dirty = true
	}
	p.mu.Unlock()
	return p.Flush()
}

// Names returns the pinned names, sorted.
func (p *Pins) Names() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.m))
}

// Flush writes the pins if they changed since the last write.
func (p *Pins) Flush() error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.mu.Lock()
	if !p.dirty || p.path == "" {
		p.mu.Unlock()
		return nil
	}
	b, err := json.MarshalIndent(p.m, "", "  ")
	p.dirty = false
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode pinned node keys: %w", err)
	}
	if err := atomicfile.WriteFile(p.path, append(b, '\n'), 0o600); err != nil {
		p.mu.Lock()
		p.dirty = true
		p.mu.Unlock()
		return fmt.Errorf("save pinned node keys: %w", err)
	}
	return nil
}

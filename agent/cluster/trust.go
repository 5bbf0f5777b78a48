package cluster

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// Node identity in gossip. Each node signs what it says about itself with
// its own key (Config.Key): its record (identity.PurposeRecord), its leave
// intent (PurposeLeave) and the desired entries it writes (PurposeDesired).
// A signed message travels as the 64-byte signature followed by the exact
// JSON bytes signed; receivers verify those bytes, never a re-encoding, and
// keep and relay them as they came, so a record can be checked again by
// anyone, workstations included, however many hops it took.
//
// A record carries its signer's public key ("pk"). Peers pin a name to the
// key of the first record they apply for it (Config.Pins, trust on first
// use, persisted by the agent) and from then on refuse anything for that
// name signed by another key: the message is dropped, counted as
// key_conflict and the conflict is listed (KeyConflicts) and published as
// an EventConflict. A node whose card was reinstalled has a new key; an
// operator accepts it with Rekey, on each agent.

// KeyConflict is a name offered with another key than the one pinned for
// it: a reinstalled node (Rekey accepts it) or a member speaking for
// another.
type KeyConflict struct {
	Name string
	// Pinned is the key pinned for the name; Offered the latest other key
	// seen signing for it.
	Pinned, Offered ed25519.PublicKey
	// FirstSeen and LastSeen bound when the offered key was seen; Count is
	// how many messages it signed here.
	FirstSeen, LastSeen time.Time
	Count               uint64
}

// ErrNoKeyConflict is returned by Rekey for a name no other key is
// offered for.
var ErrNoKeyConflict = errors.New("no key conflict")

// seal signs body for purpose with k and returns signature ‖ body.
func seal(k *identity.Key, purpose string, body []byte) []byte {
	out := make([]byte, 0, identity.SignatureSize+len(body))
	out = append(out, k.Sign(purpose, body)...)
	return append(out, body...)
}

// unseal splits a sealed message into signature and body.
func unseal(what string, b []byte) (sig, body []byte, err error) {
	if len(b) <= identity.SignatureSize {
		return nil, nil, fmt.Errorf("decode %s: %d bytes, too short to be signed: %w", what, len(b), errMalformed)
	}
	return b[:identity.SignatureSize], b[identity.SignatureSize:], nil
}

// checkPinnedLocked checks pub against the key pinned for name, pinning it
// if the name has none (pin true) and counting and listing a conflict.
// Returns nil if pub may speak for name.
func (c *Cluster) checkPinnedLocked(name string, pub ed25519.PublicKey, pin bool, now time.Time) *rejection {
	if name == c.conf.NodeName {
		if identity.Equal(pub, c.pub) {
			return nil
		}
		c.noteKeyConflictLocked(name, c.pub, pub, now)
		return reject(rejectKeyConflict, "message for this node signed by %s, not its own key", identity.Fingerprint(pub))
	}
	if !pin {
		pinned, ok := c.pins.Lookup(name)
		switch {
		case !ok:
			return nil
		case identity.Equal(pinned, pub):
			return nil
		}
		c.noteKeyConflictLocked(name, pinned, pub, now)
		return reject(rejectKeyConflict, "%s: %w", name, fmt.Errorf("%w: pinned %s, offered %s", identity.ErrKeyChanged, identity.Fingerprint(pinned), identity.Fingerprint(pub)))
	}
	first, err := c.pins.Check(name, pub)
	switch {
	case errors.Is(err, identity.ErrKeyChanged):
		pinned, _ := c.pins.Lookup(name)
		c.noteKeyConflictLocked(name, pinned, pub, now)
		return reject(rejectKeyConflict, "%w", err)
	case err != nil:
		return reject(rejectUnknownKey, "%w", err)
	case first:
		c.logger.Info("pinned a node's key on first sight", "peer", name, "key", identity.Fingerprint(pub))
	}
	return nil
}

// noteKeyConflictLocked lists a key conflict and publishes it when it is
// new or the offered key changed.
func (c *Cluster) noteKeyConflictLocked(name string, pinned, offered ed25519.PublicKey, now time.Time) {
	i := slices.IndexFunc(c.keyConflicts, func(k KeyConflict) bool { return k.Name == name })
	if i >= 0 && identity.Equal(c.keyConflicts[i].Offered, offered) && identity.Equal(c.keyConflicts[i].Pinned, pinned) {
		k := &c.keyConflicts[i]
		k.LastSeen = now
		k.Count++
		return
	}
	k := KeyConflict{Name: name, Pinned: slices.Clone(pinned), Offered: slices.Clone(offered), FirstSeen: now, LastSeen: now, Count: 1}
	if i >= 0 {
		c.keyConflicts[i] = k
	} else {
		if len(c.keyConflicts) == maxConflicts {
			c.keyConflicts = slices.Delete(c.keyConflicts, 0, 1)
		}
		c.keyConflicts = append(c.keyConflicts, k)
	}
	c.logger.Warn("a name is offered with another key than the one pinned for it: another member speaks for it, or its card was reinstalled (then run `rpi-agent rekey NAME`)",
		"peer", apitypes.Quote(name), "pinned", identity.Fingerprint(pinned), "offered", identity.Fingerprint(offered))
	c.publish(Event{Type: EventConflict, Time: now, Conflict: &k})
}

// KeyConflicts returns the names offered with another key than their
// pinned one, oldest first.
func (c *Cluster) KeyConflicts() []KeyConflict {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.keyConflicts)
}

// Rekey re-pins name to the key it is being offered with (the latest key
// of its conflict): the explicit step after a node's card was reinstalled.
// What the node held under the old key is forgotten, so its next record,
// whatever its version, is applied. It fails with ErrNoKeyConflict when no
// other key is offered for name, and for this node's own name.
func (c *Cluster) Rekey(name string) (KeyConflict, error) {
	if name == c.conf.NodeName {
		return KeyConflict{}, fmt.Errorf("rekey %s: this is the answering node's own name: a node's key is only changed by removing node.key from its data dir", apitypes.Quote(name))
	}
	c.mu.Lock()
	i := slices.IndexFunc(c.keyConflicts, func(k KeyConflict) bool { return k.Name == name })
	var k KeyConflict
	if i >= 0 {
		k = c.keyConflicts[i]
	}
	c.mu.Unlock()
	if i < 0 {
		return KeyConflict{}, fmt.Errorf("rekey %s: %w: this agent has seen no other key for it", apitypes.Quote(name), ErrNoKeyConflict)
	}
	if err := c.pins.Set(name, k.Offered); err != nil {
		return k, fmt.Errorf("rekey %s: %w", apitypes.Quote(name), err)
	}
	c.mu.Lock()
	c.keyConflicts = slices.DeleteFunc(c.keyConflicts, func(o KeyConflict) bool {
		return o.Name == name && identity.Equal(o.Offered, k.Offered)
	})
	if p := c.peers[name]; p != nil {
		p.rec, p.recSigned, p.pending, p.pendingSigned, p.leaveSigned = nil, nil, nil, nil, nil
	}
	c.mu.Unlock()
	c.logger.Warn("node re-keyed by an operator", "peer", name, "was", identity.Fingerprint(k.Pinned), "now", identity.Fingerprint(k.Offered))
	return k, nil
}

package identity

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
)

// RecordClaims are the fields of a node's signed record (the gossip
// encoding of agent/cluster's Record, whose short JSON names these share)
// that a workstation relies on: who the node is, where, and its SSH host
// keys. The record carries its signer's public key, so it verifies by
// itself; whether that key is the right one for the name is the pins'
// question.
type RecordClaims struct {
	Name        string   `json:"n"`
	Addr        string   `json:"a"`
	SSHHostKeys []string `json:"k,omitempty"`
	IdentityKey []byte   `json:"pk"`
	Version     uint64   `json:"v"`
}

// ErrBadSignature is returned for a record whose signature does not verify.
var ErrBadSignature = errors.New("bad signature")

// OpenRecord verifies a signed record (its body exactly as signed, and the
// signature) against the key it carries and returns its claims and that
// key.
func OpenRecord(body, sig []byte) (RecordClaims, ed25519.PublicKey, error) {
	var c RecordClaims
	if err := json.Unmarshal(body, &c); err != nil {
		return c, nil, fmt.Errorf("open signed record: %w", err)
	}
	pub := ed25519.PublicKey(c.IdentityKey)
	if len(pub) != ed25519.PublicKeySize {
		return c, nil, fmt.Errorf("open signed record of %q: no identity key", c.Name)
	}
	if !Verify(pub, PurposeRecord, body, sig) {
		return c, nil, fmt.Errorf("open signed record of %q: %w", c.Name, ErrBadSignature)
	}
	return c, pub, nil
}

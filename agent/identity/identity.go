// Package identity is a node's own signing key and the pins that tie node
// names to keys. Every node makes an ed25519 key on its first start and
// never shares it; everything a node says about itself is signed with it.
// Peers, and the workstation tools, pin a name to the key first seen for it
// and refuse anything for that name signed by another key, as ssh does with
// host keys.
//
// The package is a leaf (standard library and internal/atomicfile only), so
// the agent and the workstation tools verify the same way.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/rpi-cluster/rpi-cluster/internal/atomicfile"
)

// KeyFile is the name of the node key inside the agent's data dir. The
// first-boot step and `rpi-image reset-identity` delete it, so a cloned
// card makes its own.
const KeyFile = "node.key"

// Purposes separate what a signature is for, so a signature over one kind
// of message can never be replayed as another.
const (
	// PurposeRecord signs a node's record (gossip msgRecord body).
	PurposeRecord = "rpi-cluster record v1"
	// PurposeLeave signs a node's leave intent.
	PurposeLeave = "rpi-cluster leave v1"
	// PurposeDesired signs a desired-state entry, by its writer.
	PurposeDesired = "rpi-cluster desired v1"
	// PurposeForceLeave signs a request to remove a failed member, by the
	// node that was asked to remove it.
	PurposeForceLeave = "rpi-cluster force-leave v1"
)

// SignatureSize is the size of every signature.
const SignatureSize = ed25519.SignatureSize

// Key is a node's private signing key.
type Key struct {
	priv ed25519.PrivateKey
}

// Generate makes a new key.
func Generate() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate node key: %w", err)
	}
	return &Key{priv: priv}, nil
}

// LoadOrCreate reads the key in dir/KeyFile, or makes one and writes it
// there (0600) when the file does not exist. created says which. A file
// that exists but is not a key is an error, never replaced: replacing it
// would change the node's identity, which peers would refuse.
func LoadOrCreate(dir string) (k *Key, created bool, err error) {
	path := filepath.Join(dir, KeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		k, err := parseKeyFile(b)
		if err != nil {
			return nil, false, fmt.Errorf("read node key %s: %w (delete it to make a new identity, then run `rpi-agent rekey` on a peer to accept it)", path, err)
		}
		return k, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("read node key %s: %w", path, err)
	}
	k, err = Generate()
	if err != nil {
		return nil, false, err
	}
	data := []byte(base64.StdEncoding.EncodeToString(k.priv.Seed()) + "\n")
	if err := atomicfile.WriteFile(path, data, 0o600); err != nil {
		return nil, false, fmt.Errorf("write node key: %w", err)
	}
	return k, true, nil
}

func parseKeyFile(b []byte) (*Key, error) {
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("not a node key (want the base64 of a 32-byte ed25519 seed)")
	}
	return &Key{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// Public returns the key's public half.
func (k *Key) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// Sign signs msg for purpose.
func (k *Key) Sign(purpose string, msg []byte) []byte {
	return ed25519.Sign(k.priv, signed(purpose, msg))
}

// Verify reports whether sig is pub's signature of msg for purpose. A key
// or signature of the wrong size is simply not valid.
func Verify(pub ed25519.PublicKey, purpose string, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, signed(purpose, msg), sig)
}

func signed(purpose string, msg []byte) []byte {
	b := make([]byte, 0, len(purpose)+1+len(msg))
	b = append(b, purpose...)
	b = append(b, 0)
	return append(b, msg...)
}

// EncodePublicKey is the text form of a public key used in the API, pins
// and config: standard base64.
func EncodePublicKey(pub ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(pub) }

// ParsePublicKey parses EncodePublicKey's form.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not a node public key: want the base64 of %d bytes", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// Fingerprint is how a key is shown to people: "SHA256:" and the unpadded
// base64 of its hash, as ssh-keygen -l shows host keys.
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Equal reports whether two public keys are the same.
func Equal(a, b ed25519.PublicKey) bool { return bytes.Equal(a, b) }

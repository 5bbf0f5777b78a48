package bench

import (
	"bytes"
	"compress/lzw"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// memberlist's message types (the first byte of every packet, compound
// part and stream), from its net.go. They are part of its wire protocol,
// so they do not change between versions.
const (
	mlPing = iota
	mlIndirectPing
	mlAck
	mlSuspect
	mlAlive
	mlDead
	mlPushPull
	mlCompound
	mlUser
	mlCompress
	mlEncrypt
	mlNack
	mlHasCRC
	mlErr
)

var mlKinds = map[byte]string{
	mlPing:         "ping",
	mlIndirectPing: "indirect ping",
	mlAck:          "ack",
	mlSuspect:      "suspect",
	mlAlive:        "alive",
	mlDead:         "dead",
	mlPushPull:     "push-pull",
	mlNack:         "nack",
	mlErr:          "error",
}

// Kinds that are not messages: what wrapping adds around them.
const (
	KindEncryption = "encryption"        // AES-GCM version, nonce and tag; a stream's header
	KindFraming    = "framing"           // compound headers, CRC headers
	KindUnknown    = "undecodable"       // anything the split could not parse
	KindTCPPrefix  = "tcp "              // prefixes the kinds of stream contents
	kindPPRecords  = "push-pull records" // the agent's state in a push-pull
)

// KindCounts is gossip split by message kind: bytes (fractional where
// compression shrank several messages together, see KindCounter) and
// messages per kind.
type KindCounts struct {
	Bytes    map[string]float64
	Messages map[string]uint64
}

// Total returns the bytes of every kind.
func (k KindCounts) Total() float64 {
	var t float64
	for _, b := range k.Bytes {
		t += b
	}
	return t
}

// Kinds returns the kinds, most bytes first.
func (k KindCounts) Kinds() []string {
	ks := slices.Collect(maps.Keys(k.Bytes))
	slices.SortFunc(ks, func(a, b string) int {
		if k.Bytes[a] != k.Bytes[b] {
			if k.Bytes[a] > k.Bytes[b] {
				return -1
			}
			return 1
		}
		return bytes.Compare([]byte(a), []byte(b))
	})
	return ks
}

func (k *KindCounts) add(o KindCounts, sign float64) {
	if k.Bytes == nil {
		k.Bytes = make(map[string]float64)
		k.Messages = make(map[string]uint64)
	}
	for kind, b := range o.Bytes {
		k.Bytes[kind] += sign * b
	}
	for kind, m := range o.Messages {
		if sign > 0 {
			k.Messages[kind] += m
		} else {
			k.Messages[kind] -= m
		}
	}
}

// Sub returns k minus earlier, kind by kind.
func (k KindCounts) Sub(earlier KindCounts) KindCounts {
	var d KindCounts
	d.add(k, 1)
	d.add(earlier, -1)
	return d
}

// KindCounter splits the bytes one node sends by message kind, as
// memberlist framed them: each packet is decrypted (when a key is set),
// stripped of its CRC header, decompressed and split into its compound
// parts; memberlist's own messages are named after their type, the agent's
// user messages after their first byte (cluster.MessageKind). Every wire
// byte lands in exactly one kind, so the kinds add up to the bytes the
// transport counted: encryption and framing overhead are kinds of their
// own, and a compressed payload's wire bytes are shared among its parts in
// proportion to their uncompressed sizes. A TCP stream is split once, by
// the first write on it (memberlist writes each message whole); a
// push-pull is split further into memberlist's node states and the agent's
// records by the header's user state length. Safe for concurrent use.
type KindCounter struct {
	gcm cipher.AEAD
	// self is the node's name: its own records are told from those it
	// relays.
	self string

	mu sync.Mutex
	c  KindCounts
}

// NewKindCounter returns a counter for the gossip node self sends,
// encrypted with key (nil: unencrypted). With self set, records are split
// into the node's own ("user record, own") and those it relays ("user
// record, relayed").
func NewKindCounter(key []byte, self string) (*KindCounter, error) {
	k := &KindCounter{self: self, c: KindCounts{Bytes: map[string]float64{}, Messages: map[string]uint64{}}}
	if len(key) > 0 {
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("kind counter: %w", err)
		}
		if k.gcm, err = cipher.NewGCM(b); err != nil {
			return nil, fmt.Errorf("kind counter: %w", err)
		}
	}
	return k, nil
}

// Counts returns a copy of the counts so far.
func (k *KindCounter) Counts() KindCounts {
	k.mu.Lock()
	defer k.mu.Unlock()
	var c KindCounts
	c.add(k.c, 1)
	return c
}

// share is part of a message's wire bytes attributed to one kind.
type share struct {
	kind  string
	bytes float64
	msgs  uint64
}

func (k *KindCounter) record(shares []share) {
	k.mu.Lock()
	for _, s := range shares {
		k.c.Bytes[s.kind] += s.bytes
		k.c.Messages[s.kind] += s.msgs
	}
	k.mu.Unlock()
}

// Packet counts one UDP packet sent.
func (k *KindCounter) Packet(b []byte) { k.record(k.splitPacket(b)) }

func (k *KindCounter) splitPacket(b []byte) []share {
	var out []share
	plain := b
	if k.gcm != nil {
		var err error
		if plain, err = k.open(b, nil); err != nil {
			return []share{{KindUnknown, float64(len(b)), 1}}
		}
		out = append(out, share{KindEncryption, float64(len(b) - len(plain)), 0})
	}
	return k.splitPlain(out, plain, 1, "")
}

// Stream returns the shares of a stream's first write, to be applied to
// every write on it (see streamShares.apply).
func (k *KindCounter) Stream(first []byte) streamShares {
	var out []share
	plain := first
	if k.gcm != nil {
		if len(first) < 5 || first[0] != mlEncrypt {
			return streamShares{k: k, parts: []share{{KindTCPPrefix + KindUnknown, float64(len(first)), 1}}}
		}
		n := int(binary.BigEndian.Uint32(first[1:5]))
		var err error
		if len(first) < 5+n {
			err = errors.New("short")
		} else {
			plain, err = k.open(first[5:5+n], first[:5])
		}
		if err != nil {
			return streamShares{k: k, parts: []share{{KindTCPPrefix + KindUnknown, float64(len(first)), 1}}}
		}
		out = append(out, share{KindTCPPrefix + KindEncryption, float64(len(first) - len(plain)), 0})
	}
	return streamShares{k: k, parts: k.splitPlain(out, plain, 1, KindTCPPrefix)}
}

// streamShares spreads a stream's bytes over the kinds of its first write.
type streamShares struct {
	k     *KindCounter
	parts []share
	first bool
}

// apply counts n bytes written on the stream.
func (s *streamShares) apply(n int) {
	var total float64
	for _, p := range s.parts {
		total += p.bytes
	}
	if total == 0 || n == 0 {
		return
	}
	out := make([]share, len(s.parts))
	for i, p := range s.parts {
		out[i] = share{p.kind, p.bytes / total * float64(n), 0}
		if !s.first {
			out[i].msgs = p.msgs
		}
	}
	s.first = true
	s.k.record(out)
}

// open decrypts one memberlist ciphertext: a version byte, a 12-byte
// nonce, the sealed message (PKCS#7-padded in version 0).
func (k *KindCounter) open(b, ad []byte) ([]byte, error) {
	const nonce = 12
	if len(b) < 1+nonce+k.gcm.Overhead() || b[0] > 1 {
		return nil, errors.New("not a memberlist ciphertext")
	}
	plain, err := k.gcm.Open(nil, b[1:1+nonce], b[1+nonce:], ad)
	if err != nil {
		return nil, err
	}
	if b[0] == 0 && len(plain) > 0 {
		pad := int(plain[len(plain)-1])
		if pad > len(plain) {
			return nil, errors.New("bad padding")
		}
		plain = plain[:len(plain)-pad]
	}
	return plain, nil
}

// splitPlain appends the shares of plaintext message b, whose bytes each
// count scale wire bytes, to out; prefix marks stream contents.
func (k *KindCounter) splitPlain(out []share, b []byte, scale float64, prefix string) []share {
	unknown := func(b []byte) []share {
		return append(out, share{prefix + KindUnknown, scale * float64(len(b)), 1})
	}
	if len(b) == 0 {
		return out
	}
	switch b[0] {
	case mlHasCRC:
		if len(b) < 5 {
			return unknown(b)
		}
		out = append(out, share{prefix + KindFraming, 5 * scale, 0})
		return k.splitPlain(out, b[5:], scale, prefix)
	case mlCompress:
		d, err := decompress(b[1:])
		if err != nil || len(d) == 0 {
			return unknown(b)
		}
		return k.splitPlain(out, d, scale*float64(len(b))/float64(len(d)), prefix)
	case mlCompound:
		if len(b) < 2 || len(b) < 2+2*int(b[1]) {
			return unknown(b)
		}
		n := int(b[1])
		out = append(out, share{prefix + KindFraming, float64(2+2*n) * scale, 0})
		rest := b[2+2*n:]
		for i := range n {
			l := int(binary.BigEndian.Uint16(b[2+2*i:]))
			if l > len(rest) {
				return splitPlainUnknown(out, rest, scale, prefix)
			}
			out = k.splitPlain(out, rest[:l], scale, prefix)
			rest = rest[l:]
		}
		if len(rest) > 0 {
			out = splitPlainUnknown(out, rest, scale, prefix)
		}
		return out
	case mlUser:
		if len(b) < 2 {
			return unknown(b)
		}
		return append(out, share{prefix + "user " + k.userKind(b[1:]), scale * float64(len(b)), 1})
	case mlPushPull:
		var h struct {
			Nodes        int
			UserStateLen int
			Join         bool
		}
		if err := codec.NewDecoderBytes(b[1:], &codec.MsgpackHandle{}).Decode(&h); err != nil ||
			h.UserStateLen < 0 || h.UserStateLen > len(b)-1 {
			return unknown(b)
		}
		return append(out,
			share{prefix + "push-pull nodes", scale * float64(len(b)-h.UserStateLen), 1},
			share{prefix + kindPPRecords, scale * float64(h.UserStateLen), 0})
	}
	if name, ok := mlKinds[b[0]]; ok {
		return append(out, share{prefix + name, scale * float64(len(b)), 1})
	}
	return unknown(b)
}

func splitPlainUnknown(out []share, b []byte, scale float64, prefix string) []share {
	return append(out, share{prefix + KindUnknown, scale * float64(len(b)), 1})
}

// decompress undoes memberlist's compressPayload: a msgpack compress{Algo,
// Buf} whose Buf is LZW (LSB, 8-bit literals).
func decompress(b []byte) ([]byte, error) {
	var c struct {
		Algo int
		Buf  []byte
	}
	if err := codec.NewDecoderBytes(b, &codec.MsgpackHandle{}).Decode(&c); err != nil {
		return nil, err
	}
	if c.Algo != 0 {
		return nil, fmt.Errorf("compression algorithm %d", c.Algo)
	}
	r := lzw.NewReader(bytes.NewReader(c.Buf), lzw.LSB, 8)
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, 10<<20))
}

// userKind names a user message (its type byte first); a record is the
// node's own or relayed when the counter knows the node's name.
func (k *KindCounter) userKind(m []byte) string {
	kind := cluster.MessageKind(m[0])
	if kind != "record" || k.self == "" {
		return kind
	}
	var r struct {
		Name string `json:"n"`
	}
	if len(m) <= 1+identity.SignatureSize || json.Unmarshal(m[1+identity.SignatureSize:], &r) != nil {
		return kind
	}
	if r.Name == k.self {
		return kind + ", own"
	}
	return kind + ", relayed"
}

package bench

import (
	"bytes"
	"compress/lzw"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

var kindsKey = bytes.Repeat([]byte{7}, 16)

// seal encrypts plain as memberlist does (version byte, nonce, sealed
// message; version 0 PKCS#7-padded).
func seal(t *testing.T, vsn byte, plain, ad []byte) []byte {
	t.Helper()
	b, err := aes.NewCipher(kindsKey)
	if err != nil {
		t.Fatal(err)
	}
	gcm, _ := cipher.NewGCM(b)
	nonce := bytes.Repeat([]byte{vsn + 1}, 12)
	if vsn == 0 {
		pad := 16 - len(plain)%16
		plain = append(bytes.Clone(plain), bytes.Repeat([]byte{byte(pad)}, pad)...)
	}
	out := append([]byte{vsn}, nonce...)
	return gcm.Seal(out, nonce, plain, ad)
}

// msg is a message of type typ padded to n bytes.
func msg(n int, typ ...byte) []byte {
	return append(bytes.Clone(typ), bytes.Repeat([]byte{'x'}, n-len(typ))...)
}

func compound(parts ...[]byte) []byte {
	b := []byte{mlCompound, byte(len(parts))}
	for _, p := range parts {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	}
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func msgpack(t *testing.T, typ byte, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteByte(typ)
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compressed(t *testing.T, b []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	w := lzw.NewWriter(&z, lzw.LSB, 8)
	w.Write(b)
	w.Close()
	return msgpack(t, mlCompress, struct {
		Algo int
		Buf  []byte
	}{0, z.Bytes()})
}

func wantCounts(t *testing.T, got KindCounts, bytes map[string]float64, msgs map[string]uint64) {
	t.Helper()
	for k, b := range got.Bytes {
		if math.Abs(b-bytes[k]) > 1e-9 {
			t.Errorf("%s: %g bytes, want %g", k, b, bytes[k])
		}
	}
	for k, b := range bytes {
		if _, ok := got.Bytes[k]; !ok {
			t.Errorf("%s: missing, want %g bytes", k, b)
		}
	}
	for k, m := range msgs {
		if got.Messages[k] != m {
			t.Errorf("%s: %d messages, want %d", k, got.Messages[k], m)
		}
	}
}

func TestKindCounterSplitsAnEncryptedCompoundPacket(t *testing.T) {
	k, err := NewKindCounter(kindsKey, "")
	if err != nil {
		t.Fatal(err)
	}
	// CRC header, then a compound of a ping, an agent heartbeat and an alive.
	plain := append([]byte{mlHasCRC, 1, 2, 3, 4}, compound(msg(20, mlPing), msg(12, mlUser, 2), msg(30, mlAlive))...)
	wire := seal(t, 1, plain, nil)
	if len(wire) != 104 {
		t.Fatalf("sealed packet is %d bytes, want 75 + 29", len(wire))
	}
	k.Packet(wire)
	wantCounts(t, k.Counts(), map[string]float64{
		KindEncryption:   29,
		KindFraming:      5 + 2 + 3*2,
		"ping":           20,
		"user heartbeat": 12,
		"alive":          30,
	}, map[string]uint64{"ping": 1, "user heartbeat": 1, "alive": 1, KindFraming: 0})
	if got := k.Counts().Total(); got != float64(len(wire)) {
		t.Errorf("kinds add up to %g bytes, want the packet's %d", got, len(wire))
	}
}

func TestKindCounterSharesCompressedBytesByUncompressedSize(t *testing.T) {
	k, _ := NewKindCounter(nil, "")
	inner := compound(msg(40, mlAck), msg(60, mlUser, 1)) // 6 + 100 bytes
	wire := compressed(t, inner)
	if len(wire) >= len(inner) {
		t.Fatalf("compressed %d bytes to %d: the test needs a payload LZW shrinks", len(inner), len(wire))
	}
	k.Packet(wire)
	c := float64(len(wire)) / float64(len(inner))
	wantCounts(t, k.Counts(), map[string]float64{
		KindFraming:   6 * c,
		"ack":         40 * c,
		"user record": 60 * c,
	}, map[string]uint64{"ack": 1, "user record": 1})
}

func TestKindCounterSplitsAPushPullStream(t *testing.T) {
	k, _ := NewKindCounter(kindsKey, "")
	head := msgpack(t, mlPushPull, struct {
		Nodes        int
		UserStateLen int
		Join         bool
	}{2, 50, false})
	plain := append(append(head, msg(30, 0x82)...), msg(50, 4)...)
	ct := seal(t, 0, plain, nil) // placeholder to learn the length
	hdr := binary.BigEndian.AppendUint32([]byte{mlEncrypt}, uint32(len(ct)))
	first := append(bytes.Clone(hdr), seal(t, 0, plain, hdr)...)

	client, server := net.Pipe()
	defer server.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := server.Read(buf); err != nil {
				return
			}
		}
	}()
	kc := &kindConn{Conn: client, k: k}
	if _, err := kc.Write(first); err != nil {
		t.Fatal(err)
	}
	// Later writes on the stream are shared like the first.
	if _, err := kc.Write(make([]byte, len(first))); err != nil {
		t.Fatal(err)
	}
	client.Close()
	nodes := float64(len(plain) - 50)
	enc := float64(len(first) - len(plain))
	wantCounts(t, k.Counts(), map[string]float64{
		"tcp " + KindEncryption: 2 * enc,
		"tcp push-pull nodes":   2 * nodes,
		"tcp " + kindPPRecords:  2 * 50,
	}, map[string]uint64{"tcp push-pull nodes": 1})
}

func TestKindCounterCountsWhatItCannotParse(t *testing.T) {
	k, _ := NewKindCounter(kindsKey, "")
	other := bytes.Repeat([]byte{9}, 16)
	b, _ := aes.NewCipher(other)
	gcm, _ := cipher.NewGCM(b)
	nonce := make([]byte, 12)
	k.Packet(gcm.Seal(append([]byte{1}, nonce...), nonce, msg(20, mlPing), nil)) // another key: 49 bytes
	k2, _ := NewKindCounter(nil, "")
	k2.Packet(msg(10, 200))                                                  // no such type
	k2.Packet(append([]byte{mlCompound, 2, 0, 5, 0, 50}, msg(5, mlPing)...)) // second part truncated
	wantCounts(t, k.Counts(), map[string]float64{KindUnknown: 49}, nil)
	wantCounts(t, k2.Counts(), map[string]float64{KindUnknown: 10, KindFraming: 6, "ping": 5}, nil)
}

// TestSwarmSplitsEveryByteByKind runs real nodes, encrypted, and checks
// that the split accounts for every byte their transports counted and
// finds what such a cluster must send.
func TestSwarmSplitsEveryByteByKind(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			p, err := cluster.ProfileByName("test")
			if err != nil {
				t.Fatal(err)
			}
			p.Compress = compress
			ips := []string{"127.0.9.231", "127.0.9.232", "127.0.9.233"}
			if compress {
				ips = []string{"127.0.9.228", "127.0.9.229", "127.0.9.230"}
			}
			sw, err := NewSwarm(SwarmConfig{ClusterName: "bench-kinds", Profile: p, IPs: ips, Key: kindsKey, Seed: 9, SplitKinds: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(sw.Shutdown)
			ctx := context.Background()
			if _, err := sw.Grow(ctx, 3, 0, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			must := []string{"ping", "ack", "user heartbeat", "tcp push-pull nodes", "tcp push-pull records", KindEncryption}
			var tr Traffic
			err = poll(ctx, 20*time.Second, 20*time.Millisecond, func() error {
				tr = sw.Traffic()
				var missing []string
				for _, k := range must {
					if tr.Kinds.Bytes[k] == 0 {
						missing = append(missing, k)
					}
				}
				if len(missing) > 0 {
					return fmt.Errorf("no %s yet", strings.Join(missing, ", "))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if u := tr.Kinds.Bytes[KindUnknown] + tr.Kinds.Bytes["tcp "+KindUnknown]; u > 0 {
				t.Errorf("%g bytes undecodable, want every byte parsed: %v", u, tr.Kinds.Bytes)
			}
			// The transports and the split are read one node after the
			// other while traffic goes on: allow a few packets' skew.
			if d := math.Abs(tr.Kinds.Total() - float64(tr.Bytes)); d > 0.01*float64(tr.Bytes)+500 {
				t.Errorf("kinds add up to %.0f bytes, transports counted %d", tr.Kinds.Total(), tr.Bytes)
			}
			t.Logf("%d bytes: %v", tr.Bytes, tr.Kinds.Bytes)
		})
	}
}

func TestKindCounterTellsOwnRecordsFromRelayed(t *testing.T) {
	record := func(name string) []byte {
		b := append([]byte{mlUser, 1}, make([]byte, 64)...) // type, signature
		return append(b, fmt.Sprintf(`{"n":%q,"a":"127.0.0.1","gp":7946}`, name)...)
	}
	k, _ := NewKindCounter(nil, "n1")
	own, relayed := record("n1"), record("n22")
	k.Packet(compound(own, relayed))
	wantCounts(t, k.Counts(), map[string]float64{
		KindFraming:            2 + 2*2,
		"user record, own":     float64(len(own)),
		"user record, relayed": float64(len(relayed)),
	}, map[string]uint64{"user record, own": 1, "user record, relayed": 1})
}

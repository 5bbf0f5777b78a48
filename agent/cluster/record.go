package cluster

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// Member statuses. They mirror SWIM's states, with suspect derived from phi
// (see Member.Status).
const (
	StatusAlive   = "alive"
	StatusSuspect = "suspect"
	StatusFailed  = "failed"
	StatusLeft    = "left"
)

// Monitoring is a node's resource sample, gossiped inside its record.
type Monitoring struct {
	CPUs       int     `json:"c,omitempty"`
	CPUPercent float64 `json:"cp,omitempty"`
	MemTotal   uint64  `json:"mt,omitempty"`
	MemUsed    uint64  `json:"mu,omitempty"`
	Load1      float64 `json:"l1,omitempty"`
	Load5      float64 `json:"l5,omitempty"`
	Load15     float64 `json:"l15,omitempty"`
	// TempC is nil where the hardware has no thermal sensor.
	TempC           *float64  `json:"t,omitempty"`
	DiskUsedPercent float64   `json:"d,omitempty"`
	UptimeS         uint64    `json:"u,omitempty"`
	SampledAt       time.Time `json:"at"`
}

// Record is what a node publishes about itself: the unit of gossip. Only the
// owner changes it, bumping Version each time; everyone else keeps the
// highest version they have seen. The JSON field names are short because
// records travel in UDP packets of about 1.4 KB.
type Record struct {
	Name string `json:"n"`
	// Addr and GossipPort are the owner's advertised gossip address. In a
	// Member they are memberlist's current view, which wins over the record.
	Addr       string `json:"a"`
	GossipPort int    `json:"gp"`
	HTTPPort   int    `json:"hp,omitempty"`
	// Services the node runs (from its meta-data.json).
	Services   []string   `json:"s,omitempty"`
	Monitoring Monitoring `json:"m"`
	// SSHHostKeys in authorized_keys format.
	SSHHostKeys  []string `json:"k,omitempty"`
	AgentVersion string   `json:"av,omitempty"`
	Arch         string   `json:"ar,omitempty"`
	Model        string   `json:"mo,omitempty"`
	// IdentityKey is the owner's public signing key (ed25519), which
	// signed the record (see trust.go).
	IdentityKey []byte `json:"pk"`
	// Version orders the owner's records. It starts from the wall clock in
	// nanoseconds when the agent starts, so a restarted node always
	// outranks the records of its previous run (see Cluster.Start).
	Version uint64 `json:"v"`
}

// Clone returns a deep copy of r.
func (r Record) Clone() Record {
	r.Services = slices.Clone(r.Services)
	r.SSHHostKeys = slices.Clone(r.SSHHostKeys)
	r.IdentityKey = slices.Clone(r.IdentityKey)
	if r.Monitoring.TempC != nil {
		t := *r.Monitoring.TempC
		r.Monitoring.TempC = &t
	}
	return r
}

// Member is a node as seen by this node: its latest record, its SWIM status
// and the phi this node computes for it.
type Member struct {
	Record
	// Status is alive, suspect, failed or left. memberlist v0.7 does not
	// expose its internal suspect state, so suspect means "SWIM still says
	// alive, but this node's phi detector is past its threshold": the
	// accrual detector's verdict reported beside SWIM's.
	Status string
	// Phi is the suspicion level computed by this node (0 for itself).
	Phi          float64
	PhiThreshold float64
	// Self is true for this node's own entry.
	Self bool
	// Signed is the record as its owner signed it: the 64-byte signature
	// followed by the exact JSON signed (see SignedRecord). Nil when no
	// record is held. Shared: never modify it.
	Signed []byte
}

// SignedRecord splits Signed into the record's JSON body and its owner's
// signature (identity.PurposeRecord), as identity.OpenRecord takes them.
func (m Member) SignedRecord() (body, sig []byte, ok bool) {
	if len(m.Signed) <= identity.SignatureSize {
		return nil, nil, false
	}
	return m.Signed[identity.SignatureSize:], m.Signed[:identity.SignatureSize], true
}

// Message types: the first byte of every user message and push-pull state.
const (
	msgRecord    byte = 1 // signature ‖ a Record as JSON, signed by its owner
	msgHeartbeat byte = 2 // uvarint sequence number + node name
	msgLeave     byte = 3 // signature ‖ a leaveIntent as JSON, signed by the leaver
	msgState     byte = 4 // a pushPullState as JSON
	msgDesired   byte = 5 // signature ‖ a Desired as JSON, signed by its writer
	// msgLeaveDirect is a leaveIntent sent straight to one peer, which
	// answers with msgLeaveAck.
	msgLeaveDirect byte = 6
	msgLeaveAck    byte = 7 // a leaveAck as JSON
	// msgReadvertise asks the receiver to re-advertise itself: the sender
	// holds it failed but still gets its heartbeats (see introduce.go).
	msgReadvertise byte = 8
	// msgSilent names the peers whose heartbeats the sender has missed
	// for a while: it witnesses their silence (see agent/detector).
	msgSilent byte = 9
	// msgVerdict names a peer the sender has failed on silence: as one of
	// its watchers, or in a small cluster (see agent/detector).
	msgVerdict byte = 10
	// msgMove is a leaveIntent naming the node's new address, sent before
	// it moves there (see move.go).
	msgMove byte = 12 // msgForceLeave is 11 (reap.go)
)

// Size limits. Anything larger is dropped and counted as malformed.
const (
	// maxRecordSize bounds one encoded record. Records larger than what
	// fits in a gossip packet are still exchanged by push-pull and direct
	// TCP sends, but nothing legitimate approaches this.
	maxRecordSize = 32 << 10
	// maxStateSize bounds a push-pull state: 10,000 nodes of 1 KB each
	// with plenty of room.
	maxStateSize = 16 << 20
)

var errMalformed = errors.New("malformed message")

// leaveIntent is broadcast before memberlist's own leave so that peers can
// tell a graceful leave from a failure: memberlist reports both the same way.
type leaveIntent struct {
	Name    string `json:"n"`
	Version uint64 `json:"v"`
	// To is set in a move notice (msgMove): the "ip:port" the node moves
	// to.
	To string `json:"to,omitempty"`
}

// leaveAck tells a leaving node that From has its leave intent.
type leaveAck struct {
	From string `json:"f"`
}

// pushPullState is the user state of a push-pull exchange. Everything in
// it is carried as its author signed it (signature ‖ JSON; base64 in this
// JSON), so a push-pull cannot say more than the authors did.
type pushPullState struct {
	Cluster string   `json:"c"`
	Records [][]byte `json:"r"`
	// Desired is the whole desired table (see Desired).
	Desired [][]byte `json:"d,omitempty"`
	// Left holds the leave intents of nodes this node knows left, so a
	// peer that missed an intent's gossip still tells a leave from a
	// failure after the next push-pull.
	Left [][]byte `json:"l,omitempty"`
}

func encodeJSON(t byte, v any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(t)
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// signRecord encodes r and signs it with k: the body of a msgRecord
// (signature ‖ JSON).
func signRecord(k *identity.Key, r Record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record of %s: %w", r.Name, err)
	}
	if n := 1 + identity.SignatureSize + len(b); n > maxRecordSize {
		return nil, fmt.Errorf("encode record of %s: %d bytes exceeds the %d byte limit: gossip fewer services or keys", r.Name, n, maxRecordSize)
	}
	return seal(k, identity.PurposeRecord, b), nil
}

// decodeRecord parses the body of a msgRecord (without the type byte):
// the signature and the record. It checks the shape, not the signature.
func decodeRecord(signed []byte) (r Record, sig, body []byte, err error) {
	if len(signed) > maxRecordSize {
		return r, nil, nil, fmt.Errorf("decode record: %d bytes: %w", len(signed), errMalformed)
	}
	sig, body, err = unseal("record", signed)
	if err != nil {
		return r, nil, nil, err
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return r, nil, nil, fmt.Errorf("decode record: %w: %w", errMalformed, err)
	}
	if err := checkRecord(r); err != nil {
		return r, nil, nil, fmt.Errorf("decode record: %w", err)
	}
	return r, sig, body, nil
}

func checkRecord(r Record) error {
	if r.Name == "" {
		return fmt.Errorf("record name %q: %w", r.Name, errMalformed)
	}
	if r.Version == 0 {
		return fmt.Errorf("record of %s has version 0: %w", r.Name, errMalformed)
	}
	return nil
}

// encodeHeartbeat builds a heartbeat: sequence number, the period after
// which the receiver should expect the next one (in milliseconds), the
// sender's advertised gossip address (host:port) and its name.
func encodeHeartbeat(name, addr string, seq uint64, period time.Duration) []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(addr)+len(name))
	b = append(b, msgHeartbeat)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, uint64(period.Milliseconds()))
	b = binary.AppendUvarint(b, uint64(len(addr)))
	b = append(b, addr...)
	return append(b, name...)
}

// decodeHeartbeat parses the body of a msgHeartbeat (without the type byte).
func decodeHeartbeat(body []byte) (hb heartbeat, err error) {
	seq, n := binary.Uvarint(body)
	if n <= 0 {
		return hb, fmt.Errorf("decode heartbeat: bad sequence number: %w", errMalformed)
	}
	body = body[n:]
	ms, n := binary.Uvarint(body)
	if n <= 0 || ms == 0 || ms > uint64(maxHeartbeatPeriod.Milliseconds()) {
		return hb, fmt.Errorf("decode heartbeat: bad period: %w", errMalformed)
	}
	body = body[n:]
	alen, n := binary.Uvarint(body)
	if n <= 0 || alen == 0 || alen > maxAddrLen || alen > uint64(len(body)-n) {
		return hb, fmt.Errorf("decode heartbeat: bad address: %w", errMalformed)
	}
	body = body[n:]
	addr := string(body[:alen])
	name := string(body[alen:])
	if name == "" {
		return hb, fmt.Errorf("decode heartbeat: bad node name: %w", errMalformed)
	}
	return heartbeat{name: name, addr: addr, seq: seq, period: time.Duration(ms) * time.Millisecond}, nil
}

// heartbeat is a decoded msgHeartbeat.
type heartbeat struct {
	name   string
	addr   string // host:port of the sender's gossip
	seq    uint64
	period time.Duration
}

// maxAddrLen bounds a heartbeat's address: a bracketed IPv6 address with
// a zone and a port fits.
const maxAddrLen = 80

// maxHeartbeatPeriod bounds the announced heartbeat period: a day is far
// beyond any profile and cluster size, and keeps the arithmetic in range.
const maxHeartbeatPeriod = 24 * time.Hour

func decodeLeaveAck(body []byte) (leaveAck, error) {
	var a leaveAck
	if err := json.Unmarshal(body, &a); err != nil {
		return a, fmt.Errorf("decode leave ack: %w: %w", errMalformed, err)
	}
	if a.From == "" {
		return a, fmt.Errorf("decode leave ack: bad node name: %w", errMalformed)
	}
	return a, nil
}

// decodeLeave parses a signed leave intent: signature ‖ JSON.
func decodeLeave(signed []byte) (l leaveIntent, sig, body []byte, err error) {
	if len(signed) > maxRecordSize {
		return l, nil, nil, fmt.Errorf("decode leave intent: %d bytes: %w", len(signed), errMalformed)
	}
	if sig, body, err = unseal("leave intent", signed); err != nil {
		return l, nil, nil, err
	}
	l, err = decodeLeaveBody(body)
	return l, sig, body, err
}

func decodeLeaveBody(body []byte) (leaveIntent, error) {
	var l leaveIntent
	if err := json.Unmarshal(body, &l); err != nil {
		return l, fmt.Errorf("decode leave intent: %w: %w", errMalformed, err)
	}
	if l.Name == "" {
		return l, fmt.Errorf("decode leave intent: bad node name: %w", errMalformed)
	}
	return l, nil
}

func decodeState(buf []byte) (pushPullState, error) {
	var s pushPullState
	if len(buf) == 0 || buf[0] != msgState {
		return s, fmt.Errorf("decode push-pull state: missing type byte: %w", errMalformed)
	}
	if len(buf) > maxStateSize {
		return s, fmt.Errorf("decode push-pull state: %d bytes: %w", len(buf), errMalformed)
	}
	if err := json.Unmarshal(buf[1:], &s); err != nil {
		return s, fmt.Errorf("decode push-pull state: %w: %w", errMalformed, err)
	}
	return s, nil
}

// meta is the node meta digest memberlist carries in every alive message.
// It is static for the life of the process, so memberlist never has to
// re-announce it; records change through their own messages.
type meta struct {
	// Proto is the version of this package's message format.
	Proto int `json:"p"`
	// Cluster is the cluster name; nodes of other clusters are refused.
	Cluster string `json:"c"`
	// HTTPPort is the agent API port.
	HTTPPort int `json:"h,omitempty"`
}

const protoVersion = 1

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) == 0 {
		return m, errors.New("node has no metadata: not an rpi-cluster agent")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("decode node metadata: %w", err)
	}
	return m, nil
}

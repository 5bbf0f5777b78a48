// Package apitypes holds the agent API's wire types and the one set of
// rules for names that every boundary applies: the agent's config and API,
// gossip receive, meta-data.json, and every file and argument the
// workstation tools write. It is a leaf: it imports nothing of the project,
// so the agent's internals and the tools share it without pulling in the
// HTTP server.
//
// The types in this file are the wire format, so they change only in
// backwards-compatible ways: add fields, never rename them.
package apitypes

import "time"

// Node statuses as reported by the API. They mirror memberlist's SWIM states.
const (
	StatusAlive   = "alive"
	StatusSuspect = "suspect"
	StatusFailed  = "failed"
	StatusLeft    = "left"
)

// Node is one member of the cluster as seen by the answering agent. It is the
// one model behind the API, the CLI tables, the inventory and the web page.
type Node struct {
	Name       string `json:"name"`
	Address    string `json:"address"`
	GossipPort int    `json:"gossip_port"`
	HTTPPort   int    `json:"http_port"`
	// Status is one of alive, suspect, failed, left.
	Status   string   `json:"status"`
	Services []string `json:"services"`
	// Monitoring is the last sample the node gossiped about itself.
	Monitoring Monitoring `json:"monitoring"`
	// Phi is the accrual suspicion level of this node as computed by the
	// answering agent (0 for the answering node itself).
	Phi          float64 `json:"phi"`
	PhiThreshold float64 `json:"phi_threshold"`
	// SSHHostKeys are the node's SSH host public keys in authorized_keys
	// format ("ssh-ed25519 AAAA..."), gossiped so workstations can write a
	// known_hosts file.
	SSHHostKeys []string `json:"ssh_host_keys"`
	// Version is the agent version the node runs.
	Version string `json:"version"`
	Arch    string `json:"arch"`
	Model   string `json:"model"`
	// RecordVersion is bumped by the node on every change of its record.
	RecordVersion uint64 `json:"record_version"`
	// Self is true for the answering agent's own node.
	Self bool `json:"self,omitempty"`
	// IdentityKey is the node's public signing key (ed25519, base64): the
	// key the answering agent has pinned for this name.
	IdentityKey string `json:"identity_key,omitempty"`
	// SignedRecord is the node's record exactly as the node signed it, so
	// a workstation can check what the node said about itself (its SSH
	// host keys above all) without trusting the agent it asked.
	SignedRecord *SignedRecord `json:"signed_record,omitempty"`
}

// SignedRecord is a node record as its owner signed it: Body is the
// record's gossip encoding, Sig the owner's ed25519 signature of it
// (identity.PurposeRecord). Both are base64 in JSON.
type SignedRecord struct {
	Body []byte `json:"body"`
	Sig  []byte `json:"sig"`
}

// Monitoring is a node's resource sample.
type Monitoring struct {
	CPUs       int     `json:"cpus"`
	CPUPercent float64 `json:"cpu_percent"`
	MemTotal   uint64  `json:"mem_total"`
	MemUsed    uint64  `json:"mem_used"`
	Load1      float64 `json:"load1"`
	Load5      float64 `json:"load5"`
	Load15     float64 `json:"load15"`
	// TempC is nil where the hardware has no thermal sensor (containers).
	TempC           *float64  `json:"temp_c"`
	DiskUsedPercent float64   `json:"disk_used_percent"`
	UptimeS         uint64    `json:"uptime_s"`
	SampledAt       time.Time `json:"sampled_at"`
}

// Event kinds carried by GET /v1/events.
const (
	EventJoin   = "join"
	EventLeave  = "leave"
	EventFail   = "fail"
	EventUpdate = "update"
	// EventReap: the answering agent removed a failed or left node from its
	// view, after reap_failed_after or reap_left_after, or on force-leave.
	// Node is its last entry.
	EventReap = "reap"
)

// Event is one membership or record change, sent as a server-sent event whose
// "event:" field is Kind and whose "data:" field is this struct as JSON.
type Event struct {
	Kind string    `json:"kind"`
	Node Node      `json:"node"`
	Time time.Time `json:"time"`
	// Desired is set on "desired" events only.
	Desired *DesiredService `json:"desired,omitempty"`
	// Conflict is set on "conflict" events only: a node name offered with
	// another key than the one the answering agent pinned for it.
	Conflict *KeyConflict `json:"conflict,omitempty"`
	// Cause says, on "fail" events only, who reached the verdict:
	// "memberlist" (its suspicion of the node ran out), "upheld"
	// (memberlist's verdict, held back while the node's heartbeats
	// outlived the suspicion, then upheld), "silence" (the answering agent
	// stopped hearing the node's heartbeats, and a witness, By, did too),
	// "watcher" (one of the node's watchers, By, did), "peer" (in a cluster
	// small enough for silence verdicts, another node, By, did and told
	// this one, which had not yet) or "move" (the node
	// announced a new address and never showed up there).
	Cause string `json:"cause,omitempty"`
	By    string `json:"by,omitempty"`
}

// EventConflict is the kind of an event carrying a KeyConflict.
const EventConflict = "conflict"

// KeyConflict is a node name that the answering agent has pinned to one
// signing key and that is being offered with another: either the node's
// card was reinstalled (accept the new key with POST
// /v1/nodes/{name}/rekey, or `rpi-agent rekey NAME`) or another member is
// speaking for it. Keys are base64 ed25519, fingerprints as ssh shows
// them. GET /v1/conflicts lists them.
type KeyConflict struct {
	Node               string    `json:"node"`
	PinnedKey          string    `json:"pinned_key"`
	PinnedFingerprint  string    `json:"pinned_fingerprint"`
	OfferedKey         string    `json:"offered_key"`
	OfferedFingerprint string    `json:"offered_fingerprint"`
	FirstSeen          time.Time `json:"first_seen"`
	LastSeen           time.Time `json:"last_seen"`
	// Count is how many messages the offered key signed for the name.
	Count uint64 `json:"count"`
}

// RekeyResult is the body of POST /v1/nodes/{name}/rekey: the conflict
// that was resolved by pinning the node to the offered key.
type RekeyResult struct {
	Agent    string      `json:"agent"`
	Conflict KeyConflict `json:"conflict"`
}

// ForceLeaveResult is the body of POST /v1/nodes/{name}/force-leave: the
// node the answering agent removed, as it last listed it.
type ForceLeaveResult struct {
	Agent string `json:"agent"`
	Node  Node   `json:"node"`
}

// Health is the body of GET /healthz. Status stays "ok" for an agent that
// works but is open to the LAN: Warnings says what is open ([] when
// nothing). Cluster lets a workstation refuse an agent of another cluster.
type Health struct {
	Status   string   `json:"status"`
	Node     string   `json:"node"`
	Cluster  string   `json:"cluster,omitempty"`
	Warnings []string `json:"warnings"`
}

// Error is the body of every /v1 error response.
type Error struct {
	Error string `json:"error"`
}

// ServiceResult is the body of PUT/DELETE /v1/services/{service}.
type ServiceResult struct {
	Node     string   `json:"node"`
	Service  string   `json:"service"`
	Changed  bool     `json:"changed"`
	Services []string `json:"services"`
}

// Seed-compatible shapes, kept as the original project answered them.

// SeedService answers PUT /meta-data/add-service/:service and remove-service.
type SeedService struct {
	Service string `json:"service"`
}

// SeedError is the error body of the seed-compatible paths.
type SeedError struct {
	Err string `json:"err"`
}

// SeedAlive answers GET /nodes/alive: "ip:gossip port" of every alive node,
// the answering node included.
type SeedAlive struct {
	AlivePeers []string `json:"alivePeers"`
}

// SeedMonitoring answers GET /nodes/monitoring.
type SeedMonitoring struct {
	Res []SeedNodeMonitoring `json:"res"`
}

// SeedNodeMonitoring is one node in GET /nodes/monitoring. CPUs is the CPU
// busy fraction (0..1), as the original reported it.
type SeedNodeMonitoring struct {
	Name      string  `json:"name"`
	IP        string  `json:"ip"`
	CountCPUs int     `json:"countCPUs"`
	CPUs      float64 `json:"cpus"`
	FreeMem   uint64  `json:"freemem"`
	TotalMem  uint64  `json:"totalmem"`
	LoadAvg1  float64 `json:"loadavg1"`
	LoadAvg5  float64 `json:"loadavg5"`
	LoadAvg15 float64 `json:"loadavg15"`
}

// SeedWorkingService answers GET /nodes/workingService/:service: the IPs of
// the nodes whose services include it.
type SeedWorkingService struct {
	Res []string `json:"res"`
}

// EventDesired is sent on /v1/events when a service's desired replica count
// changes; Event.Desired carries the new value and Event.Node is empty.
const EventDesired = "desired"

// EventReset is sent on /v1/events to a client resuming with a
// Last-Event-ID whose missed events are no longer kept: it should reload
// GET /v1/nodes. Its data is {"kind": "reset", "reason": "..."}.
const EventReset = "reset"

// DesiredService is how many replicas of a service the cluster should run.
// It lives in the cluster itself (gossiped, last writer wins by Version then
// UpdatedBy), so it survives the loss of any node.
type DesiredService struct {
	Service   string    `json:"service"`
	Replicas  int       `json:"replicas"`
	Version   uint64    `json:"version"`
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`
	// Policy is the service's service.yaml as recorded when it was
	// launched; "" when none was recorded.
	Policy string `json:"policy,omitempty"`
	// Rendered maps nodes to a hash of the files each was last given for
	// the service (its rendered templates).
	Rendered map[string]string `json:"rendered,omitempty"`
}

// DesiredState answers GET /v1/desired.
type DesiredState struct {
	Services []DesiredService `json:"services"`
}

// DesiredChange is the body of PUT /v1/desired/{service}: either an absolute
// Replicas count or a Delta to add (negative lowers it; never below 0).
//
// Policy replaces the recorded service.yaml; Rendered sets the hash of what
// each named node was given ("" removes the node). A change may carry
// either or both without a count.
type DesiredChange struct {
	Replicas *int              `json:"replicas,omitempty"`
	Delta    *int              `json:"delta,omitempty"`
	Policy   *string           `json:"policy,omitempty"`
	Rendered map[string]string `json:"rendered,omitempty"`
}

// Available reports whether n can be given work now: alive, and suspected
// below the threshold it reports (a threshold of 0 means none). It is the
// one notion of available behind the seed's read paths (/nodes/alive,
// /nodes/monitoring, /nodes/workingService) and the launcher's default.
func (n Node) Available() bool {
	return n.Status == StatusAlive && (n.PhiThreshold <= 0 || n.Phi < n.PhiThreshold)
}

// Sampled reports whether m holds a real sample: a node that just joined
// gossips its record before its first sample, with no CPU count and no
// memory total, and a busy score computed from that means nothing.
func (m Monitoring) Sampled() bool { return m.CPUs > 0 && m.MemTotal > 0 }

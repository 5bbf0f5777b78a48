package detector

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A node that is itself late takes its peers for silent: its heartbeat
// timer fires late, its sends go out late, the heartbeats it receives wait
// in a queue. Its verdicts then accuse live nodes; and a node that is
// late sends its own heartbeats late, so its peers accuse it. Lifeguard
// (memberlist's awareness.go) answers the same problem for probes: a node
// that misses its own nacks trusts its own probes less, scaling its
// timeouts by a score. Health does that for heartbeats and verdicts.
//
// Each heartbeat round the node compares three figures with the round's
// slack (see Observe): how late its timer fired, how long the round took
// to plan and send, and how long the heartbeats it received last waited
// before memberlist took them; a round in which memberlist dropped a
// received message, its handler queue full, is late as well. Any of them
// past the slack raises the score by one, up to MaxScore;
// DefaultCalmRounds rounds in a row on time lower it by one, so a node
// recovers only after it has been on time for a while (hysteresis: a node
// stalled again and again stays degraded).
//
// While the score is above zero the node is degraded: it issues no
// silence verdicts and no silence reports, and widens its windows by
// Scale.

// MaxScore caps the health score: windows widen at most MaxScore+1 times,
// as memberlist's AwarenessMaxMultiplier of 8 caps its own.
const MaxScore = 8

// DefaultCalmRounds is how many rounds in a row must be on time before
// the score comes down by one: as many as a silence timeout spans at the
// least (16 rounds), so a node stays degraded for at least one silence
// timeout after its last late round.
const DefaultCalmRounds = 16

// Cause is what made a round late.
type Cause int

// Causes of a late round.
const (
	CauseTimer   Cause = iota // the round's timer fired late
	CauseSend                 // planning and sending the round took too long
	CauseReceive              // received heartbeats waited too long
	numCauses
)

// String names the cause as the metrics label it.
func (c Cause) String() string {
	switch c {
	case CauseTimer:
		return "timer"
	case CauseSend:
		return "send"
	case CauseReceive:
		return "receive"
	}
	return "unknown"
}

// Causes lists every cause, in order.
func Causes() []Cause { return []Cause{CauseTimer, CauseSend, CauseReceive} }

// slipBuckets are the upper bounds of the timer slip histogram, as
// multiples of the round's slack: relative, so that they mean the same
// under every profile and under time dilation.
var slipBuckets = [...]float64{0.125, 0.25, 0.5, 1, 2, 4, 8, 16}

// SlipBuckets returns the upper bounds of the timer slip histogram, in
// multiples of the round's slack.
func SlipBuckets() []float64 { return slices.Clone(slipBuckets[:]) }

// Round is what one heartbeat round measured of this node's own timing.
type Round struct {
	// Slip is how late the round's timer fired: now less the time it
	// was due.
	Slip time.Duration
	// Send is how long the round took to judge, plan and send.
	Send time.Duration
	// Backlog is the longest a received packet waited before memberlist
	// took it, since the last round.
	Backlog time.Duration
	// Dropped counts the received messages memberlist dropped since the
	// last round because its handler queue was full: any at all makes the
	// round late (CauseReceive), since a dropped heartbeat is silence
	// that this node made itself.
	Dropped uint64
	// Slack is how late any of them may be before the round counts as
	// late: it comes from the profile's intervals (see the caller).
	Slack time.Duration
}

// Health is a node's score of its own lateness, 0 (healthy) to MaxScore.
// It is safe for concurrent use.
type Health struct {
	calmRounds int

	mu    sync.Mutex
	score int
	calm  int // rounds on time since the last late one or the last step down

	// Counters and the slip histogram, read by Stats.
	late       [numCauses]atomic.Uint64
	suppressed atomic.Uint64
	slips      [len(slipBuckets) + 1]atomic.Uint64
	slipSum    atomic.Uint64 // in slack units × 1e6
	scoreNow   atomic.Int64
	maxSlip    atomic.Int64 // the largest slip seen, in nanoseconds
}

// NewHealth returns a healthy Health that steps down after calmRounds
// rounds on time (DefaultCalmRounds if not positive).
func NewHealth(calmRounds int) *Health {
	if calmRounds <= 0 {
		calmRounds = DefaultCalmRounds
	}
	return &Health{calmRounds: calmRounds}
}

// Observe takes one round's measurements and returns the new score.
func (h *Health) Observe(r Round) int {
	late := false
	if r.Slack > 0 {
		for c, l := range [numCauses]bool{
			CauseTimer:   r.Slip > r.Slack,
			CauseSend:    r.Send > r.Slack,
			CauseReceive: r.Backlog > r.Slack || r.Dropped > 0,
		} {
			if l {
				h.late[c].Add(1)
				late = true
			}
		}
	}
	h.recordSlip(r.Slip, r.Slack)

	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case late:
		h.score = min(h.score+1, MaxScore)
		h.calm = 0
	case h.score > 0:
		h.calm++
		if h.calm >= h.calmRounds {
			h.score--
			h.calm = 0
		}
	}
	h.scoreNow.Store(int64(h.score))
	return h.score
}

func (h *Health) recordSlip(slip, slack time.Duration) {
	if slip < 0 {
		slip = 0
	}
	for {
		m := h.maxSlip.Load()
		if int64(slip) <= m || h.maxSlip.CompareAndSwap(m, int64(slip)) {
			break
		}
	}
	if slack <= 0 {
		return
	}
	x := float64(slip) / float64(slack)
	i := 0
	for i < len(slipBuckets) && x > slipBuckets[i] {
		i++
	}
	h.slips[i].Add(1)
	h.slipSum.Add(uint64(x * 1e6))
}

// Score returns the current score: 0 when healthy.
func (h *Health) Score() int { return int(h.scoreNow.Load()) }

// Degraded reports whether the score is above zero: the node should issue
// no verdicts of its own.
func (h *Health) Degraded() bool { return h.Score() > 0 }

// Scale widens a window by the score: d·(1+score).
func (h *Health) Scale(d time.Duration) time.Duration {
	return d * time.Duration(1+h.Score())
}

// ScaleFloat widens a threshold by the score: x·(1+score).
func (h *Health) ScaleFloat(x float64) float64 {
	return x * float64(1+h.Score())
}

// Suppressed counts a silence verdict held back because the node was
// degraded.
func (h *Health) Suppressed() { h.suppressed.Add(1) }

// HealthStats is what Health counted, for /metrics.
type HealthStats struct {
	// Score is the current score, 0 to MaxScore.
	Score int
	// LateRounds counts late rounds by cause (Cause.String).
	LateRounds map[string]uint64
	// Suppressed counts silence verdicts held back while degraded.
	Suppressed uint64
	// SlipBuckets are the cumulative counts of rounds whose timer slip
	// was at most SlipBuckets()[i] times the slack; SlipCount counts every
	// round, SlipSum adds their slips in slack units.
	SlipBuckets []uint64
	SlipCount   uint64
	SlipSum     float64
	// MaxSlip is the largest timer slip seen.
	MaxSlip time.Duration
}

// Stats returns the counters.
func (h *Health) Stats() HealthStats {
	s := HealthStats{
		Score:      h.Score(),
		LateRounds: make(map[string]uint64, numCauses),
		Suppressed: h.suppressed.Load(),
		MaxSlip:    time.Duration(h.maxSlip.Load()),
	}
	for _, c := range Causes() {
		s.LateRounds[c.String()] = h.late[c].Load()
	}
	var cum uint64
	for i := range slipBuckets {
		cum += h.slips[i].Load()
		s.SlipBuckets = append(s.SlipBuckets, cum)
	}
	s.SlipCount = cum + h.slips[len(slipBuckets)].Load()
	s.SlipSum = float64(h.slipSum.Load()) / 1e6
	return s
}

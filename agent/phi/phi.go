// Package phi implements the phi accrual failure detector (Hayashibara et
// al., "The φ Accrual Failure Detector", 2004) the way Akka's
// PhiAccrualFailureDetector does: inter-arrival times of heartbeats are kept
// in a sliding window and modelled as a normal distribution; phi is
// -log10 of the probability that a heartbeat arrives later than now, given
// the time since the last one. A phi of 1 means a 10% chance of being wrong
// when suspecting the peer, 2 means 1%, 8 means 0.000001%.
//
// The package is pure arithmetic over caller-supplied timestamps: no clocks,
// no goroutines, no I/O.
package phi

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Config tunes a Detector. The zero value of a field means "use the value
// from DefaultConfig" when passed to New.
type Config struct {
	// Threshold is the phi above which a peer is considered unavailable.
	// 8 (Akka's cluster default) tolerates a few missed heartbeats on a
	// quiet LAN; lower values convict faster and are wrong more often.
	Threshold float64

	// WindowSize is how many inter-arrival intervals are kept. Older ones
	// are evicted first, so the model follows changes in network behaviour.
	WindowSize int

	// MinStdDev is a floor for the standard deviation of the intervals.
	// Without it a perfectly regular sender (common on loopback and LANs)
	// would make phi jump to infinity the moment one heartbeat is late.
	MinStdDev time.Duration

	// AcceptablePause is added to the mean interval: a silence of this
	// length beyond the usual interval is not suspicious. It absorbs
	// garbage-collection pauses, SD-card stalls and lost packets.
	AcceptablePause time.Duration

	// FirstHeartbeatEstimate bootstraps the model after the first heartbeat:
	// the window starts as if intervals had mean FirstHeartbeatEstimate and
	// standard deviation FirstHeartbeatEstimate/4. It should be close to
	// the sender's heartbeat interval.
	FirstHeartbeatEstimate time.Duration
}

// DefaultConfig returns the settings for peers that heartbeat about once a
// second over a LAN: Akka's threshold and window, a 100 ms deviation floor
// and a 2 s acceptable pause, so a dead peer crosses the threshold roughly
// 3.5 s after its last heartbeat.
func DefaultConfig() Config {
	return Config{
		Threshold:              8,
		WindowSize:             1000,
		MinStdDev:              100 * time.Millisecond,
		AcceptablePause:        2 * time.Second,
		FirstHeartbeatEstimate: time.Second,
	}
}

// Validate reports the first field that is out of range.
func (c Config) Validate() error {
	switch {
	case math.IsNaN(c.Threshold) || math.IsInf(c.Threshold, 0) || c.Threshold <= 0:
		return fmt.Errorf("phi config: threshold %v must be a positive number (8 is a good default)", c.Threshold)
	case c.WindowSize < 1:
		return fmt.Errorf("phi config: window size %d must be at least 1", c.WindowSize)
	case c.MinStdDev <= 0:
		return fmt.Errorf("phi config: min std dev %v must be positive", c.MinStdDev)
	case c.AcceptablePause < 0:
		return fmt.Errorf("phi config: acceptable pause %v must not be negative", c.AcceptablePause)
	case c.FirstHeartbeatEstimate <= 0:
		return fmt.Errorf("phi config: first heartbeat estimate %v must be positive", c.FirstHeartbeatEstimate)
	}
	return nil
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Threshold == 0 {
		c.Threshold = d.Threshold
	}
	if c.WindowSize == 0 {
		c.WindowSize = d.WindowSize
	}
	if c.MinStdDev == 0 {
		c.MinStdDev = d.MinStdDev
	}
	if c.FirstHeartbeatEstimate == 0 {
		c.FirstHeartbeatEstimate = d.FirstHeartbeatEstimate
	}
	// AcceptablePause 0 is meaningful (no slack), so it is not defaulted.
	return c
}

// ErrInvalidConfig is wrapped by the panic value of New for a config that
// fails Validate after defaults are applied.
var ErrInvalidConfig = errors.New("invalid phi config")

// Detector tracks the heartbeats of one peer. It is safe for concurrent use.
// It holds no 64-bit values touched by sync/atomic, so it is safe on 32-bit
// ARM as well.
type Detector struct {
	conf Config

	mu sync.Mutex
	// last is the arrival time of the latest heartbeat; zero before the first.
	last time.Time
	// intervals is a ring buffer of inter-arrival times in milliseconds.
	intervals []float64
	next      int // ring index the next interval is written to
	// mean and stdDev are recomputed on every heartbeat (in milliseconds),
	// so Phi is O(1).
	mean, stdDev float64
}

// New returns a Detector for one peer. Zero fields of c take their values
// from DefaultConfig (except AcceptablePause, where zero means no slack).
// It panics with an error wrapping ErrInvalidConfig if the result does not
// pass Validate: callers validate user input with Config.Validate first.
func New(c Config) *Detector {
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		panic(fmt.Errorf("%w: %w", ErrInvalidConfig, err))
	}
	return &Detector{conf: c, intervals: make([]float64, 0, min(c.WindowSize, 64))}
}

// Threshold returns the phi above which the peer counts as unavailable.
func (d *Detector) Threshold() float64 { return d.conf.Threshold }

// Heartbeat records that a heartbeat from the peer arrived at now.
//
// As in Akka, the first heartbeat seeds the window with two intervals,
// estimate-estimate/4 and estimate+estimate/4 (mean: the estimate, standard
// deviation: estimate/4). Later intervals are added only while the peer is
// available, so the long gap of an outage does not poison the model. A
// timestamp that is not after the previous one (clock step, reordering)
// updates nothing but the window stays intact.
func (d *Detector) Heartbeat(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last.IsZero() {
		est := ms(d.conf.FirstHeartbeatEstimate)
		d.add(est - est/4)
		d.add(est + est/4)
		d.last = now
		d.recompute()
		return
	}
	if !now.After(d.last) {
		return
	}
	interval := ms(now.Sub(d.last))
	if d.phiLocked(now) < d.conf.Threshold {
		d.add(interval)
		d.recompute()
	}
	d.last = now
}

// Phi returns the suspicion level of the peer at now: 0 before the first
// heartbeat, growing without bound while no heartbeat arrives.
func (d *Detector) Phi(now time.Time) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.phiLocked(now)
}

// Available reports whether Phi(now) is below the threshold.
func (d *Detector) Available(now time.Time) bool {
	return d.Phi(now) < d.conf.Threshold
}

func (d *Detector) phiLocked(now time.Time) float64 {
	if d.last.IsZero() {
		return 0
	}
	since := ms(now.Sub(d.last))
	mean := d.mean + ms(d.conf.AcceptablePause)
	std := math.Max(d.stdDev, ms(d.conf.MinStdDev))
	return phi(since, mean, std)
}

// phi is -log10(P(interval > since)) for a normal distribution with the
// given mean and standard deviation, using the logistic approximation of its
// cumulative distribution function (Bowling et al. 2009), as Akka does:
//
//	phi = -log10(1 - 1/(1 + e^(-y*(1.5976 + 0.070566*y²)))),  y = (since - mean) / std
//
// With z = y*(1.5976 + 0.070566*y²) that is exactly log10(1 + e^z). It is
// evaluated in a form that neither overflows nor cancels to zero, so phi
// grows without bound during a long silence but never becomes +Inf (which
// JSON and Prometheus consumers would choke on).
func phi(since, mean, std float64) float64 {
	y := (since - mean) / std
	z := y * (1.5976 + 0.070566*y*y)
	if z > 0 {
		return (z + math.Log1p(math.Exp(-z))) / math.Ln10
	}
	return math.Log1p(math.Exp(z)) / math.Ln10
}

// add appends an interval to the ring, evicting the oldest when full.
func (d *Detector) add(v float64) {
	if len(d.intervals) < d.conf.WindowSize {
		d.intervals = append(d.intervals, v)
		return
	}
	d.intervals[d.next] = v
	d.next = (d.next + 1) % d.conf.WindowSize
}

// recompute refreshes the mean and population standard deviation of the
// window. The window is at most a few thousand values and this runs once per
// heartbeat, so a fresh sum is cheaper to reason about than running sums that
// drift with floating-point error.
func (d *Detector) recompute() {
	n := float64(len(d.intervals))
	var sum float64
	for _, v := range d.intervals {
		sum += v
	}
	mean := sum / n
	var sq float64
	for _, v := range d.intervals {
		sq += (v - mean) * (v - mean)
	}
	d.mean = mean
	d.stdDev = math.Sqrt(sq / n)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

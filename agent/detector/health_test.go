package detector

import (
	"testing"
	"time"
)

func TestHealthScore(t *testing.T) {
	const slack = 100 * time.Millisecond
	onTime := Round{Slip: slack / 10, Send: slack / 10, Backlog: slack / 10, Slack: slack}
	late := map[string]Round{
		"timer":   {Slip: slack + 1, Slack: slack},
		"send":    {Send: 2 * slack, Slack: slack},
		"receive": {Backlog: 3 * slack, Slack: slack},
		"dropped": {Dropped: 1, Slack: slack},
	}
	tests := []struct {
		name   string
		rounds []Round
		want   int
	}{
		{"on time stays healthy", []Round{onTime, onTime, onTime}, 0},
		{"exactly the slack is on time", []Round{{Slip: slack, Send: slack, Backlog: slack, Slack: slack}}, 0},
		{"a late timer degrades", []Round{late["timer"]}, 1},
		{"a slow send degrades", []Round{late["send"]}, 1},
		{"a receive backlog degrades", []Round{late["receive"]}, 1},
		{"a received message dropped degrades", []Round{late["dropped"]}, 1},
		{"one late round counts once whatever its causes", []Round{{Slip: 2 * slack, Send: 2 * slack, Backlog: 2 * slack, Slack: slack}}, 1},
		{"late rounds add up", []Round{late["timer"], late["send"], late["receive"]}, 3},
		{"the score is capped", repeat(late["timer"], MaxScore+5), MaxScore},
		{"calm rounds short of the count keep the score", append([]Round{late["timer"]}, repeat(onTime, 3)...), 1},
		{"calm rounds bring it down by one", append([]Round{late["timer"], late["timer"]}, repeat(onTime, 4)...), 1},
		{"and back to healthy", append([]Round{late["timer"], late["timer"]}, repeat(onTime, 8)...), 0},
		{"a late round restarts the calm count", append(append([]Round{late["timer"]}, repeat(onTime, 3)...), append([]Round{late["send"]}, repeat(onTime, 3)...)...), 2},
		{"no slack, nothing is late", []Round{{Slip: time.Hour}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHealth(4)
			for _, r := range tt.rounds {
				h.Observe(r)
			}
			if got := h.Score(); got != tt.want {
				t.Errorf("score %d, want %d", got, tt.want)
			}
			if h.Degraded() != (tt.want > 0) {
				t.Errorf("degraded %v with score %d", h.Degraded(), tt.want)
			}
		})
	}
}

func repeat(r Round, n int) []Round {
	out := make([]Round, n)
	for i := range out {
		out[i] = r
	}
	return out
}

func TestHealthScales(t *testing.T) {
	h := NewHealth(0)
	if got := h.Scale(time.Second); got != time.Second {
		t.Errorf("healthy: Scale(1s) = %v", got)
	}
	h.Observe(Round{Slip: time.Second, Slack: time.Millisecond})
	h.Observe(Round{Slip: time.Second, Slack: time.Millisecond})
	if got := h.Scale(time.Second); got != 3*time.Second {
		t.Errorf("score 2: Scale(1s) = %v, want 3s", got)
	}
	if got := h.ScaleFloat(8); got != 24 {
		t.Errorf("score 2: ScaleFloat(8) = %v, want 24", got)
	}
}

func TestHealthStats(t *testing.T) {
	h := NewHealth(0)
	const slack = time.Second
	for _, slip := range []time.Duration{0, slack / 2, slack, 2 * slack, 100 * slack} {
		h.Observe(Round{Slip: slip, Slack: slack})
	}
	h.Observe(Round{Backlog: 2 * slack, Slack: slack})
	h.Observe(Round{Dropped: 3, Slack: slack})
	h.Suppressed()
	h.Suppressed()
	s := h.Stats()
	if s.Score != 4 {
		t.Errorf("score %d, want 4", s.Score)
	}
	if s.LateRounds["timer"] != 2 || s.LateRounds["receive"] != 2 || s.LateRounds["send"] != 0 {
		t.Errorf("late rounds %v, want timer 2, receive 2, send 0", s.LateRounds)
	}
	if s.Suppressed != 2 {
		t.Errorf("suppressed %d, want 2", s.Suppressed)
	}
	// Buckets 0.125 0.25 0.5 1 2 4 8 16 (cumulative); seven rounds, the
	// last two with no slip.
	want := []uint64{3, 3, 4, 5, 6, 6, 6, 6}
	for i, w := range want {
		if s.SlipBuckets[i] != w {
			t.Errorf("bucket le=%v: %d, want %d (all %v)", SlipBuckets()[i], s.SlipBuckets[i], w, s.SlipBuckets)
		}
	}
	if s.SlipCount != 7 || s.SlipSum != 103.5 {
		t.Errorf("count %d sum %v, want 7 and 103.5", s.SlipCount, s.SlipSum)
	}
	if s.MaxSlip != 100*slack {
		t.Errorf("max slip %v", s.MaxSlip)
	}
}

func TestShown(t *testing.T) {
	for _, tt := range []struct {
		phi          float64
		failed, left bool
		want         float64
	}{
		{phi: 3.2, want: 3.2},
		{phi: 12, want: 12}, // suspect: still judged
		{phi: 155043.3, failed: true, want: 8},
		{phi: 0.5, failed: true, want: 8}, // a watcher's verdict, heard before phi rose
		{phi: 9e9, left: true, want: 0},
	} {
		if got := Shown(tt.phi, 8, tt.failed, tt.left); got != tt.want {
			t.Errorf("Shown(%v, 8, failed %v, left %v) = %v, want %v", tt.phi, tt.failed, tt.left, got, tt.want)
		}
	}
}

package bench

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// durationFields returns the path and value of every time.Duration reachable
// from v through struct fields, exported or not.
func durationFields(v reflect.Value, path string, out map[string]time.Duration) {
	switch {
	case v.Type() == durationType:
		out[path] = time.Duration(v.Int())
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			durationFields(v.Field(i), strings.TrimPrefix(path+"."+v.Type().Field(i).Name, "."), out)
		}
	}
}

// fillDurations sets every settable duration in v to a distinct value, so
// that a field left unscaled cannot hide behind a zero.
func fillDurations(v reflect.Value, next *int64) {
	switch {
	case v.Type() == durationType:
		if v.CanSet() {
			*next += 1000
			v.SetInt(*next)
		}
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			fillDurations(v.Field(i), next)
		}
	}
}

// TestDilationScalesEveryProfileDuration walks cluster.Profile by
// reflection: a duration added to it later (the detector's windows, say)
// that Dilation.Profile leaves alone fails here.
func TestDilationScalesEveryProfileDuration(t *testing.T) {
	var p cluster.Profile
	var next int64
	fillDurations(reflect.ValueOf(&p).Elem(), &next)
	before := map[string]time.Duration{}
	durationFields(reflect.ValueOf(p), "", before)
	if len(before) < 10 {
		t.Fatalf("found %d durations in cluster.Profile, want the probe, gossip, heartbeat and phi timings at least: %v", len(before), before)
	}
	for _, want := range []string{"ProbeInterval", "TCPTimeout", "HeartbeatInterval", "Phi.AcceptablePause", "Phi.FirstHeartbeatEstimate"} {
		if _, ok := before[want]; !ok {
			t.Errorf("durations %v lack %s", before, want)
		}
	}

	const k = 2.5
	d := Dilation(k).Profile(p)
	after := map[string]time.Duration{}
	durationFields(reflect.ValueOf(d), "", after)
	for name, v := range before {
		if want := time.Duration(float64(v) * k); after[name] != want {
			t.Errorf("dilated %s = %v, want %v (%v times %g): Dilation.Profile does not reach it", name, after[name], want, v, k)
		}
	}
	// The original is a value and stays as it was.
	again := map[string]time.Duration{}
	durationFields(reflect.ValueOf(p), "", again)
	if !reflect.DeepEqual(again, before) {
		t.Errorf("Dilation.Profile changed its argument: %v, was %v", again, before)
	}
	// Everything else is left alone, and the built-in profiles stay valid.
	for _, name := range cluster.ProfileNames() {
		orig, _ := cluster.ProfileByName(name)
		dil := Dilation(4).Profile(orig)
		if err := dil.Validate(); err != nil {
			t.Errorf("profile %s dilated 4 times: %v", name, err)
		}
		if dil.SuspicionMult != orig.SuspicionMult || dil.Phi.Threshold != orig.Phi.Threshold || dil.Name != orig.Name {
			t.Errorf("profile %s: dilation changed a field that is not a duration", name)
		}
	}
}

// TestMemberlistTimingsComeFromTheProfile: dilating the profile dilates
// memberlist only if every protocol duration of memberlist.Config is set
// from a profile field of the same name (agent/cluster's memberlistConfig).
// A duration memberlist adds in a new version fails here until it is
// either in the profile or shown not to pace the protocol.
func TestMemberlistTimingsComeFromTheProfile(t *testing.T) {
	// Not protocol timing: how often memberlist checks its queue depths
	// for a warning in the log.
	notProtocol := map[string]bool{"QueueCheckInterval": true}
	profile := map[string]bool{}
	pt := reflect.TypeFor[cluster.Profile]()
	for i := range pt.NumField() {
		if pt.Field(i).Type == durationType {
			profile[pt.Field(i).Name] = true
		}
	}
	mt := reflect.TypeFor[memberlist.Config]()
	n := 0
	for i := range mt.NumField() {
		f := mt.Field(i)
		if f.Type != durationType || notProtocol[f.Name] {
			continue
		}
		n++
		if !profile[f.Name] {
			t.Errorf("memberlist.Config.%s is a duration that cluster.Profile does not set: --dilate would leave it at memberlist's default", f.Name)
		}
	}
	if n < 7 {
		t.Errorf("found %d memberlist durations, want at least the 7 of v0.7.0", n)
	}
}

func TestParseDilation(t *testing.T) {
	for _, s := range []string{"1", "4", "2.5", "100"} {
		if _, err := ParseDilation(s); err != nil {
			t.Errorf("ParseDilation(%q): %v", s, err)
		}
	}
	for _, s := range []string{"0", "0.5", "-2", "NaN", "Inf", "x", "", "101"} {
		if _, err := ParseDilation(s); err == nil || !strings.Contains(err.Error(), "want a number from 1 to 100") {
			t.Errorf("ParseDilation(%q) = %v, want an error saying what is accepted", s, err)
		}
	}
	k := Dilation(4)
	if k.Real(time.Second) != 4*time.Second || k.Emulated(4*time.Second) != time.Second || k.PerEmulatedSecond(100) != 400 {
		t.Errorf("K = 4: Real(1s) %v, Emulated(4s) %v, PerEmulatedSecond(100) %v", k.Real(time.Second), k.Emulated(4*time.Second), k.PerEmulatedSecond(100))
	}
	if var0 := Dilation(0); var0.Dilated() || var0.Real(time.Second) != time.Second {
		t.Errorf("the zero Dilation must mean none")
	}
}

// TestDilatedSwarmRunsSlowAndReportsEmulatedTime: the nodes of a swarm
// dilated K times get K times the profile's timings, and the swarm reports
// durations divided by K.
func TestDilatedSwarmRunsSlowAndReportsEmulatedTime(t *testing.T) {
	p, err := cluster.ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	const k = 3
	sw, err := NewSwarm(SwarmConfig{ClusterName: "bench-dilate", Profile: p, IPs: []string{"127.0.9.237", "127.0.9.238", "127.0.9.239"}, Seed: 3, Dilation: k})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Shutdown)
	if got := sw.conf.Profile.ProbeInterval; got != k*p.ProbeInterval {
		t.Fatalf("the nodes' probe interval is %v, want %v", got, k*p.ProbeInterval)
	}
	ctx := context.Background()
	if _, err := sw.Grow(ctx, 3, 0, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	victim, _ := sw.RandomLive()
	at, survivors, err := sw.Kill(victim)
	if err != nil {
		t.Fatal(err)
	}
	d, err := sw.WaitFailed(ctx, victim, survivors, at, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	real := time.Since(at)
	if d <= 0 || real < k*d {
		t.Errorf("detection reported as %v after %v of real time, want a third of the real detection time at most", d, real)
	}
	// memberlist fails a node no sooner than its suspicion timeout,
	// SuspicionMult·max(1, log10 N)·ProbeInterval: undilated nodes would
	// be done in a third of that in emulated time.
	if min := time.Duration(p.SuspicionMult) * p.ProbeInterval; d < min {
		t.Errorf("emulated detection %v is below the profile's minimum suspicion %v: the nodes were not dilated", d, min)
	}
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Tests use 127.0.9.230-249 and 127.30.0.x; the benchmark's own swarms
// start at 127.0.9.1, its footprint agents at .201, its separate-process
// agents in 127.20-21.x.y, and use port 0 too.

func netTransport(t *testing.T, ip string) *cluster.NetTransport {
	t.Helper()
	nt, err := cluster.NewNetTransport(ip, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return nt
}

func addrOf(t *testing.T, tr memberlist.Transport) string {
	t.Helper()
	ip, port, err := tr.FinalAdvertiseAddr("", 0)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", ip, port)
}

func TestFaultyTransportDropsTheConfiguredShare(t *testing.T) {
	a := NewFaultyTransport(netTransport(t, "127.0.9.230"), 0.3, 1)
	b := NewFaultyTransport(netTransport(t, "127.0.9.231"), 0, 2)
	t.Cleanup(func() { a.Shutdown(); b.Shutdown() })

	const sent = 1000
	// The receiver counts what arrives; how many should is known only
	// once every packet has been sent (the last ones sent may be dropped
	// after the last delivered one arrived).
	var received atomic.Int64
	go func() {
		for range b.PacketCh() {
			received.Add(1)
		}
	}()
	to := addrOf(t, b)
	for i := range sent {
		if _, err := a.WriteTo([]byte{byte(i)}, to); err != nil {
			t.Fatal(err)
		}
	}
	dropped := int(a.Dropped())
	if dropped < 200 || dropped > 400 {
		t.Errorf("dropped %d of %d packets at 30 %% loss, want 200-400", dropped, sent)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := received.Load(); n != int64(sent-dropped) {
			return fmt.Errorf("received %d packets, want the %d not dropped", n, sent-dropped)
		}
		return nil
	})
}

func TestFaultyTransportFreezeHoldsDeliveryAndSends(t *testing.T) {
	a := NewFaultyTransport(netTransport(t, "127.0.9.232"), 0, 1)
	b := NewFaultyTransport(netTransport(t, "127.0.9.233"), 0, 2)
	t.Cleanup(func() { a.Shutdown(); b.Shutdown() })

	const freeze = 300 * time.Millisecond
	b.Freeze(freeze)
	thaw := time.Now().Add(freeze)
	if _, err := a.WriteTo([]byte("ping"), addrOf(t, b)); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.PacketCh():
		if now := time.Now(); now.Before(thaw) {
			t.Fatalf("packet %q delivered %v before the freeze ended", p.Buf, thaw.Sub(now))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("packet held by the freeze was never delivered")
	}

	// A frozen node's own sends wait for the thaw too.
	a.Freeze(freeze)
	thaw = time.Now().Add(freeze)
	if _, err := a.WriteTo([]byte("pong"), addrOf(t, b)); err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); now.Before(thaw) {
		t.Fatalf("send returned %v before the freeze ended", thaw.Sub(now))
	}
	<-b.PacketCh()

	// Shutdown releases a sender blocked by a freeze.
	a.Freeze(time.Hour)
	errc := make(chan error, 1)
	go func() {
		_, err := a.WriteTo([]byte("late"), addrOf(t, b))
		errc <- err
	}()
	a.Shutdown()
	select {
	case err := <-errc:
		if !errors.Is(err, errTransportStopped) {
			t.Fatalf("send after shutdown: %v, want %v", err, errTransportStopped)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not release a frozen sender")
	}
}

func TestSwarmMeasuresJoinAndDetection(t *testing.T) {
	p, err := cluster.ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := NewSwarm(SwarmConfig{ClusterName: "bench-test", Profile: p, IPs: []string{"127.0.9.234", "127.0.9.235", "127.0.9.236"}, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Shutdown)
	ctx := context.Background()
	if _, err := sw.Grow(ctx, 4, 0, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	name, began, err := sw.Add()
	if err != nil {
		t.Fatal(err)
	}
	j, err := sw.WaitJoined(ctx, name, began, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if j <= 0 || j > 20*time.Second {
		t.Errorf("join took %v, want a positive duration within the timeout", j)
	}

	victim, _ := sw.RandomLive(name)
	at, survivors, err := sw.Kill(victim)
	if err != nil {
		t.Fatal(err)
	}
	if len(survivors) != 4 {
		t.Fatalf("survivors %v, want 4 nodes", survivors)
	}
	d, err := sw.WaitFailed(ctx, victim, survivors, at, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The test profile's suspicion lasts at least 3·log10(5)·100 ms.
	if d < 200*time.Millisecond || d > 20*time.Second {
		t.Errorf("detection took %v, want between the minimum suspicion time and the timeout", d)
	}
	if fps := sw.FalsePositives(); len(fps) != 0 {
		t.Errorf("false positives %v, want none", fps)
	}
	if b, n := sw.BytesSent(); b == 0 || n != 4 {
		t.Errorf("bytes sent %d by %d nodes, want traffic from 4", b, n)
	}
}

func TestSwarmReportsAFrozenNodeDeclaredFailed(t *testing.T) {
	p, err := cluster.ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := NewSwarm(SwarmConfig{ClusterName: "bench-fp-test", Profile: p, IPs: []string{"127.0.9.237", "127.0.9.238"}, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Shutdown)
	if _, err := sw.Grow(context.Background(), 3, 0, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	// Frozen far longer than the test profile's suspicion time, the node is
	// declared failed although it was never stopped: a false positive.
	frozen := sw.Live()[0]
	if err := sw.Freeze(frozen, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		for _, fp := range sw.FalsePositives() {
			if fp.Subject == frozen {
				return nil
			}
		}
		return fmt.Errorf("no peer declared the frozen %s failed yet", frozen)
	})
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {90, 9}, {99, 10}, {100, 10}, {0, 1}} {
		if got := Percentile(ds, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := Percentile([]float64(nil), 50); got != 0 {
		t.Errorf("p50 of nothing = %v, want 0", got)
	}
}

func TestReportMarkdownAndFailures(t *testing.T) {
	r := &Report{
		Machine: Machine{CPUs: 2, Model: "Test CPU", GoVersion: "go1.26", LoadStart: "1.00 1.00 1.00", LoadEnd: "2.00 2.00 2.00"},
		Command: "rpi-bench --quick", Mode: "quick", Labels: []string{"lan", "memberlist DefaultLANConfig"},
		Scale: []ScaleResult{
			{Contender: "lan", N: 10, Formation: time.Second, Detect: []time.Duration{2 * time.Second, 3 * time.Second},
				Join: []time.Duration{100 * time.Millisecond}, IdleBytes: 1500, UpdateBytes: 2500,
				FalsePositives: []FalsePositive{
					{Subject: "n3", Observer: "n1", Cause: cluster.CauseWatcher, By: "n5", Phase: PhaseTrials},
					{Subject: "n3", Observer: "n2", Cause: cluster.CauseWatcher, By: "n5", Phase: PhaseTrials},
					{Subject: "n4", Observer: "n1", Cause: cluster.CauseSilence, By: "n2", Phase: PhaseFormation},
				}, Overruled: 1, HandoffDrops: map[string]uint64{PhaseFormation: 7, PhaseTrials: 2}},
			{Contender: "memberlist DefaultLANConfig", N: 10, Err: errors.New("grow to 10 nodes: timed out")},
		},
		FalsePos: []FalsePosResult{
			{Contender: "lan", Plan: FalsePosPlan{N: 10, Loss: 0.1, Duration: time.Minute, Starve: 2 * time.Second, StarveEvery: 30 * time.Second},
				Events: []FalsePositive{{Subject: "n0", Observer: "n1"}}, Nodes: 1, Freezes: 2, Overruled: 4},
		},
	}
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"2 CPUs, Test CPU, go1.26", "`rpi-bench --quick`", "1.00 1.00 1.00 at start",
		"| failure detection p50 / p99 (trials) | 10 | 2.00 s / 3.00 s (2) | **failed** | p99 ≤ 2.5 s |",
		"| gossip sent per node, idle | 10 | 1.5 KB/s | – |",
		"1 nodes (1 verdicts, 2 freezes; 4 overruled)",
		"| live nodes declared failed during the rows above (fail verdicts) | 10 | 2 (3); 1 verdicts overruled |",
		"### Gross failures",
		"| lan, N = 10: live nodes declared failed, by phase and cause | fail events | nodes | verdicts at their origin |",
		"| join and detection trials: watcher | 2 | 1 | 1 |",
		"| formation: silence | 1 | 1 | 1 |",
		"| received messages memberlist dropped, its handler queue full: formation / bandwidth windows / trials | 10 | 7 / 0 / 2 | – |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	fails := r.Failures()
	if len(fails) != 3 || !strings.Contains(fails[0], "2 live nodes declared failed (3 fail verdicts)") ||
		!strings.Contains(fails[1], "timed out") || !strings.Contains(fails[2], "1 live nodes declared failed") {
		t.Errorf("failures %q, want lan's false positives at N=10, the timed-out formation and the false-positive row's", fails)
	}
}

func TestParseRSS(t *testing.T) {
	status := "Name:\trpi-agent\nVmRSS:\t   15728 kB\nRssAnon:\t    4608 kB\nRssFile:\t   11120 kB\nRssShmem:\t       0 kB\n"
	got, err := parseRSS(1, status)
	if err != nil {
		t.Fatal(err)
	}
	if got["VmRSS"] != 15728<<10 || got["RssAnon"] != 4608<<10 || got["RssFile"] != 11120<<10 {
		t.Errorf("parseRSS = %v", got)
	}
	for _, bad := range []string{
		"VmRSS:\t15728 kB\nRssAnon:\t4608 kB\n",                     // no RssFile
		"VmRSS:\t15728 MB\nRssAnon:\t4608 kB\nRssFile:\t11120 kB\n", // unit
	} {
		if _, err := parseRSS(1, bad); err == nil {
			t.Errorf("parseRSS(%q) accepted it", bad)
		}
	}
}

// TestProcScaleMeasuresRealAgents runs the separate-process row on three
// real rpi-agent processes (127.30.0.x) with two trials.
func TestProcScaleMeasuresRealAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rpi-agent processes")
	}
	bin := filepath.Join(t.TempDir(), "rpi-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/rpi-cluster/rpi-cluster/agent/cmd/rpi-agent").CombinedOutput(); err != nil {
		t.Fatalf("build rpi-agent: %v\n%s", err, out)
	}
	res := RunProcScale(context.Background(), "lan", ProcScalePlan{
		AgentBin: bin, Profile: "test", N: 3, Trials: 2, Idle: time.Second, Net: 30,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if len(res.Detect) != 2 || len(res.Join) != 2 {
		t.Fatalf("detect %v, join %v: want two trials each", res.Detect, res.Join)
	}
	for i := range res.Detect {
		if res.Detect[i] <= 0 || res.Detect[i] > 30*time.Second || res.Join[i] <= 0 {
			t.Errorf("trial %d: detect %v, join %v", i+1, res.Detect[i], res.Join[i])
		}
	}
	if res.Formation <= 0 || res.IdleBytes <= 0 {
		t.Errorf("formation %v, idle bytes %v", res.Formation, res.IdleBytes)
	}
	if len(res.FalsePositives) != 0 {
		t.Errorf("false positives: %+v", res.FalsePositives)
	}
}

func TestContenders(t *testing.T) {
	cs, err := Contenders([]string{"lan", "memberlist-lan"})
	if err != nil || len(cs) != 2 || cs[0].Label != "lan" || cs[1].Label != "memberlist DefaultLANConfig" {
		t.Fatalf("both: %v, %v", cs, err)
	}
	if cs[0].Profile.Name != "lan" || cs[0].Profile.SilenceTimeout == 0 || cs[1].Profile.SilenceTimeout != 0 {
		t.Errorf("lan (%s) judges silence after %v, DefaultLANConfig (%s) after %v: the profiles are mixed up",
			cs[0].Profile.Name, cs[0].Profile.SilenceTimeout, cs[1].Profile.Name, cs[1].Profile.SilenceTimeout)
	}
	if cs, err := Contenders([]string{" memberlist-lan"}); err != nil || len(cs) != 1 || cs[0].Profile.Name != "memberlist-lan" {
		t.Errorf("one: %v, %v", cs, err)
	}
	for _, bad := range [][]string{{"wan"}, {"lan", "lan"}, {}, {""}} {
		if _, err := Contenders(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// Grow keeps its schedule, and gives up, saying why, when starting the
// nodes runs past it.
func TestSwarmGrowPacesAndGivesUp(t *testing.T) {
	p, err := cluster.ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := NewSwarm(SwarmConfig{ClusterName: "bench-grow-test", Profile: p, IPs: []string{"127.0.9.239"}, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Shutdown)
	took, err := sw.Grow(context.Background(), 3, 300*time.Millisecond, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if took < 600*time.Millisecond {
		t.Errorf("3 nodes started 300 ms apart formed in %v", took)
	}

	_, err = sw.Grow(context.Background(), 100, 0, time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "cannot host 100") {
		t.Fatalf("growing to 100 nodes in 1 ms: %v, want the machine named too small", err)
	}
	if n := sw.Len(); n >= 100 {
		t.Errorf("%d nodes started after the deadline", n)
	}
}

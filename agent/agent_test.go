package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

// Agent tests use 127.0.2.0/24 and port 0, so they never collide with other
// packages' tests running at the same time.

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startAgent starts an agent on 127.0.2.<i> with the fast test profile.
func startAgent(t *testing.T, i int, mut func(*Config), opts ...Option) *Agent {
	t.Helper()
	conf := DefaultConfig()
	conf.Name = fmt.Sprintf("node-%d", i)
	ip := fmt.Sprintf("127.0.2.%d", i)
	conf.Bind = ip + ":0"
	conf.HTTP = ip + ":0"
	conf.MDNS = false
	conf.DataDir = filepath.Join(t.TempDir(), conf.Name)
	conf.SSHHostKeys = ""
	conf.MonitorInterval = 500 * time.Millisecond
	conf.RetryJoinInterval = 100 * time.Millisecond
	if mut != nil {
		mut(conf)
	}
	profile, err := cluster.ProfileByName("test")
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := Create(conf, logger.With("node", conf.Name), append([]Option{WithProfile(profile)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown() })
	return a
}

func gossipAddr(a *Agent) string {
	ip, port := a.Cluster().LocalAddr()
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

func joinTo(seed *Agent) func(*Config) {
	return func(c *Config) { c.Join = []string{gossipAddr(seed)} }
}

// waitAlive waits until every agent sees exactly want alive members.
func waitAlive(t *testing.T, agents []*Agent, want int) {
	t.Helper()
	testutil.WaitFor(t, 15*time.Second, func() error {
		for _, a := range agents {
			n := 0
			for _, m := range a.Cluster().Members() {
				if m.Status == cluster.StatusAlive {
					n++
				}
			}
			if n != want {
				return fmt.Errorf("%s sees %d alive, want %d", a.Name(), n, want)
			}
		}
		return nil
	})
}

func request(t *testing.T, method, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func TestServiceWritesNeedTokenAndReachEveryPeer(t *testing.T) {
	const token = "s3cret-token"
	withToken := func(c *Config) { c.APIToken = token }
	seed := startAgent(t, 1, withToken)
	agents := []*Agent{seed}
	for i := 2; i <= 3; i++ {
		agents = append(agents, startAgent(t, i, func(c *Config) { withToken(c); joinTo(seed)(c) }))
	}
	waitAlive(t, agents, 3)

	target := agents[1]
	base := "http://" + target.HTTPAddr()
	metaFile := filepath.Join(target.conf.DataDir, "meta-data.json")

	// Without the token: 401, and nothing written.
	code, body := request(t, http.MethodPut, base+"/meta-data/add-service/x", "")
	if code != http.StatusUnauthorized {
		t.Fatalf("no token: status %d %s, want 401", code, body)
	}
	if _, err := os.Stat(metaFile); err == nil {
		data, _ := os.ReadFile(metaFile)
		if strings.Contains(string(data), `"x"`) {
			t.Fatalf("unauthorised write reached the file: %s", data)
		}
	}
	code, _ = request(t, http.MethodPut, base+"/meta-data/add-service/x", "wrong")
	if code != http.StatusUnauthorized {
		t.Fatalf("wrong token: status %d, want 401", code)
	}

	// With it: 200 and the original shape; twice is stored once.
	for range 2 {
		code, body = request(t, http.MethodPut, base+"/meta-data/add-service/x", token)
		if code != http.StatusOK || strings.TrimSpace(string(body)) != `{"service":"x"}` {
			t.Fatalf("add-service: %d %s", code, body)
		}
	}
	data, err := os.ReadFile(metaFile)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct{ Services []string }
	if err := json.Unmarshal(data, &meta); err != nil || !slices.Equal(meta.Services, []string{"x"}) {
		t.Fatalf("meta-data.json = %s (%v), want services [x] exactly once", data, err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(target.conf.DataDir, "*.tmp*")); len(leftovers) > 0 {
		t.Fatalf("temporary files left behind: %v", leftovers)
	}

	// Every peer lists the node for the service within a few seconds.
	targetIP, _ := target.Cluster().LocalAddr()
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, a := range agents {
			code, body := request(t, http.MethodGet, "http://"+a.HTTPAddr()+"/nodes/workingService/x", "")
			var res apitypes.SeedWorkingService
			if code != 200 || json.Unmarshal(body, &res) != nil {
				return fmt.Errorf("%s: %d %s", a.Name(), code, body)
			}
			if !slices.Equal(res.Res, []string{targetIP}) {
				return fmt.Errorf("%s lists %v for x, want [%s]", a.Name(), res.Res, targetIP)
			}
		}
		return nil
	})

	// Invalid names are refused before anything is written.
	for _, bad := range []string{"..%2Fetc", "%2E%2E", strings.Repeat("a", 300), "caf%C3%A9", "UPPER", "a%20b"} {
		code, body := request(t, http.MethodPut, base+"/meta-data/add-service/"+bad, token)
		if code != http.StatusBadRequest {
			t.Errorf("add-service/%s: status %d %s, want 400", bad, code, body)
		}
	}
	code, _ = request(t, http.MethodPut, base+"/meta-data/add-service/", token)
	if code != http.StatusBadRequest && code != http.StatusNotFound {
		t.Errorf("empty service name: status %d, want 400 or 404", code)
	}
	data2, _ := os.ReadFile(metaFile)
	if string(data2) != string(data) {
		t.Fatalf("refused requests changed the file: %s -> %s", data, data2)
	}

	// Remove through the typed client: gone everywhere.
	cl, _ := client.New(base, token)
	if _, err := cl.RemoveService(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, a := range agents {
			cl, _ := client.New("http://"+a.HTTPAddr(), "")
			nodes, err := cl.ServiceNodes(context.Background(), "x")
			if err != nil {
				return err
			}
			if len(nodes) != 0 {
				return fmt.Errorf("%s still lists %d nodes for x", a.Name(), len(nodes))
			}
		}
		return nil
	})
}

func TestWrongKeyCannotJoin(t *testing.T) {
	keyA := "ZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVmZGVhZGJlZWY=" // 32 bytes
	keyB := "YmFkYmFkYmFkYmFkYmFkYmFkYmFkYmFkYmFkYmFkYmE=" // 32 bytes
	withKey := func(k string) func(*Config) { return func(c *Config) { c.Encrypt = k } }
	seed := startAgent(t, 11, withKey(keyA))
	member := startAgent(t, 12, func(c *Config) { withKey(keyA)(c); joinTo(seed)(c) })
	waitAlive(t, []*Agent{seed, member}, 2)

	intruder := startAgent(t, 13, withKey(keyB))
	plain := startAgent(t, 14, nil)
	for _, a := range []*Agent{intruder, plain} {
		if n, err := a.Cluster().Join([]string{gossipAddr(seed)}); err == nil {
			t.Fatalf("%s joined %d nodes without the right key", a.Name(), n)
		}
	}
	// Join is synchronous: once it has failed, nobody may list them.
	for _, a := range []*Agent{seed, member} {
		for _, m := range a.Cluster().Members() {
			if m.Name == intruder.Name() || m.Name == plain.Name() {
				t.Errorf("%s lists %s (%s)", a.Name(), m.Name, m.Status)
			}
		}
	}
	waitAlive(t, []*Agent{seed, member}, 2)
}

func TestGracefulLeaveAndRejoin(t *testing.T) {
	seed := startAgent(t, 21, nil)
	leaver := startAgent(t, 22, joinTo(seed))
	waitAlive(t, []*Agent{seed, leaver}, 2)

	if err := leaver.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	leaver.Shutdown()
	testutil.WaitFor(t, 10*time.Second, func() error {
		m, ok := seed.Cluster().Member("node-22")
		if !ok || m.Status != cluster.StatusLeft {
			return fmt.Errorf("seed sees node-22 as %+v, want left", m.Status)
		}
		return nil
	})

	back := startAgent(t, 22, joinTo(seed))
	waitAlive(t, []*Agent{seed, back}, 2)
}

// A fail event on /v1/events says who reached the verdict: a node killed
// in a three-node cluster is failed on silence, with the third node as the
// witness.
func TestFailEventSaysWhy(t *testing.T) {
	a := startAgent(t, 91, nil)
	b := startAgent(t, 92, joinTo(a))
	victim := startAgent(t, 93, joinTo(a))
	waitAlive(t, []*Agent{a, b, victim}, 3)

	c, err := client.New("http://"+a.HTTPAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opened := make(chan struct{})
	got := make(chan apitypes.Event, 1)
	go c.Follow(ctx, func() { close(opened) }, func(ev apitypes.Event) error {
		if ev.Kind == apitypes.EventFail && ev.Node.Name == victim.Name() {
			got <- ev
			return io.EOF
		}
		return nil
	})
	select {
	case <-opened:
	case <-ctx.Done():
		t.Fatal("the event stream never opened")
	}
	victim.Shutdown() // no leave: a crash, as far as the others can tell
	select {
	case ev := <-got:
		// Its own verdict witnessed by b, or b's verdict, taken.
		if (ev.Cause != string(cluster.CauseSilence) && ev.Cause != string(cluster.CausePeer)) || ev.By != b.Name() {
			t.Fatalf("fail event has cause %q by %q, want %q witnessed by %s or %q by %s", ev.Cause, ev.By, cluster.CauseSilence, b.Name(), cluster.CausePeer, b.Name())
		}
	case <-ctx.Done():
		t.Fatalf("no fail event for %s", victim.Name())
	}
}

package fakeagent

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
)

// The fake agents answer with the real handlers: /healthz, the seed paths
// and the error bodies are the agent's own, not a copy that can drift.
func TestServesTheRealAPI(t *testing.T) {
	c := Start(t, []apitypes.Node{{Name: "pi-1", Services: []string{"web"}}, {Name: "pi-2"}})
	get := func(path string) (int, string) {
		resp, err := http.Get(c.URL("pi-1") + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/healthz")
	var h map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &h) != nil || h["status"] != "ok" || h["node"] != "pi-1" {
		t.Errorf("/healthz = %d %s, want the agent's JSON health", code, body)
	}
	if code, body := get("/nodes/workingService/web"); code != 200 || strings.TrimSpace(body) != `{"res":["127.0.0.1"]}` {
		t.Errorf("/nodes/workingService/web = %d %s", code, body)
	}
	if code, body := get("/v1/nope"); code != 404 || !strings.Contains(body, `"error"`) {
		t.Errorf("unknown path = %d %s, want the agent's 404", code, body)
	}

	c.Token = "s3cret"
	cl, err := client.New(c.URL("pi-2"), "wrong")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AddService(context.Background(), "db"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("write with a wrong token: %v, want 401", err)
	}
	cl.Token = "s3cret"
	if _, err := cl.AddService(context.Background(), "db"); err != nil {
		t.Fatal(err)
	}
	if got := c.Services("pi-2"); len(got) != 1 || got[0] != "db" {
		t.Errorf("pi-2 services = %v", got)
	}
	// The refused write never reached the backend, as on an agent.
	if w := c.Writes(); len(w) != 1 || w[0].String() != "PUT pi-2 db" {
		t.Errorf("writes = %v, want only the accepted one", w)
	}
}

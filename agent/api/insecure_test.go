package api

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// A token swapped while the server runs takes effect on the next request:
// the old one is refused, the new one accepted, and an empty one opens
// writes again.
func TestSetToken(t *testing.T) {
	ts, _, s := testServer(t, "old-token")
	put := func(token string) int {
		return call(t, "PUT", ts.URL+"/v1/services/x", token, nil).code
	}
	if code := put("old-token"); code != http.StatusOK {
		t.Fatalf("old token before the swap: %d", code)
	}
	s.SetToken("new-token")
	if code := put("old-token"); code != http.StatusUnauthorized {
		t.Errorf("old token after the swap: %d, want 401", code)
	}
	if code := put("new-token"); code != http.StatusOK {
		t.Errorf("new token: %d, want 200", code)
	}
	if code := put(""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	s.SetToken("")
	if code := put(""); code != http.StatusOK {
		t.Errorf("no token once the token is removed: %d, want 200", code)
	}
}

// Requests running while the token changes see one token or the other,
// never a torn one (run with -race).
func TestSetTokenUnderLoad(t *testing.T) {
	ts, _, s := testServer(t, "a")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				req, _ := http.NewRequest("PUT", ts.URL+"/v1/services/x", nil)
				req.Header.Set("Authorization", "Bearer "+"ab"[i%2:i%2+1])
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs <- fmt.Errorf("worker %d: %w", w, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
					errs <- fmt.Errorf("worker %d: status %d", w, resp.StatusCode)
				}
			}
		}()
	}
	for i := range 200 {
		s.SetToken("ab"[i%2 : i%2+1])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

type healthBody struct {
	Status   string   `json:"status"`
	Node     string   `json:"node"`
	Warnings []string `json:"warnings"`
}

func getHealth(t *testing.T, url string) healthBody {
	t.Helper()
	a := call(t, "GET", url+"/healthz", "", nil)
	var h healthBody
	if a.code != http.StatusOK || json.Unmarshal([]byte(a.body), &h) != nil {
		t.Fatalf("/healthz: %d %s", a.code, a.body)
	}
	if h.Status != "ok" || h.Warnings == nil {
		t.Fatalf("/healthz = %s, want status ok and a warnings list", a.body)
	}
	return h
}

// An agent that takes writes from anyone, or gossips in clear, says so in
// /healthz (status stays "ok": it is healthy, just open) and on its page,
// with what to set to close it.
func TestInsecureWarnings(t *testing.T) {
	for _, tc := range []struct {
		name        string
		token       string
		plainGossip bool
		want        []string // setting each warning names
	}{
		{"secure", "t0ken", false, nil},
		{"open writes", "", false, []string{"api_token"}},
		{"plain gossip", "t0ken", true, []string{"encrypt"}},
		{"both", "", true, []string{"api_token", "encrypt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, _, s := testServerWith(t, tc.token, func(s *Server) { s.plainGossip = tc.plainGossip })
			h := getHealth(t, ts.URL)
			if len(h.Warnings) != len(tc.want) {
				t.Fatalf("warnings %q, want %d naming %v", h.Warnings, len(tc.want), tc.want)
			}
			page := call(t, "GET", ts.URL+"/", "", nil).body
			for i, setting := range tc.want {
				if !strings.Contains(h.Warnings[i], setting) {
					t.Errorf("warning %q does not name %s", h.Warnings[i], setting)
				}
				if !strings.Contains(page, `<div class="notice insecure" role="alert">`) ||
					!strings.Contains(page, template.HTMLEscapeString(h.Warnings[i])) {
					t.Errorf("page does not show the warning %q", h.Warnings[i])
				}
			}
			if len(tc.want) == 0 && strings.Contains(page, "notice insecure") {
				t.Error("a secure agent's page shows an insecure banner")
			}
			if got := s.Warnings(); len(got) != len(h.Warnings) {
				t.Errorf("Warnings() = %q, /healthz %q", got, h.Warnings)
			}
		})
	}

	// Setting a token clears its warning at once.
	ts, _, s := testServer(t, "")
	if h := getHealth(t, ts.URL); len(h.Warnings) != 1 {
		t.Fatalf("warnings %q, want the open-writes one", h.Warnings)
	}
	s.SetToken("t0ken")
	if h := getHealth(t, ts.URL); len(h.Warnings) != 0 {
		t.Fatalf("warnings %q after a token was set, want none", h.Warnings)
	}
}

package api

import (
	"context"
	"errors"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeDesired is the fake backend's desired table.
type fakeDesired struct {
	table map[string]apitypes.DesiredService
	err   error
}

func (f *fakeBackend) Desired() []apitypes.DesiredService {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []apitypes.DesiredService
	for _, d := range f.desired.table {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b apitypes.DesiredService) int { return cmpString(a.Service, b.Service) })
	return out
}

func (f *fakeBackend) DesiredFor(service string) (apitypes.DesiredService, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.desired.table[service]
	return d, ok
}

func (f *fakeBackend) ChangeDesired(_ context.Context, service string, c apitypes.DesiredChange) (apitypes.DesiredService, error) {
	f.writes.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.desired.err != nil {
		return apitypes.DesiredService{}, f.desired.err
	}
	if f.desired.table == nil {
		f.desired.table = map[string]apitypes.DesiredService{}
	}
	d := f.desired.table[service]
	if c.Replicas != nil {
		d.Replicas = *c.Replicas
	} else {
		d.Replicas = max(0, d.Replicas+*c.Delta)
	}
	d.Service, d.Version, d.UpdatedBy, d.UpdatedAt = service, d.Version+1, f.self, time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	f.desired.table[service] = d
	return d, nil
}

func TestDesiredRoutes(t *testing.T) {
	const token = "tok"
	ts, f, _ := testServer(t, token)
	u := ts.URL + "/v1/desired"

	call(t, "GET", u, "", nil).expect(t, 200, `{"services":[]}`)
	call(t, "GET", u+"/nginx_webserver", "", nil).expect(t, 404, "")

	// Writes need the token and never reach the backend without it.
	call(t, "PUT", u+"/nginx_webserver", "", strings.NewReader(`{"delta":2}`)).expect(t, 401, "")
	if n := f.writes.Load(); n != 0 {
		t.Fatalf("unauthorised write reached the backend %d times", n)
	}

	const at = `"updated_at":"2025-05-01T12:00:00Z"`
	call(t, "PUT", u+"/nginx_webserver", token, strings.NewReader(`{"delta":2}`)).
		expect(t, 200, `{"service":"nginx_webserver","replicas":2,"version":1,"updated_by":"pi-1",`+at+`}`)
	call(t, "PUT", u+"/nginx_webserver", token, strings.NewReader(`{"delta":-5}`)).
		expect(t, 200, `{"service":"nginx_webserver","replicas":0,"version":2,"updated_by":"pi-1",`+at+`}`)
	call(t, "PUT", u+"/redis", token, strings.NewReader(`{"replicas":1}`)).expect(t, 200, "")
	call(t, "GET", u+"/nginx_webserver", "", nil).expect(t, 200, `{"service":"nginx_webserver","replicas":0,"version":2,"updated_by":"pi-1",`+at+`}`)
	a := call(t, "GET", u, "", nil)
	a.expect(t, 200, "")
	if i, j := strings.Index(a.body, "nginx_webserver"), strings.Index(a.body, "redis"); i < 0 || j < i {
		t.Errorf("GET /v1/desired = %s, want both services sorted", a.body)
	}

	writes := f.writes.Load()
	for _, bad := range []struct{ path, body, want string }{
		{"/nginx_webserver", `{"replicas":1,"delta":1}`, "not both"},
		{"/nginx_webserver", `{}`, "(a count)"},
		{"/nginx_webserver", `{"replicas":-1}`, "negative"},
		{"/nginx_webserver", `{"replica":1}`, "unknown field"},
		{"/nginx_webserver", `{"delta":1}{"delta":1}`, "one JSON object"},
		{"/nginx_webserver", `not json`, "invalid body"},
		{"/Bad_Name", `{"delta":1}`, "invalid service name"},
	} {
		a := call(t, "PUT", u+bad.path, token, strings.NewReader(bad.body))
		if a.code != http.StatusBadRequest || !strings.Contains(a.body, bad.want) {
			t.Errorf("PUT %s %s: %d %s, want 400 mentioning %q", bad.path, bad.body, a.code, a.body, bad.want)
		}
	}
	if f.writes.Load() != writes {
		t.Errorf("invalid bodies reached the backend")
	}

	f.mu.Lock()
	f.desired.err = errors.New("the desired table is full (4096 services)")
	f.mu.Unlock()
	a = call(t, "PUT", u+"/one-too-many", token, strings.NewReader(`{"replicas":1}`))
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "full") {
		t.Errorf("backend refusal: %d %s, want 400 with its reason", a.code, a.body)
	}
	call(t, "DELETE", u+"/redis", token, nil).expect(t, 405, "")
}

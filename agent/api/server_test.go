package api

import (
	"encoding/json"
	"errors"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// testServer serves a fakeBackend holding testNodes over real HTTP.
func testServer(t *testing.T, token string, nodes ...apitypes.Node) (*httptest.Server, *fakeBackend, *Server) {
	t.Helper()
	return testServerWith(t, token, nil, nodes...)
}

// testServerWith lets configure adjust the Server before it serves.
func testServerWith(t *testing.T, token string, configure func(*Server), nodes ...apitypes.Node) (*httptest.Server, *fakeBackend, *Server) {
	t.Helper()
	if nodes == nil {
		nodes = testNodes()
	}
	f := newFakeBackend("pi-1", nodes...)
	s := NewServer(f, Options{Token: token, Version: "v1.2.3"})
	if configure != nil {
		configure(s)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Shutdown()
		ts.Close()
	})
	return ts, f, s
}

type answer struct {
	code   int
	header http.Header
	body   string
}

// call sends one request; token "" sends no Authorization header.
func call(t *testing.T, method, u, token string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return answer{code: resp.StatusCode, header: resp.Header, body: string(data)}
}

func (a answer) expect(t *testing.T, code int, body string) {
	t.Helper()
	if a.code != code {
		t.Errorf("status %d, want %d (body %s)", a.code, code, a.body)
	}
	if body != "" && strings.TrimSpace(a.body) != body {
		t.Errorf("body\n got %s\nwant %s", strings.TrimSpace(a.body), body)
	}
	if ct := a.header.Get("Content-Type"); a.code != http.StatusOK || strings.HasPrefix(strings.TrimSpace(a.body), "{") || strings.HasPrefix(a.body, "[") {
		if ct != "application/json; charset=utf-8" {
			t.Errorf("Content-Type %q, want JSON", ct)
		}
	}
	if a.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options missing")
	}
}

// errorBody decodes an error answer and checks it has exactly the key of its
// API family: "err" on the seed paths, "error" on the rest.
func errorBody(t *testing.T, a answer, key string) string {
	t.Helper()
	var m map[string]string
	if err := json.Unmarshal([]byte(a.body), &m); err != nil {
		t.Fatalf("error body %q is not a JSON object of strings: %v", a.body, err)
	}
	if len(m) != 1 || m[key] == "" {
		t.Fatalf("error body %s: want exactly one non-empty key %q", a.body, key)
	}
	return m[key]
}

func TestSeedShapes(t *testing.T) {
	ts, f, _ := testServer(t, "")

	call(t, "GET", ts.URL+"/nodes/alive", "", nil).
		expect(t, 200, `{"alivePeers":["10.0.0.11:7946","10.0.0.12:7946"]}`)

	// cpus is the busy fraction, freemem total-used; only available nodes
	// are listed: suspect pi-3 and failed pi-4 are left out, as from
	// /nodes/alive.
	call(t, "GET", ts.URL+"/nodes/monitoring", "", nil).expect(t, 200, `{"res":[`+
		`{"name":"pi-1","ip":"10.0.0.11","countCPUs":4,"cpus":0.125,"freemem":3221225472,"totalmem":4294967296,"loadavg1":0.52,"loadavg5":0.4,"loadavg15":0.31},`+
		`{"name":"pi-2","ip":"10.0.0.12","countCPUs":4,"cpus":0.55,"freemem":2147483648,"totalmem":8589934592,"loadavg1":2.1,"loadavg5":1.7,"loadavg15":1.2}]}`)

	call(t, "GET", ts.URL+"/nodes/workingService/nginx_webserver", "", nil).
		expect(t, 200, `{"res":["10.0.0.11","10.0.0.12"]}`)
	// pi-4 still lists redis in its last record but has failed.
	call(t, "GET", ts.URL+"/nodes/workingService/redis", "", nil).expect(t, 200, `{"res":["10.0.0.12"]}`)
	call(t, "GET", ts.URL+"/nodes/workingService/nobody-runs-this", "", nil).expect(t, 200, `{"res":[]}`)

	call(t, "PUT", ts.URL+"/meta-data/add-service/haproxy", "", nil).expect(t, 200, `{"service":"haproxy"}`)
	call(t, "GET", ts.URL+"/nodes/workingService/haproxy", "", nil).expect(t, 200, `{"res":["10.0.0.11"]}`)
	// Added twice: still answers the service, and is stored once.
	call(t, "PUT", ts.URL+"/meta-data/add-service/haproxy", "", nil).expect(t, 200, `{"service":"haproxy"}`)
	if got := f.Self().Services; !slices.Equal(got, []string{"haproxy", "nginx_webserver"}) {
		t.Errorf("services after adding twice = %q", got)
	}
	call(t, "PUT", ts.URL+"/meta-data/remove-service/haproxy", "", nil).expect(t, 200, `{"service":"haproxy"}`)
	call(t, "GET", ts.URL+"/nodes/workingService/haproxy", "", nil).expect(t, 200, `{"res":[]}`)

	f.writeErr = errors.New("write meta-data /var/lib/rpi-cluster/meta-data.json: disk full")
	a := call(t, "PUT", ts.URL+"/meta-data/add-service/x", "", nil)
	a.expect(t, 500, "")
	if msg := errorBody(t, a, "err"); !strings.Contains(msg, "disk full") {
		t.Errorf("backend error not reported: %q", msg)
	}
}

func TestV1Routes(t *testing.T) {
	ts, _, _ := testServer(t, "")

	a := call(t, "GET", ts.URL+"/v1/nodes", "", nil)
	a.expect(t, 200, "")
	var nodes []apitypes.Node
	if err := json.Unmarshal([]byte(a.body), &nodes); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name+":"+n.Status)
		if n.Self != (n.Name == "pi-1") {
			t.Errorf("node %s: self = %v", n.Name, n.Self)
		}
	}
	if want := []string{"pi-1:alive", "pi-2:alive", "pi-3:suspect", "pi-4:failed"}; !slices.Equal(names, want) {
		t.Errorf("nodes = %q, want %q", names, want)
	}
	// Lists are [] rather than null, so scripts can iterate without checks.
	if !strings.Contains(a.body, `"name":"pi-3","address":"10.0.0.13","gossip_port":7947,"http_port":8080,"status":"suspect","services":[]`) {
		t.Errorf("pi-3 not encoded with an empty service list: %s", a.body)
	}
	if !strings.Contains(a.body, `"temp_c":null`) || !strings.Contains(a.body, `"temp_c":48.3`) {
		t.Errorf("temp_c not null where absent and a number where present: %s", a.body)
	}

	a = call(t, "GET", ts.URL+"/v1/nodes/pi-3", "", nil)
	a.expect(t, 200, "")
	var n apitypes.Node
	if err := json.Unmarshal([]byte(a.body), &n); err != nil || n.Name != "pi-3" || n.Phi != 6.1 || n.PhiThreshold != 8 {
		t.Errorf("GET /v1/nodes/pi-3 = %+v, %v", n, err)
	}
	a = call(t, "GET", ts.URL+"/v1/nodes/"+url.PathEscape("no such node"), "", nil)
	a.expect(t, 404, "")
	if msg := errorBody(t, a, "error"); !strings.Contains(msg, `"no such node"`) {
		t.Errorf("404 message %q does not name the node", msg)
	}

	a = call(t, "GET", ts.URL+"/v1/self", "", nil)
	a.expect(t, 200, "")
	if err := json.Unmarshal([]byte(a.body), &n); err != nil || n.Name != "pi-1" || !n.Self {
		t.Errorf("GET /v1/self = %+v, %v", n, err)
	}

	a = call(t, "GET", ts.URL+"/v1/services/redis", "", nil)
	a.expect(t, 200, "")
	nodes = nil
	if err := json.Unmarshal([]byte(a.body), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].Name != "pi-2" || nodes[1].Name != "pi-4" || nodes[1].Status != apitypes.StatusFailed {
		t.Errorf("GET /v1/services/redis = %+v, want pi-2 and the failed pi-4", nodes)
	}
	call(t, "GET", ts.URL+"/v1/services/none", "", nil).expect(t, 200, `[]`)

	call(t, "PUT", ts.URL+"/v1/services/haproxy", "", nil).
		expect(t, 200, `{"node":"pi-1","service":"haproxy","changed":true,"services":["haproxy","nginx_webserver"]}`)
	call(t, "PUT", ts.URL+"/v1/services/haproxy", "", nil).
		expect(t, 200, `{"node":"pi-1","service":"haproxy","changed":false,"services":["haproxy","nginx_webserver"]}`)
	call(t, "DELETE", ts.URL+"/v1/services/haproxy", "", nil).
		expect(t, 200, `{"node":"pi-1","service":"haproxy","changed":true,"services":["nginx_webserver"]}`)
	call(t, "DELETE", ts.URL+"/v1/services/haproxy", "", nil).
		expect(t, 200, `{"node":"pi-1","service":"haproxy","changed":false,"services":["nginx_webserver"]}`)

	call(t, "GET", ts.URL+"/healthz", "", nil).expect(t, 200, `{"status":"ok","node":"pi-1","warnings":["`+warnOpenWrites+`"]}`)
	if a := call(t, "HEAD", ts.URL+"/healthz", "", nil); a.code != 200 || a.body != "" {
		t.Errorf("HEAD /healthz = %d %q", a.code, a.body)
	}
}

func TestAuth(t *testing.T) {
	const token = "s3cret-token"
	ts, f, _ := testServer(t, token)
	writes := []struct{ method, path, key string }{
		{"PUT", "/meta-data/add-service/x", "err"},
		{"PUT", "/meta-data/remove-service/nginx_webserver", "err"},
		{"PUT", "/v1/services/x", "error"},
		{"DELETE", "/v1/services/nginx_webserver", "error"},
	}
	for _, w := range writes {
		for _, bad := range []string{"", "wrong", token + "x", strings.ToUpper(token)} {
			a := call(t, w.method, ts.URL+w.path, bad, nil)
			a.expect(t, 401, "")
			if got := a.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("%s %s: WWW-Authenticate %q", w.method, w.path, got)
			}
			errorBody(t, a, w.key)
		}
		// Not even invalid names get past a missing token.
		call(t, w.method, ts.URL+strings.Replace(w.path, "/x", "/BAD", 1), "", nil).expect(t, 401, "")
	}
	if n := f.writes.Load(); n != 0 {
		t.Fatalf("backend got %d writes from unauthorized requests", n)
	}
	if got := f.Self().Services; !slices.Equal(got, []string{"nginx_webserver"}) {
		t.Fatalf("services changed by unauthorized requests: %q", got)
	}

	for _, w := range writes {
		call(t, w.method, ts.URL+w.path, token, nil).expect(t, 200, "")
	}
	if n := f.writes.Load(); n != int64(len(writes)) {
		t.Errorf("backend got %d writes, want %d", n, len(writes))
	}
	if got := f.Self().Services; !slices.Equal(got, []string{"x"}) {
		t.Errorf("services after authorized writes = %q, want [x]", got)
	}
	// Reads need no token.
	for _, p := range []string{"/nodes/alive", "/v1/nodes", "/v1/self", "/healthz", "/metrics", "/"} {
		if a := call(t, "GET", ts.URL+p, "", nil); a.code != 200 {
			t.Errorf("GET %s without token = %d", p, a.code)
		}
	}
}

func TestServiceNameValidation(t *testing.T) {
	ts, f, _ := testServer(t, "")
	bad := []struct{ name, escaped string }{
		{"../etc", url.PathEscape("../etc")},
		{"raw ../etc", "../etc"},
		{"a/b", "a/b"},
		{"empty", ""},
		{"300 chars", strings.Repeat("a", 300)},
		{"non-ASCII", url.PathEscape("café")},
		{"uppercase", "Nginx"},
		{"leading dot", ".hidden"},
		{"space", url.PathEscape("two words")},
		{"NUL", "%00"},
	}
	routes := []struct{ method, prefix, key string }{
		{"PUT", "/meta-data/add-service/", "err"},
		{"PUT", "/meta-data/remove-service/", "err"},
		{"GET", "/nodes/workingService/", "err"},
		{"PUT", "/v1/services/", "error"},
		{"DELETE", "/v1/services/", "error"},
		{"GET", "/v1/services/", "error"},
	}
	for _, r := range routes {
		for _, b := range bad {
			t.Run(r.method+r.prefix+b.name, func(t *testing.T) {
				a := call(t, r.method, ts.URL+r.prefix+b.escaped, "", nil)
				a.expect(t, 400, "")
				msg := errorBody(t, a, r.key)
				if !strings.Contains(msg, "invalid") {
					t.Errorf("message %q does not say what is wrong", msg)
				}
			})
		}
	}
	if n := f.writes.Load(); n != 0 {
		t.Fatalf("backend got %d writes for invalid names", n)
	}
	// The longest valid name passes.
	call(t, "PUT", ts.URL+"/v1/services/"+strings.Repeat("a", 63), "", nil).expect(t, 200, "")
}

func TestErrorsAndLimits(t *testing.T) {
	ts, f, _ := testServer(t, "")

	a := call(t, "GET", ts.URL+"/no/such/path", "", nil)
	a.expect(t, 404, "")
	errorBody(t, a, "error")

	a = call(t, "POST", ts.URL+"/v1/nodes", "", nil)
	a.expect(t, 405, "")
	errorBody(t, a, "error")
	if got := a.header.Get("Allow"); got != "GET, HEAD" {
		t.Errorf("Allow %q", got)
	}
	a = call(t, "GET", ts.URL+"/meta-data/add-service/x", "", nil)
	a.expect(t, 405, "")
	errorBody(t, a, "err")
	if got := a.header.Get("Allow"); got != "PUT" {
		t.Errorf("Allow %q", got)
	}
	a = call(t, "POST", ts.URL+"/v1/services/x", "", nil)
	a.expect(t, 405, "")
	if got := a.header.Get("Allow"); got != "DELETE, GET, HEAD, PUT" {
		t.Errorf("Allow %q", got)
	}

	// Oversized bodies are refused before anything is written, whether the
	// length is announced or streamed.
	big := strings.Repeat("x", DefaultMaxBodyBytes+1)
	a = call(t, "PUT", ts.URL+"/v1/services/x", "", strings.NewReader(big))
	a.expect(t, 413, "")
	errorBody(t, a, "error")
	a = call(t, "PUT", ts.URL+"/meta-data/add-service/x", "", io.MultiReader(strings.NewReader(big)))
	a.expect(t, 413, "")
	errorBody(t, a, "err")
	if n := f.writes.Load(); n != 0 {
		t.Fatalf("backend got %d writes from oversized requests", n)
	}
	call(t, "PUT", ts.URL+"/v1/services/x", "", strings.NewReader("{}")).expect(t, 200, "")

	a = call(t, "GET", ts.URL+"/assets/nope.js", "", nil)
	a.expect(t, 404, "")
	errorBody(t, a, "error")
}

func TestPageHeadersAndAssets(t *testing.T) {
	ts, _, _ := testServer(t, "")
	a := call(t, "GET", ts.URL+"/", "", nil)
	if a.code != 200 || a.header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %d %q", a.code, a.header.Get("Content-Type"))
	}
	csp := a.header.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP allows unsafe sources: %q", csp)
	}
	if strings.Contains(a.body, "http://") && strings.Contains(a.body, "cdn") || strings.Contains(a.body, "https://") {
		t.Errorf("page refers to an external resource")
	}
	for _, asset := range []struct{ path, ct string }{
		{assetURL("app.js"), "text/javascript; charset=utf-8"},
		{assetURL("style.css"), "text/css; charset=utf-8"},
	} {
		if !strings.Contains(a.body, `"`+asset.path+`"`) {
			t.Errorf("page does not load %s", asset.path)
		}
		r := call(t, "GET", ts.URL+asset.path, "", nil)
		if r.code != 200 || r.header.Get("Content-Type") != asset.ct || r.body == "" {
			t.Errorf("GET %s = %d %q (%d bytes)", asset.path, r.code, r.header.Get("Content-Type"), len(r.body))
		}
		req, _ := http.NewRequest("GET", ts.URL+asset.path, nil)
		req.Header.Set("If-None-Match", r.header.Get("ETag"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag = %d, want 304", asset.path, resp.StatusCode)
		}
	}
}

func TestPageRendersServerSide(t *testing.T) {
	nodes := testNodes()
	nodes[1].Name = `<img src=x onerror=alert(1)>`
	nodes[1].Services = []string{`"><script>alert(2)</script>`}
	ts, _, _ := testServer(t, "", nodes...)
	body := call(t, "GET", ts.URL+"/", "", nil).body

	for _, want := range []string{
		`<span class="node-name">&lt;img src=x onerror=alert(1)&gt;</span>`,
		`&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;`,
		`as seen by <strong id="self">pi-1</strong>`,
		`<span class="badge suspect">suspect</span>`,
		`<span class="phi-text">6.10 / 8</span>`,
		`<span class="phi-text">14.20 / 8</span>`,
		`<td data-label="Temp" class="num temp">48.3 °C</td>`,
		`<td data-label="Memory" class="mem">1.0 GiB / 4.0 GiB</td>`,
		`<li class="count left zero"><b>0</b> left</li>`,
		`<div class="notice alone" id="alone" hidden>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, bad := range []string{"<img src=x", "<script>alert"} {
		if strings.Contains(body, bad) {
			t.Errorf("page contains unescaped gossiped text %q", bad)
		}
	}
	if n := strings.Count(body, `<tr class="node `); n != 4 {
		t.Errorf("page has %d node rows, want 4", n)
	}

	// One member: the page says so.
	alone, _, _ := testServer(t, "", testNodes()[0])
	body = call(t, "GET", alone.URL+"/", "", nil).body
	if !strings.Contains(body, `<div class="notice alone" id="alone">`) || !strings.Contains(body, "This node is alone") {
		t.Errorf("single-member page does not show the alone notice")
	}
}

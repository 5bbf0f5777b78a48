package browser

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFindHonoursEnvironment(t *testing.T) {
	t.Setenv("CHROMIUM", "/nonexistent/chromium")
	if _, err := Find(); err == nil || !strings.Contains(err.Error(), "/nonexistent/chromium") {
		t.Fatalf("Find with a bad $CHROMIUM = %v, want an error naming it", err)
	}
	t.Setenv("CHROMIUM", "")
	t.Setenv("PATH", t.TempDir())
	if _, err := Find(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Find with an empty PATH = %v, want ErrNotFound", err)
	}
}

func TestResolverRulesKeepLoopbackOnly(t *testing.T) {
	got := resolverRules([]string{"172.18.*"})
	want := "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*, EXCLUDE [::1], EXCLUDE 172.18.*"
	if got != want {
		t.Fatalf("resolverRules = %q, want %q", got, want)
	}
}

// A page that fills itself in late and holds a stream open: DumpDOM waits for
// the script's result in real time and does not hang on the open stream.
func TestDumpDOMWaitsForScript(t *testing.T) {
	if _, err := Find(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<!doctype html><title>t</title><p id="out">waiting</p><script src="/app.js"></script>`))
	})
	mux.HandleFunc("/app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write([]byte(`new EventSource('/stream');
setTimeout(() => { document.getElementById('out').textContent = 'done & dusted'; }, 300);`))
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	defer ts.CloseClientConnections()

	o := Options{WaitFor: `document.getElementById('out').textContent !== 'waiting'`, Timeout: 30 * time.Second}
	dom, err := DumpDOM(context.Background(), ts.URL+"/", o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dom, `<p id="out">done &amp; dusted</p>`) {
		t.Fatalf("DOM does not show the script's result:\n%s", dom)
	}

	file := filepath.Join(t.TempDir(), "page.png")
	if err := Screenshot(context.Background(), ts.URL+"/", file, o); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil || !strings.HasPrefix(string(data), "\x89PNG") {
		t.Fatalf("screenshot is not a PNG (%v)", err)
	}

	// A condition that never holds ends with an error naming it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = DumpDOM(ctx, ts.URL+"/", Options{WaitFor: "window.never === true"})
	if err == nil || !strings.Contains(err.Error(), "window.never") {
		t.Fatalf("DumpDOM with an impossible condition = %v", err)
	}
}

package api

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"html/template"
	"math"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The page and its assets are embedded: Pis are often offline, so nothing
// comes from a CDN.
//
//go:embed web/index.html web/app.js web/style.css
var webFS embed.FS

// pageCSP lets the page load only its own script and stylesheet and talk
// only to its own agent. Scripts build the DOM with textContent, never HTML.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset is an embedded static file with its validator.
type asset struct {
	data        []byte
	contentType string
	etag        string
}

// The page and its assets are prepared on first use, not at start: every
// workstation tool links this package for its wire types, and an agent
// whose page nobody opens keeps neither the parsed template nor the parser's
// code in memory.
var (
	pageTmpl = sync.OnceValue(func() *template.Template {
		return template.Must(template.ParseFS(webFS, "web/index.html"))
	})
	assets = sync.OnceValue(loadAssets)
)

func loadAssets() map[string]asset {
	types := map[string]string{
		"app.js":    "text/javascript; charset=utf-8",
		"style.css": "text/css; charset=utf-8",
	}
	m := make(map[string]asset, len(types))
	for name, ct := range types {
		data, err := webFS.ReadFile("web/" + name)
		if err != nil {
			panic(fmt.Sprintf("embedded asset %s: %v", name, err)) // a build error, not a runtime one
		}
		sum := sha256.Sum256(data)
		m[name] = asset{data: data, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return m
}

// assetURL returns the path of an embedded asset with its content hash as a
// query, so browsers fetch a new version after an upgrade.
func assetURL(name string) string {
	return "/assets/" + name + "?v=" + strings.Trim(assets()[name].etag, `"`)
}

func (s *Server) asset(w http.ResponseWriter, r *http.Request) {
	a, ok := assets()[r.PathValue("file")]
	if !ok {
		s.writeError(w, styleV1, http.StatusNotFound, fmt.Sprintf("no such asset %q", r.PathValue("file")))
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache") // revalidate: cheap with the ETag
	http.ServeContent(w, r, path.Base(r.URL.Path), time.Time{}, bytes.NewReader(a.data))
}

// pageData is the server-side view of the status page. The script renders
// the same structure from /v1/nodes once it runs.
type pageData struct {
	Self, Version       string
	StyleURL, ScriptURL string
	Total               int
	Counts              []statusCount
	Alone               bool
	Warnings            []string
	Conflicts           []apitypes.KeyConflict
	Rows                []pageRow
	Rendered            string
}

type statusCount struct {
	Status string
	N      int
}

type pageRow struct {
	Name, Address, URL      string
	GossipPort              int
	Status, StatusClass     string
	Self                    bool
	Model                   string
	Phi                     string
	PhiValue, PhiMax        float64
	PhiLow, PhiHigh         float64
	CPU, Memory, Load, Temp string
	Services                []string
}

func (s *Server) page(w http.ResponseWriter, _ *http.Request) {
	self := s.self()
	nodes := s.nodes()
	d := pageData{
		Self:      self.Name,
		Version:   s.version,
		StyleURL:  assetURL("style.css"),
		ScriptURL: assetURL("app.js"),
		Total:     len(nodes),
		Alone:     len(nodes) <= 1,
		Warnings:  s.Warnings(),
		Conflicts: s.b.KeyConflicts(),
		Rendered:  time.Now().Format("15:04:05"),
	}
	count := map[string]int{}
	for _, n := range nodes {
		count[n.Status]++
		d.Rows = append(d.Rows, newPageRow(n))
	}
	for _, st := range []string{apitypes.StatusAlive, apitypes.StatusSuspect, apitypes.StatusFailed, apitypes.StatusLeft} {
		d.Counts = append(d.Counts, statusCount{Status: st, N: count[st]})
	}

	var buf bytes.Buffer
	if err := pageTmpl().Execute(&buf, d); err != nil {
		s.log.Error("render status page", "err", err)
		s.writeError(w, styleV1, http.StatusInternalServerError, "render status page: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(buf.Bytes())
}

// newPageRow formats one node. The formats match app.js.
func newPageRow(n apitypes.Node) pageRow {
	m := n.Monitoring
	threshold := n.PhiThreshold
	if threshold <= 0 {
		threshold = 8
	}
	r := pageRow{
		Name:        n.Name,
		Address:     n.Address,
		URL:         nodeURL(n),
		GossipPort:  n.GossipPort,
		Status:      n.Status,
		StatusClass: statusClass(n.Status),
		Self:        n.Self,
		Model:       n.Model,
		Phi:         formatPhi(n.Phi) + " / " + strconv.FormatFloat(threshold, 'f', -1, 64),
		PhiValue:    math.Min(n.Phi, threshold),
		PhiMax:      threshold,
		PhiLow:      threshold / 2,
		PhiHigh:     threshold * 0.8,
		CPU:         fmt.Sprintf("%.0f %%", m.CPUPercent),
		Memory:      "—",
		Load:        fmt.Sprintf("%.2f / %.2f / %.2f", m.Load1, m.Load5, m.Load15),
		Temp:        "—",
		Services:    n.Services,
	}
	if m.MemTotal > 0 {
		r.Memory = formatBytes(m.MemUsed) + " / " + formatBytes(m.MemTotal)
	}
	if m.TempC != nil {
		r.Temp = fmt.Sprintf("%.1f °C", *m.TempC)
	}
	if r.Model == "" {
		r.Model = n.Arch
	}
	return r
}

// statusClass maps a status to a CSS class, never passing gossiped text
// through.
func statusClass(status string) string {
	switch status {
	case apitypes.StatusAlive, apitypes.StatusSuspect, apitypes.StatusFailed, apitypes.StatusLeft:
		return status
	}
	return "unknown"
}

// nodeURL links to a node's own status page when its address is an IP.
func nodeURL(n apitypes.Node) string {
	if net.ParseIP(n.Address) == nil || n.HTTPPort <= 0 || n.HTTPPort > 65535 {
		return ""
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(n.Address, strconv.Itoa(n.HTTPPort)), Path: "/"}
	return u.String()
}

func formatPhi(phi float64) string {
	if phi >= 1e6 {
		return "∞"
	}
	return strconv.FormatFloat(phi, 'f', 2, 64)
}

func formatBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	v, exp := float64(b), 0
	for v >= unit && exp < 4 {
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[exp-1])
}

package launcher

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/template"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// TemplateSuffix is stripped from rendered file names ("upstream.conf.tmpl"
// → "upstream.conf"). Files without it are rendered too.
const TemplateSuffix = ".tmpl"

// TemplateData is what templates/<service>/* see.
type TemplateData struct {
	// Cluster is the cluster name.
	Cluster string
	// Nodes are all nodes in the cluster view, sorted by name.
	Nodes []apitypes.Node
	// Alive are the alive nodes, sorted by name.
	Alive []apitypes.Node
	// Targets are the nodes this render is applied to (the chosen nodes on
	// a launch; the nodes running the service on a re-apply).
	Targets []apitypes.Node
	// Self is Targets, for templates that read as "the nodes I run on".
	Self []apitypes.Node
}

// Service returns the alive nodes running name after the change being made,
// sorted by name: {{ range .Service "nginx_webserver" }}{{ .Address }}{{ end }}.
// Suspect, failed and left nodes are left out, as in the inventory's service
// groups.
func (d TemplateData) Service(name string) []apitypes.Node {
	var out []apitypes.Node
	for _, n := range d.Alive {
		if slices.Contains(n.Services, name) {
			out = append(out, n)
		}
	}
	return out
}

// NewTemplateData builds the data for a render from the cluster view as it
// will be after the change.
func NewTemplateData(cluster string, nodes, targets []apitypes.Node) TemplateData {
	d := TemplateData{Cluster: cluster, Nodes: sortedByName(nodes), Targets: sortedByName(targets)}
	d.Self = d.Targets
	for _, n := range d.Nodes {
		if n.Status == apitypes.StatusAlive {
			d.Alive = append(d.Alive, n)
		}
	}
	return d
}

// RenderedFile is one file written by Render.
type RenderedFile struct {
	// Path is relative to the build directory.
	Path    string
	Content []byte
}

// Render renders every file under srcDir with data. With outDir set, the
// files replace outDir's content (written to a fresh directory that is
// renamed into place, so the playbook never sees half a render); with outDir
// empty nothing is written (dry run). A missing srcDir renders nothing.
func Render(srcDir, outDir string, data TemplateData) ([]RenderedFile, error) {
	var files []RenderedFile
	err := filepath.WalkDir(srcDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(srcDir, path)
		if err != nil {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		t, err := template.New(rel).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return fmt.Errorf("parse template: %w", err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return fmt.Errorf("render template: %w", err)
		}
		files = append(files, RenderedFile{Path: strings.TrimSuffix(rel, TemplateSuffix), Content: b.Bytes()})
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		files, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", srcDir, err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	if outDir == "" {
		return files, nil
	}
	return files, writeBuild(outDir, files)
}

func writeBuild(outDir string, files []RenderedFile) error {
	parent := filepath.Dir(outDir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("write build dir %s: %w", outDir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(outDir)+".new-*")
	if err != nil {
		return fmt.Errorf("write build dir %s: %w", outDir, err)
	}
	for _, f := range files {
		p := filepath.Join(tmp, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("write build dir %s: %w", outDir, err)
		}
		if err := os.WriteFile(p, f.Content, 0o644); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("write build dir %s: %w", outDir, err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("write build dir %s: %w", outDir, err)
	}
	if err := os.RemoveAll(outDir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("write build dir %s: %w", outDir, err)
	}
	if err := os.Rename(tmp, outDir); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("write build dir %s: %w", outDir, err)
	}
	return nil
}

package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// play is the part of an Ansible play this package reads.
type play struct {
	Hosts          yaml.Node `yaml:"hosts"`
	ImportPlaybook string    `yaml:"import_playbook"`
	ImportBuiltin  string    `yaml:"ansible.builtin.import_playbook"`
}

// PlaybookGroups returns the group names the plays in the playbook at path
// target, in first-seen order, following import_playbook relative to the
// importing file. Host patterns are split on ',' and ':', and the '!' and '&'
// operators are dropped so their group names are kept. Patterns that are not
// plain group names (wildcards, regular expressions, Jinja) cannot be filled
// from the cluster; each is reported in warnings.
func PlaybookGroups(path string) (groups, warnings []string, err error) {
	p := &playbookParser{seen: map[string]bool{}, groupSeen: map[string]bool{}}
	if err := p.parse(path, nil); err != nil {
		return nil, nil, err
	}
	return p.groups, p.warnings, nil
}

type playbookParser struct {
	seen      map[string]bool
	groupSeen map[string]bool
	groups    []string
	warnings  []string
}

func (p *playbookParser) parse(path string, stack []string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("read playbook %s: %w", path, err)
	}
	for _, s := range stack {
		if s == abs {
			return fmt.Errorf("read playbook %s: import cycle: %s -> %s", path, strings.Join(stack, " -> "), abs)
		}
	}
	if p.seen[abs] {
		return nil
	}
	p.seen[abs] = true
	data, err := os.ReadFile(abs)
	if err != nil {
		return fmt.Errorf("read playbook %s: %w", path, err)
	}
	var plays []play
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&plays); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("parse playbook %s: expected a list of plays: %w", path, err)
	}
	for i, pl := range plays {
		imp := pl.ImportPlaybook
		if imp == "" {
			imp = pl.ImportBuiltin
		}
		if imp != "" {
			if strings.Contains(imp, "{{") {
				p.warnings = append(p.warnings, fmt.Sprintf("%s play %d: import_playbook %q is templated; not followed", path, i+1, imp))
				continue
			}
			if !filepath.IsAbs(imp) {
				imp = filepath.Join(filepath.Dir(abs), imp)
			}
			if err := p.parse(imp, append(stack, abs)); err != nil {
				return err
			}
			continue
		}
		patterns, err := hostPatterns(&pl.Hosts)
		if err != nil {
			return fmt.Errorf("parse playbook %s play %d: %w", path, i+1, err)
		}
		for _, pat := range patterns {
			p.addPattern(path, i+1, pat)
		}
	}
	return nil
}

// hostPatterns reads a play's hosts: a string or a list of strings.
func hostPatterns(n *yaml.Node) ([]string, error) {
	switch n.Kind {
	case 0:
		return nil, nil
	case yaml.ScalarNode:
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		var out []string
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: hosts entries must be strings", c.Line)
			}
			out = append(out, c.Value)
		}
		return out, nil
	}
	return nil, fmt.Errorf("line %d: hosts must be a string or a list of strings", n.Line)
}

func (p *playbookParser) addPattern(path string, playNo int, pattern string) {
	if strings.Contains(pattern, "{{") {
		p.warnings = append(p.warnings, fmt.Sprintf("%s play %d: hosts %q is templated; cannot fill it from the cluster", path, playNo, pattern))
		return
	}
	for _, part := range splitPattern(pattern) {
		name := strings.TrimLeft(strings.TrimSpace(part), "!&")
		if i := strings.IndexByte(name, '['); i > 0 { // webservers[0:2]
			name = name[:i]
		}
		switch {
		case name == "":
			continue
		case strings.HasPrefix(name, "~") || strings.ContainsAny(name, "*?[]"):
			p.warnings = append(p.warnings, fmt.Sprintf("%s play %d: host pattern %q is not a group name; skipped", path, playNo, part))
			continue
		}
		if !p.groupSeen[name] {
			p.groupSeen[name] = true
			p.groups = append(p.groups, name)
		}
	}
}

// splitPattern splits a host pattern on ',' and ':' outside brackets, so the
// subscript in "webservers[0:2]" stays whole.
func splitPattern(pattern string) []string {
	var parts []string
	depth, start := 0, 0
	for i, r := range pattern {
		switch r {
		case '[':
			depth++
		case ']':
			if depth > 0 {
				depth--
			}
		case ',', ':':
			if depth == 0 {
				parts = append(parts, pattern[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, pattern[start:])
}

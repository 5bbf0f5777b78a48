package launcher

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPlaybooksSyntax runs ansible-playbook --syntax-check on every shipped
// playbook, and ansible-lint on them all.
func TestPlaybooksSyntax(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Skip("ansible-playbook not installed (apt-get install ansible-core)")
	}
	books, _ := filepath.Glob("../playbooks/*/*.yml")
	books = append(books, "../site.yml")
	if len(books) < 5 {
		t.Fatalf("found only %v", books)
	}
	home := t.TempDir()
	for _, b := range books {
		cmd := exec.Command("ansible-playbook", "-i", "localhost,", "--syntax-check", b)
		cmd.Env = append(os.Environ(), "ANSIBLE_HOME="+home, "ANSIBLE_LOCAL_TEMP="+home)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("syntax-check %s: %v\n%s", b, err, out)
		}
	}
	if _, err := exec.LookPath("ansible-lint"); err != nil {
		t.Skip("ansible-lint not installed (apt-get install ansible-lint)")
	}
	cmd := exec.Command("ansible-lint", "--offline", "playbooks", "site.yml")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "ANSIBLE_HOME="+home, "ANSIBLE_LOCAL_TEMP="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("ansible-lint: %v\n%s", err, out)
	}
}

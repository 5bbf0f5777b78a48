package metadata

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func fileServices(t *testing.T, path string) []string {
	t.Helper()
	var doc struct {
		Services []string `json:"services"`
	}
	if err := json.Unmarshal(readFile(t, path), &doc); err != nil {
		t.Fatalf("file %s is not valid metadata: %v", path, err)
	}
	return doc.Services
}

// tempFiles lists leftovers of interrupted writes in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "."+FileName+".tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	return matches
}

func TestOpenMissingDirAndFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "rpi-cluster")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Services(); len(got) != 0 {
		t.Fatalf("services of a new store = %v, want none", got)
	}
	if want := filepath.Join(dir, FileName); s.Path() != want {
		t.Fatalf("Path() = %q, want %q", s.Path(), want)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("data dir mode = %v, want 0755", st.Mode().Perm())
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("opening must not create the file, stat: %v", err)
	}
}

func TestAddTwiceStoredOnce(t *testing.T) {
	// The 2015 project appended without checking and stored a service
	// twice when added twice.
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	changed, err := s.Add("nginx_webserver")
	if err != nil || !changed {
		t.Fatalf("first Add = %v, %v; want true, nil", changed, err)
	}
	changed, err = s.Add("nginx_webserver")
	if err != nil || changed {
		t.Fatalf("second Add = %v, %v; want false, nil", changed, err)
	}
	if got := fileServices(t, s.Path()); !slices.Equal(got, []string{"nginx_webserver"}) {
		t.Fatalf("file services = %q, want exactly one nginx_webserver", got)
	}
	reopened, err := Open(filepath.Dir(s.Path()))
	if err != nil {
		t.Fatal(err)
	}
	if got := reopened.Services(); !slices.Equal(got, []string{"nginx_webserver"}) {
		t.Fatalf("services after reopen = %q", got)
	}
	if st, _ := os.Stat(s.Path()); st.Mode().Perm() != 0o644 {
		t.Errorf("file mode = %v, want 0644", st.Mode().Perm())
	}
}

func TestAddRemoveKeepsSortedCopy(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"redis", "haproxy", "nginx_webserver"} {
		if _, err := s.Add(name); err != nil {
			t.Fatal(err)
		}
	}
	got := s.Services()
	if want := []string{"haproxy", "nginx_webserver", "redis"}; !slices.Equal(got, want) {
		t.Fatalf("Services() = %q, want %q", got, want)
	}
	got[0] = "mutated"
	if s.Services()[0] != "haproxy" {
		t.Fatal("Services() returned the store's own slice")
	}

	changed, err := s.Remove("nginx_webserver")
	if err != nil || !changed {
		t.Fatalf("Remove = %v, %v; want true, nil", changed, err)
	}
	changed, err = s.Remove("nginx_webserver")
	if err != nil || changed {
		t.Fatalf("second Remove = %v, %v; want false, nil", changed, err)
	}
	if got, want := fileServices(t, s.Path()), []string{"haproxy", "redis"}; !slices.Equal(got, want) {
		t.Fatalf("file services = %q, want %q", got, want)
	}
	for _, name := range []string{"haproxy", "redis"} {
		if _, err := s.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(readFile(t, s.Path())); !strings.Contains(got, `"services": []`) {
		t.Fatalf("empty list must be written as [], not null; file:\n%s", got)
	}
}

func TestInvalidNamesRejected(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "../etc", "a/b", strings.Repeat("a", 300), "nginx✓", "Nginx", ".."} {
		if _, err := s.Add(name); err == nil {
			t.Errorf("Add(%q) succeeded", name)
		} else if !strings.Contains(err.Error(), "invalid service name") {
			t.Errorf("Add(%q) error %q does not say what is wrong", name, err)
		}
		if _, err := s.Remove(name); err == nil {
			t.Errorf("Remove(%q) succeeded", name)
		}
	}
	if _, err := os.Stat(s.Path()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("rejected names must not write the file: %v", err)
	}
}

func TestCorruptFileIsReportedAndLeftUntouched(t *testing.T) {
	cases := []struct {
		name, content, wantErr string
	}{
		{"truncated", `{"services": ["nginx_webserver"`, "invalid JSON"},
		{"garbage", "\x00\x00\x00", "invalid JSON"},
		{"empty", "", "file is empty"},
		{"whitespace", " \n", "file is empty"},
		{"null", "null", "null"},
		{"array", `["nginx_webserver"]`, "not a JSON object"},
		{"services not a list", `{"services": "nginx_webserver"}`, `"services" must be a list`},
		{"number in list", `{"services": ["a", 3]}`, `"services" must be a list`},
		{"bad name", `{"services": ["ok", "../../etc/passwd"]}`, `"services" entry 1: invalid service name`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir)
			if err == nil {
				t.Fatal("Open succeeded on a corrupt file")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, tc.wantErr) || !strings.Contains(msg, "left untouched") {
				t.Fatalf("error %q should name %s, say %q and that the file was left untouched", msg, path, tc.wantErr)
			}
			if got := string(readFile(t, path)); got != tc.content {
				t.Fatalf("corrupt file was modified: %q", got)
			}
			if left := tempFiles(t, dir); len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
}

func TestHandEditedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	orig := `{"services": ["redis", "nginx_webserver", "redis"], "owner": "ops-team", "deployed": {"by": "cron", "n": 3}}`
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Services(), []string{"nginx_webserver", "redis"}; !slices.Equal(got, want) {
		t.Fatalf("duplicates not merged on load: %q, want %q", got, want)
	}
	if got := string(readFile(t, path)); got != orig {
		t.Fatal("loading rewrote the file")
	}
	if _, err := s.Add("haproxy"); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(readFile(t, path), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["owner"] != "ops-team" {
		t.Errorf("unknown key owner lost on rewrite: %v", doc)
	}
	if d, ok := doc["deployed"].(map[string]any); !ok || d["by"] != "cron" || d["n"] != float64(3) {
		t.Errorf("unknown key deployed lost on rewrite: %v", doc)
	}
	if got, want := fileServices(t, path), []string{"haproxy", "nginx_webserver", "redis"}; !slices.Equal(got, want) {
		t.Errorf("file services = %q, want %q", got, want)
	}
}

func TestFileWithoutServicesKey(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Services(); len(got) != 0 {
		t.Fatalf("services = %q, want none", got)
	}
}

// TestWritesAreAtomic has readers parse the file continuously while writers
// change it: every read must see a complete file holding one of the states
// the writers produced, never a partial or empty one.
func TestWritesAreAtomic(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add("base"); err != nil {
		t.Fatal(err)
	}

	const writers, perWriter = 4, 25
	done := make(chan struct{})
	var readErr error
	var reads int
	var readerWG sync.WaitGroup
	readerWG.Add(1)
	go func() {
		defer readerWG.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			data, err := os.ReadFile(s.Path())
			if err != nil {
				readErr = fmt.Errorf("read %d: %w", reads, err)
				return
			}
			var doc struct {
				Services []string `json:"services"`
			}
			if err := json.Unmarshal(data, &doc); err != nil {
				readErr = fmt.Errorf("read %d saw a partial file %q: %w", reads, data, err)
				return
			}
			if !slices.Contains(doc.Services, "base") || !slices.IsSorted(doc.Services) {
				readErr = fmt.Errorf("read %d saw a state no writer produced: %q", reads, doc.Services)
				return
			}
			reads++
		}
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				name := fmt.Sprintf("svc-%d-%d", w, i)
				if _, err := s.Add(name); err != nil {
					t.Error(err)
					return
				}
				if i%2 == 1 {
					if _, err := s.Remove(name); err != nil {
						t.Error(err)
						return
					}
				}
				_ = s.Services()
			}
		}()
	}
	wg.Wait()
	close(done)
	readerWG.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	t.Logf("%d consistent reads during %d writes", reads, writers*perWriter*3/2)

	want := []string{"base"}
	for w := range writers {
		for i := 0; i < perWriter; i += 2 {
			want = append(want, fmt.Sprintf("svc-%d-%d", w, i))
		}
	}
	slices.Sort(want)
	if got := s.Services(); !slices.Equal(got, want) {
		t.Fatalf("in-memory services = %q, want %q", got, want)
	}
	if got := fileServices(t, s.Path()); !slices.Equal(got, want) {
		t.Fatalf("file services = %q, want %q", got, want)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestFailedRenameKeepsOldState makes the final rename fail (the target is a
// non-empty directory) and checks nothing changed, in memory or on disk.
func TestFailedRenameKeepsOldState(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.Path(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Path(), "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := s.Add("nginx_webserver")
	if err == nil || changed {
		t.Fatalf("Add over a directory = %v, %v; want an error", changed, err)
	}
	if !strings.Contains(err.Error(), "add service nginx_webserver: write meta-data "+s.Path()) {
		t.Errorf("error %q does not name the operation and file", err)
	}
	if got := s.Services(); len(got) != 0 {
		t.Fatalf("in-memory state changed after a failed write: %q", got)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if got := string(readFile(t, filepath.Join(s.Path(), "keep"))); got != "x" {
		t.Fatal("the existing path was modified")
	}
}

// TestPermissionDenied checks that an unwritable data directory gives an
// error saying so, and loses nothing. Root bypasses permission checks, so
// when run as root the test re-runs itself as user nobody.
func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		runAsNobody(t, "TestPermissionDenied")
		return
	}
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add("redis"); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, s.Path())
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })

	changed, err := s.Add("nginx_webserver")
	if err == nil || changed {
		t.Fatalf("Add in a read-only dir = %v, %v; want an error", changed, err)
	}
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "needs write access to "+dir) {
		t.Fatalf("error %q should be a permission error telling what to fix", err)
	}
	t.Logf("error as seen by the user: %v", err)
	if got := s.Services(); !slices.Equal(got, []string{"redis"}) {
		t.Fatalf("in-memory state changed after a failed write: %q", got)
	}
	if got := readFile(t, s.Path()); string(got) != string(before) {
		t.Fatal("file changed after a failed write")
	}

	_, err = Open(filepath.Join(dir, "sub"))
	if err == nil || !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "create data directory") {
		t.Fatalf("Open in a read-only parent: %v; want a permission error naming the step", err)
	}
}

// runAsNobody runs test in a copy of this test binary as uid/gid 65534 and
// fails t if that run does not pass.
func runAsNobody(t *testing.T, test string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The go test build directory is private to root: copy the binary to a
	// directory nobody can read.
	binDir, err := os.MkdirTemp("", "rpit-meta-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "metadata.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "TMPDIR="+os.TempDir(), "HOME=/")
	cmd.Dir = binDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	t.Logf("run as nobody:\n%s", out)
	if err != nil {
		t.Fatalf("%s as nobody: %v", test, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("%s did not pass as nobody", test)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

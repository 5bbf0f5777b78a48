package qemu

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestParseConfigTxt(t *testing.T) {
	for _, tc := range []struct {
		text, kernel, initrd string
	}{
		{"", "kernel8.img", ""},
		{"# comment\narm_64bit=1\nkernel=vmlinuz\ninitramfs initrd.img followkernel\n", "vmlinuz", "initrd.img"},
		{"kernel=a\nkernel=b\n", "b", ""},
		{"  initramfs   initrd-2 followkernel\n", "kernel8.img", "initrd-2"},
	} {
		k, i := parseConfigTxt([]byte(tc.text))
		if k != tc.kernel || i != tc.initrd {
			t.Errorf("parseConfigTxt(%q) = %q, %q; want %q, %q", tc.text, k, i, tc.kernel, tc.initrd)
		}
	}
}

// Cards written from one image are byte-for-byte copies, holes included.
func TestWriteCards(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "cluster.img")
	data := make([]byte, 3<<20+17)
	copy(data, "MBR")
	copy(data[2<<20+5:], "root")
	data[len(data)-1] = 1
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cards, err := WriteCards(src, dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(cards) != 3 {
		t.Fatalf("%d cards, want 3", len(cards))
	}
	for _, c := range cards {
		got, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s differs from the image (%d bytes, want %d)", c, len(got), len(data))
		}
	}
}

func TestBaseKeyFollowsWhatGoesIn(t *testing.T) {
	a := BaseOptions{CacheDir: "x", Mirror: "http://m/debian", Suite: "bookworm", Packages: []string{"a", "b"}}
	b := a
	b.Packages = []string{"b", "a"}
	if a.Key() != b.Key() {
		t.Errorf("the package order changed the key")
	}
	c := a
	c.Packages = []string{"a", "b", "c"}
	d := a
	d.Mirror = "http://other/debian"
	if a.Key() == c.Key() || a.Key() == d.Key() {
		t.Errorf("a changed package list or mirror kept the key %s", a.Key())
	}
	before := a.Key()
	old := pibaseScript
	t.Cleanup(func() { pibaseScript = old })
	pibaseScript = append(append([]byte(nil), old...), "\n# changed\n"...)
	if a.Key() == before {
		t.Errorf("a changed build script kept the key %s", before)
	}
}

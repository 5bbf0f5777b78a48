package identity

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadOrCreateKeepsTheKeyAndRefusesACorruptOne(t *testing.T) {
	dir := t.TempDir()
	k1, created, err := LoadOrCreate(dir)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created %v, err %v", created, err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	k2, created, err := LoadOrCreate(dir)
	if err != nil || created || !Equal(k1.Public(), k2.Public()) {
		t.Fatalf("second LoadOrCreate: created %v, err %v, same key %v", created, err, Equal(k1.Public(), k2.Public()))
	}
	os.WriteFile(filepath.Join(dir, KeyFile), []byte("garbage\n"), 0o600)
	if _, _, err := LoadOrCreate(dir); err == nil || !strings.Contains(err.Error(), "not a node key") {
		t.Fatalf("corrupt key: err %v, want one saying it is not a node key", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, KeyFile)); string(b) != "garbage\n" {
		t.Fatalf("a corrupt key file was replaced: %q", b)
	}
}

func TestSignaturesAreBoundToKeyPurposeAndMessage(t *testing.T) {
	a, _ := Generate()
	b, _ := Generate()
	sig := a.Sign(PurposeRecord, []byte("msg"))
	if !Verify(a.Public(), PurposeRecord, []byte("msg"), sig) {
		t.Fatal("a valid signature does not verify")
	}
	for name, ok := range map[string]bool{
		"other key":     Verify(b.Public(), PurposeRecord, []byte("msg"), sig),
		"other purpose": Verify(a.Public(), PurposeLeave, []byte("msg"), sig),
		"other message": Verify(a.Public(), PurposeRecord, []byte("msh"), sig),
		"short sig":     Verify(a.Public(), PurposeRecord, []byte("msg"), sig[:10]),
		"short key":     Verify(a.Public()[:5], PurposeRecord, []byte("msg"), sig),
	} {
		if ok {
			t.Errorf("%s: verified", name)
		}
	}
}

func TestPinsTrustOnFirstUseAndPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pins.json")
	p, err := OpenPins(path)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := Generate()
	b, _ := Generate()
	if first, err := p.Check("s3", a.Public()); !first || err != nil {
		t.Fatalf("first sight: %v %v", first, err)
	}
	if first, err := p.Check("s3", a.Public()); first || err != nil {
		t.Fatalf("second sight: %v %v", first, err)
	}
	if _, err := p.Check("s3", b.Public()); !errors.Is(err, ErrKeyChanged) || !strings.Contains(err.Error(), Fingerprint(a.Public())) {
		t.Fatalf("other key: %v, want ErrKeyChanged naming the pinned fingerprint", err)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	p2, err := OpenPins(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Check("s3", b.Public()); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("after reopening: %v, want ErrKeyChanged", err)
	}
	if err := p2.Set("s3", b.Public()); err != nil {
		t.Fatal(err)
	}
	p3, _ := OpenPins(path)
	if got, _ := p3.Lookup("s3"); !Equal(got, b.Public()) {
		t.Fatal("Set did not persist the new key")
	}
	os.WriteFile(path, []byte("{not json"), 0o600)
	if _, err := OpenPins(path); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt pins: %v", err)
	}
}

func TestOpenRecordVerifiesAgainstTheKeyItCarries(t *testing.T) {
	k, _ := Generate()
	body, _ := json.Marshal(map[string]any{"n": "s3", "a": "10.0.0.3", "k": []string{"ssh-ed25519 AAAA"}, "pk": []byte(k.Public()), "v": 7})
	sig := k.Sign(PurposeRecord, body)
	c, pub, err := OpenRecord(body, sig)
	if err != nil || c.Name != "s3" || c.SSHHostKeys[0] != "ssh-ed25519 AAAA" || !Equal(pub, k.Public()) {
		t.Fatalf("OpenRecord = %+v, %v", c, err)
	}
	tampered := []byte(strings.Replace(string(body), "10.0.0.3", "10.0.0.9", 1))
	if _, _, err := OpenRecord(tampered, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered body: %v, want ErrBadSignature", err)
	}
}

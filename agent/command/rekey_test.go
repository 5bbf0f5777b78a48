package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent"
	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
	"github.com/rpi-cluster/rpi-cluster/internal/testutil"
)

const rekeyToken = "rekey-token"

// startRekeyAgent starts an in-process agent named rk-i on 127.0.7.i with
// its data in dir, joined to join ("" for none).
func startRekeyAgent(t *testing.T, i int, dir, join string) *agent.Agent {
	return startAgent(t, fmt.Sprintf("rk-%d", i), fmt.Sprintf("127.0.7.%d", i), dir, rekeyToken, join)
}

// runWrite runs `rpi-agent SUBCOMMAND NAME` (force-leave, rekey) against
// the agent at url, with the token when one is given.
func runWrite(t *testing.T, subcommand, url, token, name string) (string, error) {
	t.Helper()
	app := App()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, io.Discard
	app.ExitErrHandler = func(*cli.Context, error) {} // keep the test process
	args := []string{"rpi-agent", subcommand, "--agent", url}
	if token != "" {
		args = append(args, "--token", token)
	}
	err := app.Run(append(args, name))
	return out.String(), err
}

// A node whose card is reinstalled comes back with a new key: its peer
// refuses its records (pins survive the peer's restart) and lists the
// conflict until `rpi-agent rekey`, with the token, accepts the new key.
func TestRekeyAcceptsAReinstalledNode(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startRekeyAgent(t, 1, dirA, "")
	b := startRekeyAgent(t, 2, dirB, gossipAddr(a))
	keyB, _, err := identity.LoadOrCreate(dirB)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New("http://"+a.HTTPAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// a serves b's record as b signed it, with the key it pinned.
	testutil.WaitFor(t, 10*time.Second, func() error {
		n, err := cl.Node(ctx, "rk-2")
		if err != nil {
			return err
		}
		if n.SignedRecord == nil || n.IdentityKey != identity.EncodePublicKey(keyB.Public()) {
			return fmt.Errorf("rk-2 served without its signed record or key: %q", n.IdentityKey)
		}
		claims, pub, err := identity.OpenRecord(n.SignedRecord.Body, n.SignedRecord.Sig)
		if err != nil || claims.Name != "rk-2" || !identity.Equal(pub, keyB.Public()) {
			return fmt.Errorf("rk-2's signed record does not open: %+v %v", claims, err)
		}
		return nil
	})

	// a restarts on its data dir, b is reinstalled: a new data dir, so a
	// new key, same name and address.
	a.Shutdown()
	b.Shutdown()
	a = startRekeyAgent(t, 1, dirA, "")
	b = startRekeyAgent(t, 2, t.TempDir(), gossipAddr(a))
	newKey := b.Cluster().Self().IdentityKey
	url := "http://" + a.HTTPAddr()
	cl, _ = client.New(url, "")
	testutil.WaitFor(t, 10*time.Second, func() error {
		ks, err := cl.Conflicts(ctx)
		if err != nil {
			return err
		}
		if len(ks) != 1 || ks[0].Node != "rk-2" || ks[0].OfferedKey != identity.EncodePublicKey(newKey) {
			return fmt.Errorf("conflicts %+v, want rk-2 offering its new key", ks)
		}
		return nil
	})
	if n, _ := cl.Node(ctx, "rk-2"); n.SignedRecord != nil {
		t.Fatalf("a applied rk-2's record signed by the unpinned key: %+v", n)
	}

	// Without the token nothing changes.
	out, err := runWrite(t, "rekey", url, "", "rk-2")
	if err == nil || !strings.Contains(out, "needs the API token") {
		t.Fatalf("rekey without the token: %v\n%s", err, out)
	}
	if ks, _ := cl.Conflicts(ctx); len(ks) != 1 {
		t.Fatalf("rekey without the token changed the conflicts: %+v", ks)
	}
	// A name nobody offers another key for is refused.
	if out, err := runWrite(t, "rekey", url, rekeyToken, "rk-9"); err == nil || !strings.Contains(err.Error(), "no agent sees another key") {
		t.Fatalf("rekey of a name without a conflict: %v\n%s", err, out)
	}

	out, err = runWrite(t, "rekey", url, rekeyToken, "rk-2")
	if err != nil || !strings.Contains(out, "rk-1: rk-2 now pinned to "+identity.Fingerprint(newKey)) {
		t.Fatalf("rekey: %v\n%s", err, out)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		n, err := cl.Node(ctx, "rk-2")
		if err != nil {
			return err
		}
		if n.SignedRecord == nil || n.IdentityKey != identity.EncodePublicKey(newKey) {
			return errors.New("rk-2's record under its new key not applied yet")
		}
		return nil
	})
	if ks, _ := cl.Conflicts(ctx); len(ks) != 0 {
		t.Fatalf("conflicts after rekey: %+v", ks)
	}
	pins, err := identity.OpenPins(filepath.Join(dirA, agent.PinsFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := pins.Lookup("rk-2"); !identity.Equal(got, newKey) {
		t.Fatal("the new pin is not saved in the data dir")
	}
}

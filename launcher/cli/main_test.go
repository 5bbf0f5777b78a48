package cli

import (
	"os"
	"testing"

	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// TestMain disables the mDNS fallback: tests never multicast on the
// machine's network.
func TestMain(m *testing.M) {
	toolkit.Browse = nil
	os.Exit(m.Run())
}

package image

import (
	"fmt"
	"io"
	"strings"
)

// PrintSummary writes what a customisation did, for people.
func PrintSummary(w io.Writer, r *Report) {
	fmt.Fprintf(w, "architecture:  %s (from %s)\n", r.Arch, r.ArchProbe)
	fmt.Fprintf(w, "agent:         %s -> %s\n", r.AgentBinary, AgentBinaryPath)
	fmt.Fprintf(w, "cluster:       %s (gossip encrypted, API token set; both in %s, mode 0600)\n", r.Cluster, AgentConfigPath)
	created := "existing"
	if r.User.Created {
		created = "created"
	}
	fmt.Fprintf(w, "login user:    %s (uid %d, %s), password locked, %d SSH key(s), sudo without password\n", r.User.Name, r.User.UID, created, r.Keys)
	fmt.Fprintf(w, "agent user:    %s (uid %d)\n", r.AgentUser.Name, r.AgentUser.UID)
	fmt.Fprintf(w, "sshd:          keys only, no root login; first boot makes new host keys, machine-id and hostname rpi-<MAC>\n")
	fmt.Fprintf(w, "files written:\n")
	for _, p := range r.Written {
		fmt.Fprintf(w, "  %s\n", p)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

// PrintFlashHelp tells how to write one image onto many cards.
func PrintFlashHelp(w io.Writer, img string) {
	fmt.Fprintf(w, `
Flash it onto as many cards as you have Pis; each one comes up with its own name:
  lsblk -d -o NAME,SIZE,MODEL                     # find the card, e.g. /dev/sdX (not your disk!)
  sudo dd if=%[1]s of=/dev/sdX bs=4M conv=fsync status=progress
  # or: bmaptool create %[1]s > %[1]s.bmap && sudo bmaptool copy %[1]s /dev/sdX
  # or: Raspberry Pi Imager -> Choose OS -> Use custom -> %[1]s (no OS customisation: it is done)
Repeat for every card, boot the Pis, then: rpi-inventory --list
`, shellQuote(img))
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\"$`\\!*?&;|<>(){}[]#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

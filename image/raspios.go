package image

import "strings"

// Raspberry Pi OS runs first-boot steps of its own (README, "What the image
// relies on at first boot"). Two of them would undo or block rpi-cluster's:
//
//   - regenerate_ssh_host_keys.service (raspberrypi-sys-mods) deletes and
//     remakes the SSH host keys in multi-user.target, after rpi-firstboot
//     made them and in no order with the agent, which may already be
//     gossiping the keys it read: the workstation would pin keys sshd no
//     longer has.
//   - userconfig.service (userconf-pi) runs the interactive user-rename
//     wizard on tty8 when the boot partition has no userconf.txt, and waits
//     there for ever on a headless Pi: multi-user.target is never reached,
//     tty1 has no login, and anyone at the console can rename the user
//     the cluster logs in as.
//
// disableRaspiosFirstboot turns both off in the image, as cancel-rename
// (userconf-pi) does for the wizard: the wizard's and the key service's
// wants links go, tty1 gets its getty back and sshd loses the wizard's
// banner. A base without them is left as it is.
func disableRaspiosFirstboot(fsys FS, _ BootFS, _ Options, r *Report, _ []byte) error {
	for _, unit := range []string{"regenerate_ssh_host_keys.service", "userconfig.service"} {
		link := multiUserWants + unit
		if ok, err := exists(fsys, link); err != nil {
			return err
		} else if !ok {
			continue
		}
		if err := fsys.Remove(link); err != nil {
			return err
		}
		r.wrote(link + " (removed)")
		if unit != "userconfig.service" {
			continue
		}
		if err := restoreConsoleLogin(fsys, r); err != nil {
			return err
		}
	}
	if ok, _ := exists(fsys, piwizAutostart); ok {
		r.warn("%s: this is a Desktop image, whose first-run wizard still runs on the screen; use a Lite base for cluster nodes", piwizAutostart)
	}
	return nil
}

const (
	// renameUserBanner is the sshd drop-in rename-user writes while the
	// wizard is pending ("SSH may not work until a valid user has been set
	// up").
	renameUserBanner = "/etc/ssh/sshd_config.d/rename_user.conf"
	piwizAutostart   = "/etc/xdg/autostart/piwiz.desktop"
	gettyTTY1        = "/etc/systemd/system/getty.target.wants/getty@tty1.service"
)

// gettyUnits are where Debian-based systems keep the getty template.
var gettyUnits = []string{"/lib/systemd/system/getty@.service", "/usr/lib/systemd/system/getty@.service"}

// restoreConsoleLogin undoes what rename-user did beside enabling the
// wizard: it disabled getty@tty1 and added an sshd banner.
func restoreConsoleLogin(fsys FS, r *Report) error {
	if ok, err := exists(fsys, renameUserBanner); err != nil {
		return err
	} else if ok {
		if err := fsys.Remove(renameUserBanner); err != nil {
			return err
		}
		r.wrote(renameUserBanner + " (removed)")
	}
	if ok, _ := exists(fsys, gettyTTY1); ok {
		return nil
	}
	for _, unit := range gettyUnits {
		if ok, _ := exists(fsys, unit); ok {
			if err := fsys.Symlink(unit, gettyTTY1); err != nil {
				return err
			}
			r.wrote(gettyTTY1)
			return nil
		}
	}
	return nil
}

// uninitializedMachineID is what /etc/machine-id holds in an image whose
// next boot is its first in systemd's sense (machine-id(5), "First Boot
// Semantics"): units with ConditionFirstBoot=yes run. Recent Raspberry Pi
// OS images ship it (pi-gen's export-image/05-finalise), and grow the root
// filesystem to the card in one of those units (rpi-resize.service); an
// empty file boots as an old system, with a new machine-id all the same
// but that unit skipped.
const uninitializedMachineID = "uninitialized"

// resetMachineID empties /etc/machine-id, so that every copy makes its own
// at boot, keeping "uninitialized" when the image had it.
func resetMachineID(fsys FS) error {
	var content []byte
	if old, err := fsys.ReadFile("/etc/machine-id"); err == nil && strings.TrimSpace(string(old)) == uninitializedMachineID {
		content = []byte(uninitializedMachineID + "\n")
	}
	return fsys.WriteFile("/etc/machine-id", content, 0o444, 0, 0)
}

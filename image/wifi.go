package image

import (
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"unicode"
)

// WiFi is a WPA2-PSK network for the nodes to join.
type WiFi struct {
	SSID string
	// PSK is the passphrase (8 to 63 characters) or the raw 64-hex-digit key.
	PSK string
	// Country is the ISO 3166 alpha-2 regulatory domain ("GB", "DE", "US"):
	// Raspberry Pi OS keeps WiFi off until it is set.
	Country string
}

var (
	countryRE = regexp.MustCompile(`^[A-Z]{2}$`)
	hexPSKRE  = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// Validate checks the network settings and says what is wrong.
func (w *WiFi) Validate() error {
	if w.SSID == "" || len(w.SSID) > 32 {
		return fmt.Errorf("wifi ssid %q: must be 1 to 32 bytes", w.SSID)
	}
	for _, r := range w.SSID {
		if !unicode.IsPrint(r) || strings.ContainsRune(`"\;`, r) {
			return fmt.Errorf("wifi ssid %q: control characters, quotes, backslashes and ';' are not supported", w.SSID)
		}
	}
	if !hexPSKRE.MatchString(w.PSK) {
		if len(w.PSK) < 8 || len(w.PSK) > 63 {
			return errors.New("wifi psk: a WPA passphrase has 8 to 63 characters (or give the 64-hex-digit key)")
		}
		for _, r := range w.PSK {
			if r < ' ' || r > '~' {
				return errors.New("wifi psk: a WPA passphrase is printable ASCII")
			}
		}
	}
	if w.Country == "" {
		return errors.New("wifi: --country is required with WiFi (the regulatory domain, e.g. GB, DE, US): Raspberry Pi OS keeps WiFi off without it")
	}
	if !countryRE.MatchString(w.Country) {
		return fmt.Errorf("wifi country %q: a two-letter ISO 3166 code in capitals, e.g. GB, DE, US", w.Country)
	}
	return nil
}

// key returns the 256-bit pre-shared key as hex, so the passphrase itself
// is never stored on the card.
func (w *WiFi) key() (string, error) {
	if hexPSKRE.MatchString(w.PSK) {
		return strings.ToLower(w.PSK), nil
	}
	k, err := pbkdf2.Key(sha1.New, w.PSK, []byte(w.SSID), 4096, 32)
	if err != nil {
		return "", fmt.Errorf("wifi psk: %w", err)
	}
	return hex.EncodeToString(k), nil
}

// installWiFi writes a NetworkManager connection (Raspberry Pi OS Bookworm
// and later) or a wpa_supplicant configuration (older releases), and sets
// the regulatory domain on the kernel command line of the boot partition.
func installWiFi(fsys FS, boot BootFS, o Options, r *Report, _ []byte) error {
	w := o.WiFi
	if w == nil {
		return nil
	}
	key, err := w.key()
	if err != nil {
		return err
	}
	if ok, _ := exists(fsys, "/etc/NetworkManager"); ok {
		conn := fmt.Sprintf(`# Written by rpi-image.
[connection]
id=rpi-cluster-wifi
type=wifi
autoconnect=true

[wifi]
mode=infrastructure
ssid=%s

[wifi-security]
key-mgmt=wpa-psk
psk=%s

[ipv4]
method=auto

[ipv6]
method=auto
`, w.SSID, key)
		if err := fsys.WriteFile(WiFiNMConnection, []byte(conn), 0o600, 0, 0); err != nil {
			return err
		}
		r.wrote(WiFiNMConnection)
	} else {
		conf := fmt.Sprintf("# Written by rpi-image.\nctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev\nupdate_config=1\ncountry=%s\n\nnetwork={\n\tssid=\"%s\"\n\tpsk=%s\n}\n", w.Country, w.SSID, key)
		const p = "/etc/wpa_supplicant/wpa_supplicant.conf"
		if err := fsys.WriteFile(p, []byte(conf), 0o600, 0, 0); err != nil {
			return err
		}
		r.wrote(p)
	}
	if boot == nil {
		r.warn("no boot partition: set the WiFi regulatory domain (%s) on the kernel command line yourself", w.Country)
		return nil
	}
	cmdline, err := boot.ReadFile("cmdline.txt")
	if errors.Is(err, fs.ErrNotExist) {
		r.warn("no cmdline.txt on the boot partition: WiFi regulatory domain not set")
		return nil
	}
	if err != nil {
		return err
	}
	var args []string
	for _, a := range strings.Fields(string(cmdline)) {
		if !strings.HasPrefix(a, "cfg80211.ieee80211_regdom=") {
			args = append(args, a)
		}
	}
	args = append(args, "cfg80211.ieee80211_regdom="+w.Country)
	if err := boot.WriteFile("cmdline.txt", []byte(strings.Join(args, " ")+"\n")); err != nil {
		return err
	}
	r.wroteBoot("cmdline.txt")
	return nil
}

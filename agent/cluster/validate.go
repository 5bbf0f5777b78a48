package cluster

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// Every name and service that arrives by gossip passes the API's rules
// (apitypes.ValidateNodeName, ValidateServiceName) before it is stored,
// relayed or shown: the gossip key is on every SD card, so one stolen card
// lets anyone speak gossip, and what the API refuses must not come in
// through the back door. What fails is dropped, counted by reason (Stats.
// Rejected) and logged once per claimed sender and reason.

// rejectReason says why a gossiped message was refused.
type rejectReason int

const (
	rejectInvalidName    rejectReason = iota // a node name the API refuses
	rejectInvalidService                     // a service name the API refuses, or too many
	rejectInvalidField                       // an address, SSH host key or version string out of shape
	rejectBadSignature                       // the signature does not verify
	rejectKeyConflict                        // signed by another key than the one pinned for the name
	rejectUnknownKey                         // no pinned key to verify a leave intent against
	rejectClockAhead                         // a desired entry versioned too far in the future
	numRejectReasons
)

// RejectReasons are the labels of Stats.Rejected, in a fixed order.
var RejectReasons = [numRejectReasons]string{
	"invalid_name", "invalid_service", "invalid_field", "bad_signature", "key_conflict", "unknown_key", "clock_ahead",
}

func (r rejectReason) String() string { return RejectReasons[r] }

// rejection is a refused message: why, and what was wrong.
type rejection struct {
	reason rejectReason
	err    error
}

func (r *rejection) Error() string { return r.err.Error() }

func reject(reason rejectReason, format string, args ...any) *rejection {
	return &rejection{reason: reason, err: fmt.Errorf(format, args...)}
}

// Limits of what a record may carry. A record must fit maxRecordSize
// anyway; these keep each field to what a Pi has.
const (
	// maxServices bounds a record's services.
	maxServices = 64
	// maxSSHHostKeys bounds a record's SSH host keys: sshd makes three.
	maxSSHHostKeys = 8
	// maxSSHHostKeyLen bounds one key line: an RSA 16384 key is about
	// 2.8 KB in authorized_keys form.
	maxSSHHostKeyLen = 4096
	// maxLabelLen bounds the agent version, architecture and model.
	maxLabelLen = 64
	// maxWarned bounds the (sender, reason) pairs remembered as logged;
	// past it the memory starts over, so a flood of invented names costs
	// a log line per name at worst, not memory.
	maxWarned = 1024
)

// checkNodeName applies the API's node name rule to a gossiped name.
func checkNodeName(what, name string) *rejection {
	if err := apitypes.ValidateNodeName(name); err != nil {
		return reject(rejectInvalidName, "%s: %w", what, err)
	}
	return nil
}

// checkRecordFields checks everything a record says besides its
// signature: names, services, address, SSH host keys and labels.
func checkRecordFields(r Record) *rejection {
	if rj := checkNodeName("record", r.Name); rj != nil {
		return rj
	}
	if len(r.Services) > maxServices {
		return reject(rejectInvalidService, "record of %s: %d services, at most %d", r.Name, len(r.Services), maxServices)
	}
	for _, s := range r.Services {
		if err := apitypes.ValidateServiceName(s); err != nil {
			return reject(rejectInvalidService, "record of %s: %w", r.Name, err)
		}
	}
	if _, err := netip.ParseAddr(r.Addr); err != nil {
		return reject(rejectInvalidField, "record of %s: address %s is not an IP address", r.Name, apitypes.Quote(r.Addr))
	}
	if r.GossipPort < 1 || r.GossipPort > 65535 || r.HTTPPort < 0 || r.HTTPPort > 65535 {
		return reject(rejectInvalidField, "record of %s: ports %d/%d out of range", r.Name, r.GossipPort, r.HTTPPort)
	}
	if err := checkSSHHostKeys(r.SSHHostKeys); err != nil {
		return reject(rejectInvalidField, "record of %s: %w", r.Name, err)
	}
	for _, l := range []struct{ what, v string }{{"agent version", r.AgentVersion}, {"arch", r.Arch}, {"model", r.Model}} {
		if !printableASCII(l.v, maxLabelLen) {
			return reject(rejectInvalidField, "record of %s: %s %s: want at most %d printable ASCII characters", r.Name, l.what, apitypes.Quote(l.v), maxLabelLen)
		}
	}
	return nil
}

// checkSSHHostKeys accepts host keys that are each one authorized_keys
// line ssh itself parses, with nothing after the key but a comment.
func checkSSHHostKeys(keys []string) error {
	if len(keys) > maxSSHHostKeys {
		return fmt.Errorf("%d SSH host keys, at most %d", len(keys), maxSSHHostKeys)
	}
	for _, k := range keys {
		if len(k) > maxSSHHostKeyLen || strings.ContainsAny(k, "\r\n") || !printableASCII(k, maxSSHHostKeyLen) {
			return fmt.Errorf("SSH host key %s: want one printable line of at most %d characters", apitypes.Quote(trim(k)), maxSSHHostKeyLen)
		}
		if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil || len(rest) > 0 {
			return fmt.Errorf("SSH host key %s: not an authorized_keys line", apitypes.Quote(trim(k)))
		}
	}
	return nil
}

// checkHeartbeat checks a heartbeat's sender name and address.
func checkHeartbeat(hb heartbeat) *rejection {
	if rj := checkNodeName("heartbeat", hb.name); rj != nil {
		return rj
	}
	host, port, err := net.SplitHostPort(hb.addr)
	if err == nil {
		_, err = netip.ParseAddr(host)
	}
	if p, perr := strconv.Atoi(port); err == nil && (perr != nil || p < 1 || p > 65535) {
		err = fmt.Errorf("bad port")
	}
	if err != nil {
		return reject(rejectInvalidField, "heartbeat of %s: address %s is not ip:port", hb.name, apitypes.Quote(hb.addr))
	}
	return nil
}

// checkNames checks the sender and names of a silence report or verdict.
func checkNames(what, from string, names []string) *rejection {
	if rj := checkNodeName(what+" sender", from); rj != nil {
		return rj
	}
	for _, n := range names {
		if rj := checkNodeName(what+" from "+from, n); rj != nil {
			return rj
		}
	}
	return nil
}

func printableASCII(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// trim shortens s for a log line or error.
func trim(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// warnKey is a (claimed sender, reason) pair already logged.
type warnKey struct {
	sender string
	reason rejectReason
}

// dropRejected counts a refused message and logs it at Warn the first time
// for its claimed sender and reason (at Debug after that).
func (c *Cluster) dropRejected(sender string, rj *rejection) {
	c.rejected[rj.reason].Add(1)
	k := warnKey{sender: trim(sender), reason: rj.reason}
	c.warnMu.Lock()
	_, seen := c.warned[k]
	if !seen {
		if len(c.warned) >= maxWarned {
			clear(c.warned)
		}
		c.warned[k] = struct{}{}
	}
	c.warnMu.Unlock()
	if seen {
		c.logger.Debug("refused gossip", "sender", apitypes.Quote(k.sender), "reason", rj.reason.String(), "err", rj.err)
		return
	}
	c.logger.Warn("refused gossip from a member; further refusals for this sender and reason are logged at debug",
		"sender", apitypes.Quote(k.sender), "reason", rj.reason.String(), "err", rj.err)
}

// rejectedStats returns the refusal counters by reason.
func (c *Cluster) rejectedStats() map[string]uint64 {
	m := make(map[string]uint64, numRejectReasons)
	for i := range numRejectReasons {
		m[RejectReasons[i]] = c.rejected[i].Load()
	}
	return m
}

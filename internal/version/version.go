// Package version holds the build's version, set at link time:
//
//	go build -ldflags "-X github.com/rpi-cluster/rpi-cluster/internal/version.Version=v0.1.0"
package version

import "runtime/debug"

// Version is the release version; "dev" for untagged builds.
var Version = "dev"

// String returns Version, with the VCS revision appended for dev builds when
// the binary carries it.
func String() string {
	if Version != "dev" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return Version + "+" + s.Value[:12]
			}
		}
	}
	return Version
}

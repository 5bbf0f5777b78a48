//go:build !race

package cluster

// raceEnabled is set when the tests run under the race detector.
const raceEnabled = false

package bench

import (
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
)

// Dilation is a time-dilation factor K (DieCast, NSDI 2008): every protocol
// interval and timeout runs K times slower than configured, so the nodes do
// a K-th of their work per real second and two cores can host a cluster K
// times larger before they, rather than the protocol, set the pace. Measured
// times are divided by K and rates multiplied by it, so results read in
// emulated time, as if the machine were K times faster. Zero means 1.
//
// What does not dilate is what the machine does per message: CPU time per
// packet, encryption, loopback latency and the Go scheduler. They shrink by
// K relative to the protocol, which is the point, but also hide any cost a
// real, slower network would add (see docs/PERFORMANCE.md).
type Dilation float64

// ParseDilation reads a --dilate value: a finite number of at least 1.
func ParseDilation(s string) (Dilation, error) {
	var k float64
	if _, err := fmt.Sscanf(s, "%g", &k); err != nil || math.IsNaN(k) || math.IsInf(k, 0) || k < 1 || k > 100 {
		return 0, fmt.Errorf("bad dilation %q: want a number from 1 to 100, like 4 (every interval and timeout 4 times longer)", s)
	}
	return Dilation(k), nil
}

func (k Dilation) factor() float64 {
	if k <= 0 {
		return 1
	}
	return float64(k)
}

// Dilated reports whether k slows anything down.
func (k Dilation) Dilated() bool { return k.factor() != 1 }

// Real is how long emulated duration d takes on the machine: d times K.
func (k Dilation) Real(d time.Duration) time.Duration {
	return time.Duration(math.Round(float64(d) * k.factor()))
}

// Emulated is the emulated length of real duration d: d divided by K.
func (k Dilation) Emulated(d time.Duration) time.Duration {
	return time.Duration(math.Round(float64(d) / k.factor()))
}

// PerEmulatedSecond turns a rate per real second into one per emulated
// second: K times more happens in an emulated second.
func (k Dilation) PerEmulatedSecond(perRealSecond float64) float64 {
	return perRealSecond * k.factor()
}

// Profile returns p with every time.Duration in it, nested structs (the phi
// detector's configuration) included, multiplied by K. It walks the struct
// by reflection so that a timing added to cluster.Profile later is dilated
// without anyone remembering to add it here.
func (k Dilation) Profile(p cluster.Profile) cluster.Profile {
	scaleDurations(reflect.ValueOf(&p).Elem(), k.factor())
	return p
}

var durationType = reflect.TypeFor[time.Duration]()

// scaleDurations multiplies every settable time.Duration reachable from v
// through struct fields, arrays and slices by k. Pointers and maps are not
// followed: a profile is a value, and whatever it points to may be shared.
func scaleDurations(v reflect.Value, k float64) {
	switch {
	case v.Type() == durationType:
		if v.CanSet() {
			v.SetInt(int64(math.Round(float64(v.Int()) * k)))
		}
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			scaleDurations(v.Field(i), k)
		}
	case v.Kind() == reflect.Array || v.Kind() == reflect.Slice:
		if v.Kind() == reflect.Slice && v.Len() > 0 {
			// A slice shares its backing array with the original: copy.
			c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
			reflect.Copy(c, v)
			if v.CanSet() {
				v.Set(c)
			}
			v = c
		}
		for i := range v.Len() {
			scaleDurations(v.Index(i), k)
		}
	}
}

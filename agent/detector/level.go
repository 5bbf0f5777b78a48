package detector

// Shown is the suspicion level to present for a peer, from its phi and
// the threshold it is judged by. While the peer is judged (alive or
// suspect) it is its phi. A verdict ends the judging: a failed peer is
// shown at the threshold, convicted — its phi goes on growing with the
// silence (155043.30 a day later), which says nothing more — and a peer
// that left is shown at 0, since nobody expects to hear from it.
func Shown(phi, threshold float64, failed, left bool) float64 {
	switch {
	case left:
		return 0
	case failed:
		return threshold
	}
	return phi
}

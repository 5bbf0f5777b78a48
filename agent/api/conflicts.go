package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// ErrNoKeyConflict is what Backend.Rekey wraps when no other key is
// offered for the name: there is nothing to accept.
var ErrNoKeyConflict = errors.New("no key conflict")

// getConflicts lists the names this agent has pinned to one key and sees
// offered with another.
func (s *Server) getConflicts(w http.ResponseWriter, _ *http.Request) {
	out := s.b.KeyConflicts()
	if out == nil {
		out = []apitypes.KeyConflict{}
	}
	s.writeJSON(w, http.StatusOK, out)
}

// postRekey accepts the key a node name is being offered with: the step
// after a node's card was reinstalled. It needs the token, as every write.
// It only ever pins a key this agent has seen sign for the name; it cannot
// pin a key of the caller's choosing.
func (s *Server) postRekey(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := apitypes.ValidateNodeName(name); err != nil {
		s.writeError(w, styleV1, http.StatusBadRequest, "rekey: "+err.Error())
		return
	}
	if name == s.b.Self().Name {
		s.writeError(w, styleV1, http.StatusBadRequest,
			fmt.Sprintf("rekey %s: that is this agent's own name; a node's key changes only when node.key is removed from its data dir, and its peers are rekeyed", apitypes.Quote(name)))
		return
	}
	k, err := s.b.Rekey(r.Context(), name)
	switch {
	case errors.Is(err, ErrNoKeyConflict):
		s.writeError(w, styleV1, http.StatusConflict,
			fmt.Sprintf("rekey %s: this agent pins %s to a key and sees no other key for it, so there is nothing to accept: "+
				"rekey after the reinstalled node has joined and GET /v1/conflicts lists it", apitypes.Quote(name), apitypes.Quote(name)))
		return
	case err != nil:
		s.log.Error("rekey", "node", name, "err", err)
		s.writeError(w, styleV1, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Warn("node re-keyed through the API", "node", name, "was", k.PinnedFingerprint, "now", k.OfferedFingerprint, "remote", r.RemoteAddr)
	s.writeJSON(w, http.StatusOK, apitypes.RekeyResult{Agent: s.b.Self().Name, Conflict: k})
}

package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// Errors Backend.ForceLeave wraps.
var (
	// ErrUnknownNode: the answering agent does not list the name.
	ErrUnknownNode = errors.New("no such node")
	// ErrNodeAlive: the node is alive here (or is the answering agent
	// itself): it leaves by being stopped, not by force.
	ErrNodeAlive = errors.New("node is alive")
)

// postForceLeave removes a failed or left node from the answering agent's
// view at once, and the agent asks its peers to do the same (Serf's
// force-leave). It needs the token, as every write. A node held alive is
// refused: a force-leave can never take a live node out of the cluster.
func (s *Server) postForceLeave(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := apitypes.ValidateNodeName(name); err != nil {
		s.writeError(w, styleV1, http.StatusBadRequest, "force-leave: "+err.Error())
		return
	}
	n, err := s.b.ForceLeave(r.Context(), name)
	switch {
	case errors.Is(err, ErrUnknownNode):
		s.writeError(w, styleV1, http.StatusNotFound,
			fmt.Sprintf("force-leave %s: this agent does not list it (already reaped?): GET /v1/nodes lists the members it knows", apitypes.Quote(name)))
		return
	case errors.Is(err, ErrNodeAlive):
		s.writeError(w, styleV1, http.StatusConflict, err.Error())
		return
	case err != nil:
		s.log.Error("force-leave", "node", name, "err", err)
		s.writeError(w, styleV1, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("node force-left through the API", "node", name, "status", n.Status, "remote", r.RemoteAddr)
	s.writeJSON(w, http.StatusOK, apitypes.ForceLeaveResult{Agent: s.b.Self().Name, Node: n})
}

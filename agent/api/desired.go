package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"net/http"
)

// getDesired answers GET /v1/desired: how many replicas of each service the
// cluster should run.
func (s *Server) getDesired(w http.ResponseWriter, _ *http.Request) {
	services := s.b.Desired()
	if services == nil {
		services = []apitypes.DesiredService{}
	}
	s.writeJSON(w, http.StatusOK, apitypes.DesiredState{Services: services})
}

// getDesiredFor answers GET /v1/desired/{service}; 404 when nothing was ever
// asked of the service.
func (s *Server) getDesiredFor(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if err := apitypes.ValidateServiceName(service); err != nil {
		s.writeError(w, styleV1, http.StatusBadRequest, err.Error())
		return
	}
	d, ok := s.b.DesiredFor(service)
	if !ok {
		s.writeError(w, styleV1, http.StatusNotFound, fmt.Sprintf("no desired state for service %q: rpi-launch N %s sets it", service, service))
		return
	}
	s.writeJSON(w, http.StatusOK, d)
}

// putDesired answers PUT /v1/desired/{service} with a DesiredChange body:
// {"replicas": N} sets the count, {"delta": N} adds to it.
func (s *Server) putDesired(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if err := apitypes.ValidateServiceName(service); err != nil {
		s.writeError(w, styleV1, http.StatusBadRequest, err.Error())
		return
	}
	change, err := decodeDesiredChange(r)
	if err != nil {
		s.writeError(w, styleV1, http.StatusBadRequest, err.Error())
		return
	}
	d, err := s.b.ChangeDesired(r.Context(), service, change)
	if err != nil {
		// The desired table is in memory: what can fail is the request
		// (a count out of range, a full table), not the node.
		s.writeError(w, styleV1, http.StatusBadRequest, fmt.Sprintf("change desired state of %s: %v", service, err))
		return
	}
	s.writeJSON(w, http.StatusOK, d)
}

// decodeDesiredChange reads and checks a DesiredChange: strict JSON, at
// most one of replicas and delta, replicas not negative, and something to
// change (a count, a policy or rendered hashes).
func decodeDesiredChange(r *http.Request) (apitypes.DesiredChange, error) {
	var c apitypes.DesiredChange
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf(`invalid body: %v; send {"replicas": N} or {"delta": N}`, err)
	}
	if dec.More() {
		return c, errors.New(`invalid body: one JSON object expected; send {"replicas": N} or {"delta": N}`)
	}
	switch {
	case c.Replicas != nil && c.Delta != nil:
		return c, errors.New(`invalid body: give either "replicas" or "delta", not both`)
	case c.Replicas == nil && c.Delta == nil && c.Policy == nil && c.Rendered == nil:
		return c, errors.New(`invalid body: give "replicas" (a count) or "delta" (a change to it), or "policy" or "rendered"`)
	case c.Replicas != nil && *c.Replicas < 0:
		return c, fmt.Errorf(`invalid body: replicas %d is negative`, *c.Replicas)
	}
	return c, nil
}

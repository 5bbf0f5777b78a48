package api

import (
	"context"
	"fmt"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"net/http"
	"slices"
)

func (s *Server) getNodes(w http.ResponseWriter, _ *http.Request) {
	s.writeJSON(w, http.StatusOK, s.nodes())
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	for _, n := range s.nodes() {
		if n.Name == name {
			s.writeJSON(w, http.StatusOK, n)
			return
		}
	}
	s.writeError(w, styleV1, http.StatusNotFound,
		fmt.Sprintf("node %q not found: GET /v1/nodes lists the members this agent knows", name))
}

func (s *Server) getSelf(w http.ResponseWriter, _ *http.Request) {
	s.writeJSON(w, http.StatusOK, s.self())
}

// getServiceNodes answers every known node whose services include the
// service, whatever its status: the status is in each record, and callers
// that only want nodes able to serve filter on it (or use the seed path
// /nodes/workingService, which lists alive nodes only).
func (s *Server) getServiceNodes(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if err := apitypes.ValidateServiceName(service); err != nil {
		s.writeError(w, styleV1, http.StatusBadRequest, err.Error())
		return
	}
	res := []apitypes.Node{}
	for _, n := range s.nodes() {
		if slices.Contains(n.Services, service) {
			res = append(res, n)
		}
	}
	s.writeJSON(w, http.StatusOK, res)
}

func (s *Server) putService(w http.ResponseWriter, r *http.Request) {
	s.changeService(w, r, "add", s.b.AddService)
}

func (s *Server) deleteService(w http.ResponseWriter, r *http.Request) {
	s.changeService(w, r, "remove", s.b.RemoveService)
}

func (s *Server) changeService(w http.ResponseWriter, r *http.Request, op string,
	change func(context.Context, string) (bool, error)) {
	service := r.PathValue("service")
	if err := apitypes.ValidateServiceName(service); err != nil {
		s.writeError(w, styleV1, http.StatusBadRequest, err.Error())
		return
	}
	changed, err := change(r.Context(), service)
	if err != nil {
		s.log.Error(op+" service", "service", service, "err", err)
		s.writeError(w, styleV1, http.StatusInternalServerError, fmt.Sprintf("%s service %s: %v", op, service, err))
		return
	}
	self := s.self()
	s.writeJSON(w, http.StatusOK, apitypes.ServiceResult{
		Node:     self.Name,
		Service:  service,
		Changed:  changed,
		Services: self.Services,
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	s.writeJSON(w, http.StatusOK, apitypes.Health{Status: "ok", Node: s.b.Self().Name, Cluster: s.cluster, Warnings: s.Warnings()})
}

package api

import (
	"context"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"net"
	"net/http"
	"slices"
	"strconv"
)

// The seed-compatible endpoints answer with the original project's JSON
// shapes (types.go) so that scripts written for it keep working. Unlike the
// original they answer errors with real status codes.

func (s *Server) seedAddService(w http.ResponseWriter, r *http.Request) {
	s.seedChangeService(w, r, "add", s.b.AddService)
}

func (s *Server) seedRemoveService(w http.ResponseWriter, r *http.Request) {
	s.seedChangeService(w, r, "remove", s.b.RemoveService)
}

func (s *Server) seedChangeService(w http.ResponseWriter, r *http.Request, op string,
	change func(context.Context, string) (bool, error)) {
	service := r.PathValue("service")
	if err := apitypes.ValidateServiceName(service); err != nil {
		s.writeError(w, styleSeed, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := change(r.Context(), service); err != nil {
		s.log.Error(op+" service", "service", service, "err", err)
		s.writeError(w, styleSeed, http.StatusInternalServerError, op+" service "+service+": "+err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, apitypes.SeedService{Service: service})
}

// seedAlive answers the "ip:gossip port" of every alive member, this node
// included.
func (s *Server) seedAlive(w http.ResponseWriter, _ *http.Request) {
	peers := []string{}
	for _, n := range s.nodes() {
		if n.Status == apitypes.StatusAlive {
			peers = append(peers, net.JoinHostPort(n.Address, strconv.Itoa(n.GossipPort)))
		}
	}
	s.writeJSON(w, http.StatusOK, apitypes.SeedAlive{AlivePeers: peers})
}

// seedMonitoring answers the last sample of every current member (alive or
// suspect). Failed and left nodes are left out: their samples are stale, and
// the original listed only the peers it could reach.
func (s *Server) seedMonitoring(w http.ResponseWriter, _ *http.Request) {
	res := []apitypes.SeedNodeMonitoring{}
	for _, n := range s.nodes() {
		if n.Status != apitypes.StatusAlive && n.Status != apitypes.StatusSuspect {
			continue
		}
		m := n.Monitoring
		free := uint64(0)
		if m.MemTotal > m.MemUsed {
			free = m.MemTotal - m.MemUsed
		}
		res = append(res, apitypes.SeedNodeMonitoring{
			Name:      n.Name,
			IP:        n.Address,
			CountCPUs: m.CPUs,
			CPUs:      m.CPUPercent / 100,
			FreeMem:   free,
			TotalMem:  m.MemTotal,
			LoadAvg1:  m.Load1,
			LoadAvg5:  m.Load5,
			LoadAvg15: m.Load15,
		})
	}
	s.writeJSON(w, http.StatusOK, apitypes.SeedMonitoring{Res: res})
}

// seedWorkingService answers the IPs of the alive nodes running a service.
// Its callers build load-balancer upstreams and Ansible host lists from it,
// so only nodes that can serve now are listed: failed and left nodes still
// carry the service in their last record but cannot answer, and a suspect
// node is one the cluster is about to declare failed.
func (s *Server) seedWorkingService(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if err := apitypes.ValidateServiceName(service); err != nil {
		s.writeError(w, styleSeed, http.StatusBadRequest, err.Error())
		return
	}
	res := []string{}
	for _, n := range s.nodes() {
		if n.Status == apitypes.StatusAlive && slices.Contains(n.Services, service) {
			res = append(res, n.Address)
		}
	}
	s.writeJSON(w, http.StatusOK, apitypes.SeedWorkingService{Res: res})
}

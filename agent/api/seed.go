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
	changed, err := change(r.Context(), service)
	if err != nil {
		s.log.Error(op+" service", "service", service, "err", err)
		s.writeError(w, styleSeed, http.StatusInternalServerError, op+" service "+service+": "+err.Error())
		return
	}
	if op == "remove" && !changed {
		// The original answered 200 whatever the node ran; a script that
		// removes what is not there has a wrong view of the cluster.
		s.writeError(w, styleSeed, http.StatusNotFound, "remove service "+service+": this node does not run it (GET /nodes/workingService/"+service+" lists the nodes that do)")
		return
	}
	s.writeJSON(w, http.StatusOK, apitypes.SeedService{Service: service})
}

// The three read paths share one notion of available (Node.Available:
// alive and suspected below the threshold), as the original listed only the
// peers it could reach: a suspect node is in none of them, so a client
// cannot pick from /nodes/monitoring a node that /nodes/workingService did
// not list as running the service.

// seedAlive answers the "ip:gossip port" of every available member, this
// node included.
func (s *Server) seedAlive(w http.ResponseWriter, _ *http.Request) {
	peers := []string{}
	for _, n := range s.nodes() {
		if n.Available() {
			peers = append(peers, net.JoinHostPort(n.Address, strconv.Itoa(n.GossipPort)))
		}
	}
	s.writeJSON(w, http.StatusOK, apitypes.SeedAlive{AlivePeers: peers})
}

// seedMonitoring answers the last sample of every available member. A node
// without a first sample yet is left out: its countCPUs and totalmem of 0
// make the original's busy score NaN, which sorts anywhere; it appears once
// it has sampled (one monitoring interval after it joined).
func (s *Server) seedMonitoring(w http.ResponseWriter, _ *http.Request) {
	res := []apitypes.SeedNodeMonitoring{}
	for _, n := range s.nodes() {
		if !n.Available() || !n.Monitoring.Sampled() {
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

// seedWorkingService answers the IPs of the available nodes running a
// service. Its callers build load-balancer upstreams and Ansible host lists
// from it, so only nodes that can serve now are listed: failed and left
// nodes still carry the service in their last record but cannot answer, and
// a suspect node is one the cluster is about to declare failed.
func (s *Server) seedWorkingService(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if err := apitypes.ValidateServiceName(service); err != nil {
		s.writeError(w, styleSeed, http.StatusBadRequest, err.Error())
		return
	}
	res := []string{}
	for _, n := range s.nodes() {
		if n.Available() && slices.Contains(n.Services, service) {
			res = append(res, n.Address)
		}
	}
	s.writeJSON(w, http.StatusOK, apitypes.SeedWorkingService{Res: res})
}

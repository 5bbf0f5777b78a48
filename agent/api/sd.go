package api

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// sdTargetGroup is one entry of Prometheus' HTTP service discovery format
// (http_sd_configs): the targets to scrape and the labels they get.
type sdTargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// prometheusSD answers GET /v1/sd/prometheus: one target group per node
// that has not left, its target the node's agent endpoint (address and
// HTTP port), for a Prometheus http_sd_configs entry.
//
// Failed nodes stay listed until they are reaped, so their target goes
// down and `up == 0` fires; a node that left on purpose is dropped. node,
// arch and model are target labels: they never change while a node lives,
// so they do not cut its series in two. Services and status do change, so
// they are meta labels (__meta_rpi_services as ",a,b,", as consul_sd gives
// tags, and __meta_rpi_status), for relabel rules to keep or filter on.
func (s *Server) prometheusSD(w http.ResponseWriter, _ *http.Request) {
	groups := []sdTargetGroup{}
	for _, n := range s.b.Nodes() {
		if n.Status == apitypes.StatusLeft || n.Address == "" || n.HTTPPort <= 0 {
			continue
		}
		labels := map[string]string{
			"node":                n.Name,
			"__meta_rpi_status":   n.Status,
			"__meta_rpi_version":  n.Version,
			"__meta_rpi_services": ",",
		}
		if len(n.Services) > 0 {
			labels["__meta_rpi_services"] = "," + strings.Join(n.Services, ",") + ","
		}
		// An empty label is the same as no label to Prometheus.
		if n.Arch != "" {
			labels["arch"] = n.Arch
		}
		if n.Model != "" {
			labels["model"] = n.Model
		}
		groups = append(groups, sdTargetGroup{
			Targets: []string{net.JoinHostPort(n.Address, strconv.Itoa(n.HTTPPort))},
			Labels:  labels,
		})
	}
	s.writeJSON(w, http.StatusOK, groups)
}

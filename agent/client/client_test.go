package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMetric(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("# TYPE rpi_gossip_bytes_total counter\n" +
			"rpi_gossip_bytes_total{direction=\"sent\"} 1.2345e+06\n" +
			"rpi_gossip_bytes_total{direction=\"received\"} 7\n" +
			"rpi_verdicts_overruled_total 3\n" +
			"rpi_bad_total x\n"))
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL}
	ctx := context.Background()
	for sample, want := range map[string]float64{
		`rpi_gossip_bytes_total{direction="sent"}`:     1234500,
		`rpi_gossip_bytes_total{direction="received"}`: 7,
		"rpi_verdicts_overruled_total":                 3,
	} {
		if got, err := c.Metric(ctx, sample); err != nil || got != want {
			t.Errorf("Metric(%s) = %v, %v; want %v", sample, got, err, want)
		}
	}
	for sample, want := range map[string]string{
		"rpi_gossip_bytes_total": "has no sample", // labelled samples only
		"rpi_members":            "has no sample",
		"rpi_bad_total":          "rpi_bad_total x",
	} {
		if _, err := c.Metric(ctx, sample); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Metric(%s) error %v, want one saying %q", sample, err, want)
		}
	}
}

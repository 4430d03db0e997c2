package crowdsec

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Server metrics: namespace portcullis, subsystem lapi.
var (
	descRequests = prometheus.NewDesc("portcullis_lapi_requests_total",
		"LAPI requests answered, by endpoint (stream, decisions, other) and HTTP status.", []string{"endpoint", "code"}, nil)
	descLive = prometheus.NewDesc("portcullis_lapi_decisions",
		"Live decisions held (expired ones are dropped at the next feed change or stream call).", nil, nil)
	descBouncers = prometheus.NewDesc("portcullis_lapi_bouncers",
		"API keys that pulled the stream at least once.", nil, nil)
)

// reqKey is one label pair of the requests counter.
type reqKey struct {
	endpoint string
	code     int
}

// count records an answered request; the caller holds no lock.
func (s *Server) count(endpoint string, code int) {
	s.statsMu.Lock()
	s.requests[reqKey{endpoint, code}]++
	s.statsMu.Unlock()
}

// Describe implements prometheus.Collector.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descLive
	ch <- descBouncers
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	s.statsMu.Lock()
	for k, n := range s.requests {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(n), k.endpoint, strconv.Itoa(k.code))
	}
	s.statsMu.Unlock()
	s.mu.Lock()
	live, bouncers := len(s.live), len(s.cursors)
	s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(live))
	ch <- prometheus.MustNewConstMetric(descBouncers, prometheus.GaugeValue, float64(bouncers))
}

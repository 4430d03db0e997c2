package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-ips/portcullis/enforcer/banfile"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// metrics are the bouncer's own Prometheus metrics, subsystem nginx_bouncer.
// The feed's (lag among them) come from the subscriber's collector.
type metrics struct {
	checks     *prometheus.CounterVec
	bansServed *prometheus.CounterVec
	lookup     prometheus.Histogram
	badAddress *prometheus.CounterVec

	// The checks counter's children, resolved once for the hot path.
	allow, ban, captcha, unreadyOpen, unreadyClosed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, set *prefixset.Set) *metrics {
	const ns, sub = "portcullis", "nginx_bouncer"
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "checks_total",
			Help: "auth_request checks answered, by verdict (allow, ban, captcha, unready_open, unready_closed).",
		}, []string{"verdict"}),
		bansServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "bans_served_total",
			Help: "403 answers given, by the decision's scenario (or origin when it has none).",
		}, []string{"scenario"}),
		lookup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "lookup_duration_seconds",
			Help:    "Time to look a client address up in the prefix set.",
			Buckets: prometheus.ExponentialBuckets(50e-9, 2, 14), // 50ns .. 410µs
		}),
		badAddress: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "client_address_invalid_total",
			Help: "Requests whose client address header (or peer) could not be used; the peer address was judged instead.",
		}, []string{"header"}),
	}
	prefixes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: ns, Subsystem: sub, Name: "prefixes",
		Help: "Prefixes held in memory, expired ones not yet swept included.",
	}, func() float64 { return float64(set.Len()) })
	reg.MustRegister(m.checks, m.bansServed, m.lookup, m.badAddress, prefixes)
	m.allow = m.checks.WithLabelValues(verdictAllow)
	m.ban = m.checks.WithLabelValues(verdictBan)
	m.captcha = m.checks.WithLabelValues(verdictCaptcha)
	m.unreadyOpen = m.checks.WithLabelValues(verdictUnreadyOpen)
	m.unreadyClosed = m.checks.WithLabelValues(verdictUnreadyClosed)
	for _, h := range []string{"x-real-ip", "x-forwarded-for", "peer"} {
		m.badAddress.WithLabelValues(h)
	}
	return m
}

// registerBanFileMetrics exports the ban file's last generation.
func registerBanFileMetrics(reg prometheus.Registerer, f *banfile.File) {
	const ns, sub = "portcullis", "nginx_bouncer"
	gauge := func(name, help string, v func(banfile.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help},
			func() float64 { return v(f.Stats()) })
	}
	reg.MustRegister(
		gauge("ban_file_generation", "Generation of the ban file last written.", func(s banfile.Stats) float64 { return float64(s.Generation) }),
		gauge("ban_file_bytes", "Size of the ban file last written.", func(s banfile.Stats) float64 { return float64(s.Bytes) }),
		gauge("ban_file_segments", "Address ranges in the ban file last written.", func(s banfile.Stats) float64 { return float64(s.Segments4 + s.Segments6) }),
		gauge("ban_file_build_seconds", "Time taken to build and write the last ban file.", func(s banfile.Stats) float64 { return s.BuildDuration.Seconds() }),
	)
}

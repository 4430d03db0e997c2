package daemon

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/event"
)

// metrics are the daemon's counters, namespace portcullis, subsystem engine
// (acquisition's own are subsystem acquire).
type metrics struct {
	acquire       *acquire.Metrics
	events        *prometheus.CounterVec
	alerts        *prometheus.CounterVec
	decisions     *prometheus.CounterVec
	published     *prometheus.CounterVec
	publishErrors *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	rekeyOut      prometheus.Counter
	rekeyIn       prometheus.Counter
	rekeyBad      prometheus.Counter
	unkeyed       prometheus.Counter
	pruned        *prometheus.CounterVec
	pruneErrors   prometheus.Counter

	// byType caches the events counter of the known event types, so the
	// hot path makes no label lookup.
	byType map[string]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, d *Daemon) (*metrics, error) {
	am, err := acquire.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "engine", Name: name, Help: help}, labels)
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "engine", Name: name, Help: help})
	}
	m := &metrics{
		acquire:       am,
		events:        cv("events_total", "Parsed events offered to the scenarios, by event type.", "type"),
		alerts:        cv("alerts_total", "Alerts raised, by scenario.", "scenario"),
		decisions:     cv("decisions_total", "Decisions made, by scenario.", "scenario"),
		published:     cv("published_total", "Alerts and decisions written to Kafka, by kind.", "kind"),
		publishErrors: cv("publish_errors_total", "Failed writes to Kafka (retried), by topic role.", "topic"),
		dropped:       cv("dropped_total", "Output given up at shutdown after the drain timeout, by kind.", "kind"),
		rekeyOut:      c("rekey_events_published_total", "Parsed events published to the events topic for re-keying."),
		rekeyIn:       c("rekey_events_consumed_total", "Re-keyed events consumed from the events topic."),
		rekeyBad:      c("rekey_bad_events_total", "Events that could not be encoded or decoded for re-keying, skipped."),
		unkeyed:       c("rekey_events_without_source_total", "Parsed events without a client address, not re-keyed (nothing to count them by)."),
		pruned:        cv("pruned_total", "Keys of the decisions topic tombstoned, by why (expired, deleted), and records written again after a racing tombstone (republished).", "why"),
		pruneErrors:   c("prune_errors_total", "Pruning passes that failed (the partition is read again from the start)."),
		byType:        map[string]prometheus.Counter{},
	}
	for _, t := range []string{event.TypeHTTPAccess, event.TypeHTTPError, event.TypeSSHFailedAuth,
		event.TypeSSHInvalidUser, event.TypeSSHPreauthClose, event.TypeSSHTooManyAuth} {
		m.byType[t] = m.events.WithLabelValues(t)
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.events, m.alerts, m.decisions, m.published, m.publishErrors,
		m.dropped, m.rekeyOut, m.rekeyIn, m.rekeyBad, m.unkeyed, m.pruned, m.pruneErrors, &statsCollector{d: d}} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("register engine metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) eventCounter(typ string) prometheus.Counter {
	if c, ok := m.byType[typ]; ok {
		return c
	}
	return m.events.WithLabelValues(typ)
}

var (
	descParse = prometheus.NewDesc("portcullis_engine_parse_lines_total",
		"Lines through the parsers, by format and result (event, no_event, malformed).", []string{"format", "result"}, nil)
	descDetect = prometheus.NewDesc("portcullis_engine_detect_events_total",
		"Events through the detect stage, by outcome (offered, no_source, whitelisted, matched, silenced).", []string{"outcome"}, nil)
	descOverflows = prometheus.NewDesc("portcullis_engine_overflows_total",
		"Scenario buckets that overflowed.", nil, nil)
	descBuckets = prometheus.NewDesc("portcullis_engine_buckets",
		"Leaky buckets held now, all scenarios.", nil, nil)
	descEvicted = prometheus.NewDesc("portcullis_engine_buckets_evicted_total",
		"Live buckets dropped to respect the per-scenario bound.", nil, nil)
)

// statsCollector reads the parser's counters and the detect stage's last
// snapshot at scrape time.
type statsCollector struct{ d *Daemon }

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descParse, descDetect, descOverflows, descBuckets, descEvicted} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	if p := c.d.parser; p != nil {
		for _, f := range p.Stats() {
			ch <- prometheus.MustNewConstMetric(descParse, prometheus.CounterValue, float64(f.Events), f.Format, "event")
			ch <- prometheus.MustNewConstMetric(descParse, prometheus.CounterValue, float64(f.NoEvent), f.Format, "no_event")
			ch <- prometheus.MustNewConstMetric(descParse, prometheus.CounterValue, float64(f.Malformed), f.Format, "malformed")
		}
	}
	st := c.d.detect.Load()
	if st == nil {
		return
	}
	for _, o := range []struct {
		name string
		v    uint64
	}{
		{"offered", st.Events}, {"no_source", st.NoSource}, {"whitelisted", st.Whitelisted},
		{"matched", st.Scenarios.Matched}, {"silenced", st.Scenarios.Silenced},
	} {
		ch <- prometheus.MustNewConstMetric(descDetect, prometheus.CounterValue, float64(o.v), o.name)
	}
	ch <- prometheus.MustNewConstMetric(descOverflows, prometheus.CounterValue, float64(st.Scenarios.Overflows))
	ch <- prometheus.MustNewConstMetric(descBuckets, prometheus.GaugeValue, float64(st.Scenarios.Buckets))
	ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(st.Scenarios.Evicted))
}

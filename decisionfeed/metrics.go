package decisionfeed

import "github.com/prometheus/client_golang/prometheus"

// Metric descriptions of a subscriber, namespace portcullis, subsystem feed.
var (
	descLag = prometheus.NewDesc("portcullis_feed_lag",
		"Messages on the decisions topic not yet handed to the enforcer (sum over partitions).", nil, nil)
	descMessages = prometheus.NewDesc("portcullis_feed_messages_total",
		"Messages read from the decisions topic, valid or not.", nil, nil)
	descInvalid = prometheus.NewDesc("portcullis_feed_invalid_total",
		"Messages of the decisions topic that failed validation and went to the dead-letter topic.", nil, nil)
	descDLQErrors = prometheus.NewDesc("portcullis_feed_dlq_errors_total",
		"Invalid messages that could not be copied to the dead-letter topic.", nil, nil)
	descFetchErrors = prometheus.NewDesc("portcullis_feed_fetch_errors_total",
		"Failed requests to the brokers, each retried with backoff.", nil, nil)
	descLive = prometheus.NewDesc("portcullis_feed_live",
		"Addresses where a decision stands (each enforced as the union of its decisions).", nil, nil)
	descStanding = prometheus.NewDesc("portcullis_feed_standing",
		"Keys (one producer's decision on one address) under which a decision stands.", nil, nil)
	descNoopDeletes = prometheus.NewDesc("portcullis_feed_noop_deletes_total",
		"Deletes and tombstones of keys that held nothing.", nil, nil)
	descLegacyKeys = prometheus.NewDesc("portcullis_feed_legacy_keys_total",
		"Messages read under a schema v1 key without origin.", nil, nil)
	descReady = prometheus.NewDesc("portcullis_feed_ready",
		"1 once the live set was rebuilt and handed to the enforcer.", nil, nil)
)

// Describe implements prometheus.Collector, so a subscriber can be
// registered as it is.
func (s *Subscriber) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLag, descMessages, descInvalid, descDLQErrors, descFetchErrors, descLive, descStanding, descNoopDeletes, descLegacyKeys, descReady} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Subscriber) Collect(ch chan<- prometheus.Metric) {
	st := s.Stats()
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(st.Lag))
	ch <- prometheus.MustNewConstMetric(descMessages, prometheus.CounterValue, float64(st.Messages))
	ch <- prometheus.MustNewConstMetric(descInvalid, prometheus.CounterValue, float64(st.Invalid))
	ch <- prometheus.MustNewConstMetric(descDLQErrors, prometheus.CounterValue, float64(st.DLQErrors))
	ch <- prometheus.MustNewConstMetric(descFetchErrors, prometheus.CounterValue, float64(st.FetchErrors))
	ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(st.Live))
	ch <- prometheus.MustNewConstMetric(descStanding, prometheus.GaugeValue, float64(st.Standing))
	ch <- prometheus.MustNewConstMetric(descNoopDeletes, prometheus.CounterValue, float64(st.NoopDeletes))
	ch <- prometheus.MustNewConstMetric(descLegacyKeys, prometheus.CounterValue, float64(st.LegacyKeys))
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
}

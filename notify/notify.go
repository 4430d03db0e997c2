package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"golang.org/x/time/rate"

	"github.com/portcullis-ips/portcullis/engine"
)

// Source yields the alerts topic's messages and remembers how far they
// were delivered. *kafka.Reader with a GroupID is one.
type Source interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	CommitMessages(ctx context.Context, msgs ...kafka.Message) error
}

// Notifier delivers alerts from a Source to the configured destinations.
type Notifier struct {
	cfg   Config
	log   *slog.Logger
	dests []*destination
	m     metrics
}

// destination is a configured destination ready to send.
type destination struct {
	cfg     *Destination
	sender  sender
	limiter *rate.Limiter // nil: no limit
	minSev  Severity
}

type metrics struct {
	alerts      *prometheus.CounterVec // result: delivered, filtered
	invalid     prometheus.Counter
	sent        *prometheus.CounterVec // per destination
	failures    *prometheus.CounterVec // per destination
	dropped     *prometheus.CounterVec // permanent failures, per destination
	lastSuccess *prometheus.GaugeVec
}

// New builds a Notifier from a validated configuration, reading the
// destinations' secrets. reg receives its metrics (nil: none).
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Notifier, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{cfg: cfg, log: logger}
	for i := range cfg.Destinations {
		d := &cfg.Destinations[i]
		if d.Timeout == 0 {
			d.Timeout = 10 * time.Second
		}
		s, err := newSender(d)
		if err != nil {
			return nil, fmt.Errorf("destinations[%d] %s: %w", i, d.Name, err)
		}
		sev, _ := parseSeverity(d.Filter.MinSeverity) // validated
		nd := &destination{cfg: d, sender: s, minSev: sev}
		if d.MaxPerMinute > 0 {
			nd.limiter = rate.NewLimiter(rate.Limit(float64(d.MaxPerMinute)/60), 1)
		}
		if d.SMTP.InsecureSkipVerify {
			logger.Warn("TLS certificate verification is OFF for this destination; labs only", "destination", d.Name)
		}
		n.dests = append(n.dests, nd)
	}
	n.m = metrics{
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "notify",
			Name: "alerts_total", Help: "Alerts read, by what became of them for each destination (delivered, filtered)."}, []string{"destination", "result"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "notify",
			Name: "invalid_messages_total", Help: "Messages on the alerts topic that are not alerts (skipped)."}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "notify",
			Name: "messages_sent_total", Help: "Messages (batches) delivered, by destination."}, []string{"destination"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "notify",
			Name: "delivery_failures_total", Help: "Failed delivery attempts (each retried), by destination."}, []string{"destination"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "notify",
			Name: "batches_dropped_total", Help: "Batches a destination could never take (its template fails on them)."}, []string{"destination"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "portcullis", Subsystem: "notify",
			Name: "last_success_timestamp_seconds", Help: "Unix time of the last delivery, by destination."}, []string{"destination"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{n.m.alerts, n.m.invalid, n.m.sent, n.m.failures, n.m.dropped, n.m.lastSuccess} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return n, nil
}

// Opener opens the Source of one destination: each destination reads
// the topic under a consumer group of its own (GroupFor), so a receiver
// that is down holds back only its own alerts.
type Opener func(group string) (Source, error)

// GroupFor is the consumer group of a destination.
func (n *Notifier) GroupFor(dest string) string { return n.cfg.Group + "." + dest }

// Run delivers until ctx ends. Each destination reads under its own group
// and commits a batch's offsets only once the destination took it, so
// what was not delivered when Run returns is read again by the next run.
func (n *Notifier) Run(ctx context.Context, open Opener) error {
	srcs := make([]Source, len(n.dests))
	for i, d := range n.dests {
		s, err := open(n.GroupFor(d.cfg.Name))
		if err != nil {
			return fmt.Errorf("destination %s: %w", d.cfg.Name, err)
		}
		srcs[i] = s
	}
	errs := make(chan error, len(n.dests))
	for i, d := range n.dests {
		go func() { errs <- n.runDestination(ctx, d, srcs[i]) }()
	}
	var first error
	for range n.dests {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// runDestination is one destination's loop: collect a batch, keep what its
// filter passes, deliver, commit.
func (n *Notifier) runDestination(ctx context.Context, d *destination, src Source) error {
	for {
		msgs, err := n.collect(ctx, src)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("destination %s: %w", d.cfg.Name, err)
		}
		alerts := n.decode(msgs)
		share := d.selectAlerts(alerts)
		n.m.alerts.WithLabelValues(d.cfg.Name, "filtered").Add(float64(len(alerts) - len(share)))
		if len(share) > 0 {
			if !n.deliverOne(ctx, d, Batch{Alerts: share, Destination: d.cfg.Name}) {
				return nil // stopped mid-delivery: not committed, sent again next run
			}
			n.m.alerts.WithLabelValues(d.cfg.Name, "delivered").Add(float64(len(share)))
		}
		if err := src.CommitMessages(ctx, msgs...); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// The alerts were delivered; a lost commit only repeats them.
			n.log.Warn("commit offsets", "destination", d.cfg.Name, "err", err)
		}
	}
}

// collect waits for a first message, then gathers more until the batch
// is full or MaxWait has passed since the first.
func (n *Notifier) collect(ctx context.Context, src Source) ([]kafka.Message, error) {
	first, err := src.FetchMessage(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch alerts: %w", err)
	}
	msgs := []kafka.Message{first}
	wctx, cancel := context.WithTimeout(ctx, n.cfg.Batch.MaxWait)
	defer cancel()
	for len(msgs) < n.cfg.Batch.MaxAlerts {
		m, err := src.FetchMessage(wctx)
		if err != nil {
			if wctx.Err() != nil {
				break
			}
			return nil, fmt.Errorf("fetch alerts: %w", err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// decode keeps the valid alerts, counting and logging the rest. Every
// destination reads every message, so each invalid one is counted once
// per destination.
func (n *Notifier) decode(msgs []kafka.Message) []engine.Alert {
	out := make([]engine.Alert, 0, len(msgs))
	for _, m := range msgs {
		a, err := engine.DecodeAlert(m.Value)
		if err != nil {
			n.m.invalid.Inc()
			n.log.Warn("skip message that is not an alert", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		out = append(out, a)
	}
	return out
}

func (n *Notifier) deliverOne(ctx context.Context, d *destination, b Batch) bool {
	for attempt := 0; ; attempt++ {
		if d.limiter != nil {
			if err := d.limiter.Wait(ctx); err != nil {
				return false
			}
		}
		actx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
		err := d.sender.send(actx, b)
		cancel()
		if err == nil {
			n.m.sent.WithLabelValues(d.cfg.Name).Inc()
			n.m.lastSuccess.WithLabelValues(d.cfg.Name).SetToCurrentTime()
			if attempt > 0 {
				n.log.Info("delivered after retries", "destination", d.cfg.Name, "attempts", attempt+1, "alerts", len(b.Alerts))
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		var perm permanentError
		if errors.As(err, &perm) {
			n.m.dropped.WithLabelValues(d.cfg.Name).Inc()
			n.log.Error("batch dropped for destination", "destination", d.cfg.Name, "alerts", len(b.Alerts), "err", err)
			return true
		}
		n.m.failures.WithLabelValues(d.cfg.Name).Inc()
		wait := n.backoff(attempt)
		n.log.Warn("delivery failed, retrying", "destination", d.cfg.Name, "attempt", attempt+1, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// backoff is exponential from Retry.Min to Retry.Max, with up to 20%
// jitter so that several notifiers do not retry in step.
func (n *Notifier) backoff(attempt int) time.Duration {
	d := n.cfg.Retry.Min
	for i := 0; i < attempt && d < n.cfg.Retry.Max; i++ {
		d *= 2
	}
	d = min(d, n.cfg.Retry.Max)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// selectAlerts returns the alerts that pass the destination's filter.
func (d *destination) selectAlerts(alerts []engine.Alert) []engine.Alert {
	var out []engine.Alert
	for i := range alerts {
		if d.accepts(&alerts[i]) {
			out = append(out, alerts[i])
		}
	}
	return out
}

func (d *destination) accepts(a *engine.Alert) bool {
	if SeverityOf(a) < d.minSev {
		return false
	}
	f := &d.cfg.Filter
	if len(f.Scenarios) > 0 && !matchAny(f.Scenarios, a.Scenario) {
		return false
	}
	return !matchAny(f.ExcludeScenarios, a.Scenario)
}

func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok { // patterns validated
			return true
		}
	}
	return false
}

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/cloudflare"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cleanup := len(args) > 0 && args[0] == "cleanup"
	if cleanup {
		args = args[1:]
	}
	cfg, o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	logger, err := newLogger(o.common.LogLevel, stderr)
	if err != nil {
		return err
	}
	token, err := readToken(cfg.TokenFile)
	if err != nil {
		return err
	}
	client, err := cloudflare.New(cfg.Cloudflare, token)
	if err != nil {
		return fmt.Errorf("cloudflare: %w", err)
	}
	if cleanup {
		rm, err := client.Remove(ctx)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "removed rules=%d lists=%d access_rules=%d\n", rm.Rules, rm.Lists, rm.AccessRules)
		return err
	}
	sec, err := cli.ConnectKafka(ctx, cfg.Kafka, cfg.Brokers, logger)
	if err != nil {
		return err
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers:  cfg.Brokers,
		Security: sec,
		Topic:    cfg.Topic,
		Group:    cfg.Group,
		Logger:   logger.With("part", "feed"),
	})
	if err != nil {
		return fmt.Errorf("decision feed: %w", err)
	}
	logger.Info("starting", "account_id", cfg.Cloudflare.AccountID, "zones", strings.Join(cfg.Cloudflare.ZoneIDs, ","),
		"api_base", cfg.Cloudflare.APIBase, "brokers", strings.Join(cfg.Brokers, ","), "topic", cfg.Topic,
		"once", o.once, "dry_run", o.dryRun)
	h := newFeedHandler()
	if o.once || o.dryRun {
		return runOnce(ctx, cfg, o.dryRun, client, sub, h, stdout, logger)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), sub)
	m := newMetrics(reg, client)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := cli.ServeMetrics(ctx, cfg.MetricsListen, reg, logger); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() {
		if err := sub.Run(ctx, h); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("decision feed: %w", err)
		}
	})
	s := &syncer{cfg: cfg, client: client, h: h, m: m, logger: logger}
	wg.Go(func() { s.loop(ctx) })
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	wg.Wait()
	logger.Info("stopped")
	return runErr
}

// runOnce waits for the feed's snapshot, then syncs (or plans) once.
func runOnce(ctx context.Context, cfg *Config, dryRun bool, client *cloudflare.Client, sub *decisionfeed.Subscriber, h *feedHandler, stdout io.Writer, logger *slog.Logger) error {
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sub.Run(subCtx, h) }()
	timer := time.NewTimer(cfg.SnapshotTimeout)
	defer timer.Stop()
	// stop ends the feed; Run returns nil once cancelled, an error only
	// for misuse.
	stop := func() error {
		cancel()
		if err := <-done; err != nil {
			return fmt.Errorf("decision feed: %w", err)
		}
		return nil
	}
	select {
	case <-h.ready:
	case err := <-done:
		return fmt.Errorf("decision feed: %w", err)
	case <-timer.C:
		if err := stop(); err != nil {
			return err
		}
		return fmt.Errorf("decision feed: no snapshot within %s (brokers %s, topic %s)", cfg.SnapshotTimeout, strings.Join(cfg.Brokers, ","), cfg.Topic)
	case <-ctx.Done():
		if err := stop(); err != nil {
			return err
		}
		return ctx.Err()
	}
	if err := stop(); err != nil {
		return err
	}
	items := h.items()
	if dryRun {
		p, err := client.DryRun(ctx, items)
		if err != nil {
			return err
		}
		return printPlan(stdout, p)
	}
	start := time.Now()
	sum, err := client.Sync(ctx, items)
	if err != nil {
		return err
	}
	logSummary(logger, sum, time.Since(start))
	_, err = fmt.Fprintln(stdout, sum)
	return err
}

func logSummary(logger *slog.Logger, sum cloudflare.Summary, took time.Duration) {
	logger.Info("synced", "items", sum.Items, "adds", sum.Adds, "deletes", sum.Deletes, "left_out", sum.LeftOut,
		"refused", sum.Refused, "unsupported", sum.Unsupported, "rule_changes", sum.RuleChanges,
		"api_calls", sum.Calls, "api_writes", sum.Writes, "took", took.Round(time.Millisecond).String())
	if sum.LeftOut > 0 {
		logger.Warn("decisions left out: the account's list-item limit is reached; the longest-lived are kept",
			"left_out", sum.LeftOut)
	}
	if sum.Refused > 0 {
		logger.Warn("decisions refused: Cloudflare lists do not accept them", "refused", sum.Refused, "example", sum.RefusedExample)
	}
}

// printPlan writes a dry run's plan, one change per line.
func printPlan(w io.Writer, p cloudflare.Plan) error {
	var b strings.Builder
	for _, lp := range p.Lists {
		verb := "keep"
		if lp.Create {
			verb = "create"
		}
		fmt.Fprintf(&b, "list %s (%s): %s; +%d -%d -> %d items\n", lp.Name, lp.Action, verb, len(lp.Add), len(lp.Delete), lp.Items)
		for _, a := range lp.Add {
			fmt.Fprintf(&b, "  + %s\n", a)
		}
		for i, id := range lp.Delete {
			ip := "(duplicate)"
			if i < len(lp.DeleteIPs) {
				ip = lp.DeleteIPs[i]
			}
			fmt.Fprintf(&b, "  - %s (item %s)\n", ip, id)
		}
	}
	if a := p.Access; a != nil {
		fmt.Fprintf(&b, "ip access rules: +%d -%d -> %d rules\n", len(a.Add[cloudflare.Block])+len(a.Add[cloudflare.Challenge]), len(a.Delete), a.Rules)
		for _, act := range []cloudflare.Action{cloudflare.Block, cloudflare.Challenge} {
			for _, add := range a.Add[act] {
				fmt.Fprintf(&b, "  + %s %s\n", act, add)
			}
		}
		for i, id := range a.Delete {
			v := "(duplicate)"
			if i < len(a.DeleteValues) {
				v = a.DeleteValues[i]
			}
			fmt.Fprintf(&b, "  - %s (rule %s)\n", v, id)
		}
	}
	for _, rc := range p.Rules {
		switch rc.Kind {
		case "create-entrypoint":
			fmt.Fprintf(&b, "zone %s: create the custom-rules entrypoint with the portcullis rules\n", rc.Zone)
		default:
			fmt.Fprintf(&b, "zone %s: %s rule %s (%s)\n", rc.Zone, rc.Kind, rc.Ref, rc.Action)
		}
	}
	fmt.Fprintf(&b, "budget %d items; left out %d; refused %d; unsupported %d\n", p.Budget, p.LeftOut, p.Refused, p.Unsupported)
	_, err := io.WriteString(w, b.String())
	return err
}

// feedHandler holds the live decisions the feed delivers.
type feedHandler struct {
	mu    sync.Mutex
	live  map[string]decisionfeed.Decision
	ready chan struct{} // closed at the first snapshot
	kick  chan struct{} // a change arrived
}

func newFeedHandler() *feedHandler {
	return &feedHandler{live: map[string]decisionfeed.Decision{}, ready: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Snapshot implements decisionfeed.Handler.
func (h *feedHandler) Snapshot(_ context.Context, live []decisionfeed.Decision) error {
	h.mu.Lock()
	h.live = make(map[string]decisionfeed.Decision, len(live))
	for _, d := range live {
		h.live[d.Key()] = d
	}
	select {
	case <-h.ready:
	default:
		close(h.ready)
	}
	h.mu.Unlock()
	h.poke()
	return nil
}

// Changes implements decisionfeed.Handler.
func (h *feedHandler) Changes(_ context.Context, changes []decisionfeed.Decision) error {
	h.mu.Lock()
	for _, d := range changes {
		if d.Op == decisionfeed.OpDelete {
			delete(h.live, d.Key())
			continue
		}
		h.live[d.Key()] = d
	}
	h.mu.Unlock()
	h.poke()
	return nil
}

func (h *feedHandler) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// items converts the live decisions: ban to the ban list, captcha to the
// captcha list; throttle has no Cloudflare list and is skipped.
func (h *feedHandler) items() []cloudflare.Item {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]cloudflare.Item, 0, len(h.live))
	for _, d := range h.live {
		if it, ok := itemFrom(&d); ok {
			out = append(out, it)
		}
	}
	return out
}

func itemFrom(d *decisionfeed.Decision) (cloudflare.Item, bool) {
	var a cloudflare.Action
	switch d.Type {
	case decisionfeed.TypeBan:
		a = cloudflare.Block
	case decisionfeed.TypeCaptcha:
		a = cloudflare.Challenge
	default:
		return cloudflare.Item{}, false
	}
	p, err := d.Prefix()
	if err != nil {
		return cloudflare.Item{}, false
	}
	reason := d.Scenario
	if reason == "" {
		reason = d.Origin
	}
	return cloudflare.Item{Prefix: p, Until: d.Until, Scenario: reason, Action: a}, true
}

// syncer runs the debounced syncs of the daemon.
type syncer struct {
	cfg    *Config
	client *cloudflare.Client
	h      *feedHandler
	m      *metrics
	logger *slog.Logger
}

// loop syncs after changes settle (debounce, at most max_delay after the
// first), when a decision expires, every resync interval, and again
// after a failure with backoff. Nothing is synced before the snapshot:
// a partial set would delete live bans.
func (s *syncer) loop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var first time.Time // first unsynced change
	retry := time.Duration(0)
	readyc := s.h.ready // nil once received: a closed channel is always ready
	for {
		select {
		case <-ctx.Done():
			return
		case <-readyc:
			readyc = nil
			timer.Reset(0)
			continue
		case <-s.h.kick:
			if readyc != nil {
				continue
			}
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			due := min(s.cfg.Debounce, max(first.Add(s.cfg.MaxDelay).Sub(now), 0))
			if retry > 0 {
				continue // a retry is scheduled; it syncs the latest state
			}
			timer.Reset(due)
			continue
		case <-timer.C:
		}
		first = time.Time{}
		items := s.h.items()
		start := time.Now()
		sum, err := s.client.Sync(ctx, items)
		s.m.observe(sum, err)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			retry = min(max(2*retry, s.cfg.SyncRetryMin), s.cfg.SyncRetryMax)
			s.logger.Error("sync", "err", err, "retry_in", retry.String())
			timer.Reset(retry)
			continue
		}
		retry = 0
		logSummary(s.logger, sum, time.Since(start))
		timer.Reset(nextDue(items, time.Now(), s.cfg.Cloudflare.ResyncInterval))
	}
}

// nextDue is when the next sync is due without changes: just after the
// earliest expiry, at the latest after resync.
func nextDue(items []cloudflare.Item, now time.Time, resync time.Duration) time.Duration {
	due := resync
	for _, it := range items {
		if !it.Until.IsZero() && it.Until.After(now) {
			due = min(due, it.Until.Sub(now)+time.Second)
		}
	}
	return due
}

// metrics are the daemon's Prometheus metrics.
type metrics struct {
	items       *prometheus.GaugeVec
	adds        prometheus.Counter
	deletes     prometheus.Counter
	leftOut     prometheus.Gauge
	refused     prometheus.Gauge
	syncs       prometheus.Counter
	syncErrors  prometheus.Counter
	lastSuccess prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry, client *cloudflare.Client) *metrics {
	const ns, sub = "portcullis", "cf_bouncer"
	m := &metrics{
		items: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "list_items",
			Help: "Items in each Cloudflare list after the last successful sync."}, []string{"list"}),
		adds: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "adds_total",
			Help: "List items added."}),
		deletes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "deletes_total",
			Help: "List items deleted."}),
		leftOut: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "left_out",
			Help: "Live decisions left out at the last sync to stay within the account's item limit."}),
		refused: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "refused",
			Help: "Live decisions Cloudflare lists do not accept (e.g. IPv4 shorter than /8) at the last sync."}),
		syncs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "syncs_total",
			Help: "Syncs attempted."}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "sync_errors_total",
			Help: "Syncs that failed."}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last successful sync."}),
	}
	stat := func(name, help string, f func(cloudflare.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help},
			func() float64 { return float64(f(client.Stats())) })
	}
	reg.MustRegister(m.items, m.adds, m.deletes, m.leftOut, m.refused, m.syncs, m.syncErrors, m.lastSuccess,
		stat("api_calls_total", "HTTP requests sent to the Cloudflare API, retries included.", func(s cloudflare.Stats) uint64 { return s.Calls }),
		stat("api_writes_total", "Cloudflare API requests other than GET.", func(s cloudflare.Stats) uint64 { return s.Writes }),
		stat("api_errors_total", "Cloudflare API answers of 400 or more and requests without an answer.", func(s cloudflare.Stats) uint64 { return s.Errors }),
		stat("api_retries_total", "Cloudflare API requests sent again after a 429, a 5xx or a network error.", func(s cloudflare.Stats) uint64 { return s.Retries }),
		stat("api_rate_limited_total", "Cloudflare API answers that were rate limits.", func(s cloudflare.Stats) uint64 { return s.RateLimited }),
	)
	return m
}

func (m *metrics) observe(sum cloudflare.Summary, err error) {
	m.syncs.Inc()
	m.adds.Add(float64(sum.Adds))
	m.deletes.Add(float64(sum.Deletes))
	if err != nil {
		m.syncErrors.Inc()
		return
	}
	for name, n := range sum.ByList {
		m.items.WithLabelValues(name).Set(float64(n))
	}
	m.leftOut.Set(float64(sum.LeftOut))
	m.refused.Set(float64(sum.Refused))
	m.lastSuccess.SetToCurrentTime()
}

var _ decisionfeed.Handler = (*feedHandler)(nil)

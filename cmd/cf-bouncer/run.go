package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/cloudflare"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/enforcer/runner"
	"github.com/portcullis-ips/portcullis/heartbeat"
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
	// The brokers and the API server are what cf-bouncer must keep reaching.
	pol, err := policy.New(ctx, cfg.Policy, policy.Options{
		Supported:    supportedTypes,
		Dependencies: append(slices.Clone(cfg.Brokers), apiHost(cfg.Cloudflare.APIBase)),
		Logger:       logger.With("part", "policy"),
	})
	if err != nil {
		return err
	}
	logger.Info("starting", "account_id", cfg.Cloudflare.AccountID, "zones", strings.Join(cfg.Cloudflare.ZoneIDs, ","),
		"api_base", cfg.Cloudflare.APIBase, "brokers", strings.Join(cfg.Brokers, ","), "topic", cfg.Topic,
		"once", o.once, "dry_run", o.dryRun, "types", fmt.Sprint(pol.Types()), "whitelist", len(cfg.Policy.Whitelist),
		"protected_dependencies", strings.Join(pol.Dependencies(), ","))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), sub)
	m := newMetrics(reg, client)

	var (
		backend enforcer.Enforcer
		lastMu  sync.Mutex // the last successful sync, printed by --once
		last    cloudflare.Summary
		took    time.Duration
	)
	switch {
	case o.dryRun:
		backend = &planner{client: client, out: stdout}
	default:
		opt := cloudflare.EnforcerOptions{
			Debounce: cfg.Debounce, MaxDelay: cfg.MaxDelay, RetryMin: cfg.SyncRetryMin, RetryMax: cfg.SyncRetryMax,
			OnSync: func(sum cloudflare.Summary, err error, d time.Duration) {
				m.observe(sum, err)
				if err != nil {
					logger.Error("sync", "err", err)
					return
				}
				lastMu.Lock()
				last, took = sum, d
				lastMu.Unlock()
				if !o.once {
					logSummary(logger, sum, d)
				}
			},
		}
		backend = cloudflare.NewEnforcer(client, opt)
	}
	defer func() { _ = backend.Close() }()
	rcfg := runner.DefaultConfig()
	rcfg.Policy = pol
	rcfg.Coalesce = 0 // the Cloudflare enforcer debounces
	rcfg.MetricsSubsystem = "cf_bouncer"
	rcfg.OnApplyError = func(err error) { logger.Error("apply failed; retrying", "err", err) }
	r, err := runner.New(rcfg, backend, reg)
	if err != nil {
		return err
	}
	h := &feedHandler{r: r, ready: make(chan struct{}), failed: make(chan error, 1)}
	if o.once || o.dryRun {
		if err := runOnce(ctx, cfg, sub, h); err != nil {
			return err
		}
		if o.dryRun {
			return nil
		}
		lastMu.Lock()
		defer lastMu.Unlock()
		logSummary(logger, last, took)
		_, err = fmt.Fprintln(stdout, last)
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := cli.ServeMetrics(ctx, cfg.MetricsListen, reg, logger); err != nil {
		return err
	}
	var hb *heartbeat.Publisher
	if cfg.HeartbeatInterval > 0 {
		hb, err = heartbeat.New(heartbeat.Config{
			Brokers: cfg.Brokers, Name: "cf-bouncer", Mode: cfg.Cloudflare.Mode, Interval: cfg.HeartbeatInterval,
			Stats: func() heartbeat.Stats {
				return heartbeat.Stats{Decisions: r.Len(), Lag: sub.Stats().Lag, Refused: pol.RefusedCount()}
			},
		})
		if err != nil {
			return err
		}
		defer func() { _ = hb.Close() }()
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() {
		if err := sub.Run(ctx, h); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("decision feed: %w", err)
		}
	})
	wg.Go(func() { _ = r.Run(ctx) })
	if hb != nil {
		wg.Go(func() { hb.Run(ctx, func(err error) { logger.Warn("heartbeat", "err", err) }) })
	}
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

// apiHost is the host:port of the API base URL, a dependency never banned.
func apiHost(base string) string {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return base
	}
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "443")
}

// runOnce waits until the feed's snapshot went through the runner to the
// backend (a sync, or a plan printed), then stops the feed.
func runOnce(ctx context.Context, cfg *Config, sub *decisionfeed.Subscriber, h *feedHandler) error {
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
		return stop()
	case err := <-h.failed:
		// --once reports the first failure rather than wait for a retry.
		return errors.Join(err, stop())
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

// feedHandler passes the feed to the runner, the one decision→enforcer
// path every bouncer shares, and closes ready once a snapshot went through.
type feedHandler struct {
	r      *runner.Runner
	ready  chan struct{} // closed at the first snapshot enforced
	failed chan error    // a failed snapshot, for --once (buffered, 1)
	once   sync.Once
}

// Snapshot implements decisionfeed.Handler.
func (h *feedHandler) Snapshot(ctx context.Context, live iter.Seq[decisionfeed.Decision]) error {
	if err := h.r.Snapshot(ctx, live); err != nil {
		select {
		case h.failed <- err:
		default:
		}
		return err
	}
	h.once.Do(func() { close(h.ready) })
	return nil
}

// Changes implements decisionfeed.Handler.
func (h *feedHandler) Changes(ctx context.Context, changes []decisionfeed.Decision) error {
	return h.r.Changes(ctx, changes)
}

// planner is the backend of --dry-run: a Reconcile prints what a sync
// would change and writes nothing at Cloudflare.
type planner struct {
	client *cloudflare.Client
	out    io.Writer
}

// Reconcile implements enforcer.Enforcer: it prints the plan.
func (p *planner) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	items := make([]cloudflare.Item, 0, len(entries))
	for _, en := range entries {
		a := cloudflare.Block
		if en.Remedy == enforcer.RemedyCaptcha {
			a = cloudflare.Challenge
		}
		items = append(items, cloudflare.Item{Prefix: en.Prefix, Until: en.Until, Scenario: en.Reason, Action: a})
	}
	plan, err := p.client.DryRun(ctx, items)
	if err != nil {
		return err
	}
	return printPlan(p.out, plan)
}

// Apply implements enforcer.Enforcer; a dry run stops at the snapshot.
func (p *planner) Apply(context.Context, enforcer.Batch) error { return nil }

// Close implements enforcer.Enforcer.
func (p *planner) Close() error { return nil }

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

var (
	_ decisionfeed.Handler = (*feedHandler)(nil)
	_ enforcer.Enforcer    = (*planner)(nil)
)

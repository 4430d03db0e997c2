package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/enforcer/runner"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

// runDaemon follows the feed into the backend until ctx ends.
func runDaemon(ctx context.Context, o *options) (err error) {
	cfg := o.cfg
	log, err := o.common.Logger("fw-bouncer")
	if err != nil {
		return err
	}
	b, err := lookupBackend(cfg.Mode)
	if err != nil {
		return err
	}
	if !cfg.DryRun {
		if err := clearCleanupMark(cfg.Mode); err != nil {
			return err
		}
	}
	var be enforcer.Enforcer
	if cfg.DryRun {
		be = &dryRun{mode: cfg.Mode, log: log}
	} else if be, err = b.open(cfg, log); err != nil {
		return err
	}
	defer func() {
		if cerr := be.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close %s: %w", cfg.Mode, cerr))
		}
	}()

	sec, err := cli.ConnectKafka(ctx, cfg.Kafka, cfg.Brokers, log)
	if err != nil {
		return err
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers:  cfg.Brokers,
		Security: sec,
		Topic:    cfg.Topic,
		Group:    cfg.Group,
		Logger:   log.With("part", "feed"),
	})
	if err != nil {
		return fmt.Errorf("decision feed: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), sub)

	pol, err := policy.New(ctx, cfg.Policy, policy.Options{
		Supported:    supportedTypes,
		Dependencies: cfg.Brokers,
		Logger:       log.With("part", "policy"),
	})
	if err != nil {
		return err
	}
	rcfg := runner.DefaultConfig()
	rcfg.Policy = pol
	rcfg.Coalesce = cfg.Coalesce
	rcfg.SweepInterval = cfg.SweepInterval
	rcfg.MetricsSubsystem = "fw_bouncer"
	rcfg.OnApplyError = func(err error) {
		log.Error("backend apply failed; retrying", "err", err)
	}
	rcfg.Backend = cfg.Mode
	rcfg.Deliberate = func() bool { return cleanupMarked(cfg.Mode) }
	rcfg.OnRestore = func(cause string, n int, took time.Duration, err error) {
		if err != nil {
			log.Error("restore of the enforcement failed; retrying with backoff", "cause", cause, "bans", n, "err", err)
			return
		}
		log.Warn("restored enforcement changed from outside", "cause", cause, "bans", n,
			"took", took.Round(time.Millisecond))
	}
	rcfg.OnWatchError = func(err error) {
		log.Error("watching the kernel state failed; restarting the watch", "err", err)
	}
	r, err := runner.New(rcfg, be, reg)
	if err != nil {
		return err
	}
	if err := cli.ServeMetrics(ctx, cfg.MetricsListen, reg, log); err != nil {
		return err
	}
	log.Info("fw-bouncer started", "mode", cfg.Mode, "dry_run", cfg.DryRun, "brokers", cfg.Brokers,
		"topic", cfg.Topic, "group", cfg.Group, "whitelist", len(cfg.Policy.Whitelist),
		"types", fmt.Sprint(pol.Types()), "protected_dependencies", strings.Join(pol.Dependencies(), ","))

	// The runner and the heartbeats stop when the feed does, whatever the
	// reason; the feed stops when the runner stands down after a cleanup.
	fctx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	rctx, stopRunner := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() {
		err := r.Run(rctx)
		if errors.Is(err, runner.ErrStoodDown) {
			log.Warn("fw-bouncer cleanup removed the enforcement; stopping without restoring it", "mode", cfg.Mode)
			stopFeed()
			err = nil
		}
		runDone <- err
	}()
	hbDone := make(chan struct{})
	if cfg.HeartbeatInterval > 0 {
		hb, err := heartbeat.New(heartbeat.Config{
			Brokers: cfg.Brokers, Security: sec, Name: "fw-bouncer", Mode: cfg.Mode, Interval: cfg.HeartbeatInterval,
			Stats: func() heartbeat.Stats {
				return heartbeat.Stats{Decisions: r.Len(), Lag: sub.Stats().Lag, Problem: r.Health()}
			},
		})
		if err != nil {
			stopRunner()
			return errors.Join(err, <-runDone)
		}
		go func() {
			defer close(hbDone)
			hb.Run(rctx, func(err error) { log.Warn("heartbeat", "err", err) })
			_ = hb.Close()
		}()
	} else {
		close(hbDone)
	}
	ferr := sub.Run(fctx, &feedHandler{r: r, log: log})
	stopRunner()
	<-hbDone
	rerr := <-runDone
	msg := "fw-bouncer stopped; bans stay in force in the kernel"
	if v, ok := be.(interface{ VolatilePins() string }); ok && v.VolatilePins() != "" {
		msg = "fw-bouncer stopped; the XDP program detaches with this process: " + v.VolatilePins()
	}
	if cfg.DryRun {
		msg = "fw-bouncer stopped"
	}
	log.Info(msg, "mode", cfg.Mode, "dry_run", cfg.DryRun, "bans", r.Len())
	return errors.Join(ferr, rerr)
}

// feedHandler passes the feed to the runner and logs the snapshot, the
// moment an operator (and a test) wants to see.
type feedHandler struct {
	r   *runner.Runner
	log *slog.Logger
}

// Snapshot implements decisionfeed.Handler.
func (h *feedHandler) Snapshot(ctx context.Context, live []decisionfeed.Decision) error {
	start := time.Now()
	if err := h.r.Snapshot(ctx, live); err != nil {
		h.log.Error("reconcile failed; the feed retries", "live", len(live), "err", err)
		return err
	}
	h.log.Info("reconciled to the feed's snapshot", "live", len(live), "bans", h.r.Len(),
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Changes implements decisionfeed.Handler.
func (h *feedHandler) Changes(ctx context.Context, changes []decisionfeed.Decision) error {
	h.log.Debug("changes", "n", len(changes))
	return h.r.Changes(ctx, changes)
}

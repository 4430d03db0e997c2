package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-ips/portcullis/crowdsec"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

func runCrowdsecPull(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("crowdsec-pull", "portcullis crowdsec-pull --lapi-url URL --api-key KEY [--interval 10s] [--once]",
		`Follows a CrowdSec Local API decision stream as a bouncer would
(startup=true first, then the changes every --interval) and republishes its
decisions to the decisions topic with origin "crowdsec": "new" becomes add
decisions, "deleted" delete decisions. So Portcullis bouncers enforce
CrowdSec's local alerts and community blocklist. Decisions of other scopes
(Country, AS) or types are skipped and counted in the log.

After each startup poll (at start, and after a failed republish) the live
set is read from the decisions topic and the decisions of origin crowdsec
that the LAPI no longer holds are deleted: they were lifted while no poll
was running.

Register the key on the CrowdSec side with "cscli bouncers add portcullis".
`,
		`PORTCULLIS_LAPI_KEY=... portcullis crowdsec-pull --lapi-url http://127.0.0.1:8080
portcullis crowdsec-pull --lapi-url http://crowdsec:8080 --api-key "$KEY" --interval 30s
portcullis crowdsec-pull --lapi-url http://crowdsec:8080 --once   # full set once, for cron
`)
	var (
		common         cli.Common
		lapiURL, key   string
		topic          string
		interval       time.Duration
		once           bool
		publishTimeout time.Duration
	)
	common.Register(fs)
	fs.StringVar(&lapiURL, "lapi-url", "http://127.0.0.1:8080", "CrowdSec LAPI base URL")
	fs.StringVar(&key, "api-key", os.Getenv(envLAPIKey), "bouncer API key (env "+envLAPIKey+")")
	fs.StringVar(&topic, "topic", decisionfeed.TopicDecisions, "decisions topic to publish to")
	fs.DurationVar(&interval, "interval", 10*time.Second, "time between two polls")
	fs.BoolVar(&once, "once", false, "poll the full set once, publish it and exit")
	fs.DurationVar(&publishTimeout, "timeout", 60*time.Second, "give up one poll-and-publish after this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	if common.Config != "" {
		return fmt.Errorf("%w: crowdsec-pull: --config is not used (all settings are flags)", errUsage)
	}
	if interval <= 0 {
		return fmt.Errorf("%w: crowdsec-pull: --interval must be positive", errUsage)
	}
	p, err := crowdsec.NewPuller(crowdsec.PullerConfig{URL: lapiURL, APIKey: key})
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	log, err := common.Logger("crowdsec-pull")
	if err != nil {
		return fmt.Errorf("%w: crowdsec-pull: %w", errUsage, err)
	}
	k, err := connectKafka(ctx, &common, "crowdsec-pull")
	if err != nil {
		return err
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: k.brokers, Topic: topic, Security: k.sec})
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }() // Publish is synchronous: nothing is left to flush
	reg := prometheus.NewRegistry()
	m := newPullMetrics(reg)
	if err := cli.ServeMetrics(ctx, common.MetricsListen, reg, log); err != nil {
		return err
	}
	for {
		n, err := pullOnce(ctx, p, pub, k, topic, publishTimeout, log, m)
		if once {
			if err != nil {
				return err
			}
			_, _ = fmt.Fprintf(stdout, "published %d decisions from %s\n", n, lapiURL)
			return nil
		}
		if err != nil {
			log.Warn("poll", "err", err) // the next poll retries; a startup poll is repeated until it succeeds
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// pullOnce polls the stream and publishes what it returned; after a startup
// poll, also deletes for the crowdsec decisions of the feed it lacks.
func pullOnce(ctx context.Context, p *crowdsec.Puller, pub *decisionfeed.Publisher, k kafkaTarget, topic string, timeout time.Duration, log *slog.Logger, m *pullMetrics) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := p.Poll(ctx)
	if err != nil {
		m.polls.WithLabelValues("error").Inc()
		return 0, err
	}
	m.polls.WithLabelValues("ok").Inc()
	m.skipped.Add(float64(len(res.Skipped)))
	if res.Startup {
		// What the LAPI deleted while no poll ran is absent from the full
		// set; it is still live on the feed.
		live, err := liveSet(ctx, k, topic, log)
		if err != nil {
			p.Reset()
			return 0, fmt.Errorf("read the live set to find stale crowdsec decisions: %w", err)
		}
		res.Decisions = append(crowdsec.Stale(res.Decisions, live, time.Now()), res.Decisions...)
	}
	for _, e := range res.Skipped {
		log.Debug("skipped LAPI decision", "err", e)
	}
	if len(res.Skipped) > 0 {
		log.Info("skipped LAPI decisions", "count", len(res.Skipped), "first", res.Skipped[0].Error())
	}
	if len(res.Decisions) == 0 {
		return 0, nil
	}
	if err := pub.Publish(ctx, res.Decisions...); err != nil {
		p.Reset() // the LAPI will not repeat these changes: ask for the full set next time
		m.polls.WithLabelValues("publish_error").Inc()
		return 0, fmt.Errorf("publish %d decisions: %w", len(res.Decisions), err)
	}
	for _, d := range res.Decisions {
		m.published.WithLabelValues(string(d.Op)).Inc()
	}
	log.Info("republished LAPI decisions", "count", len(res.Decisions))
	return len(res.Decisions), nil
}

// pullMetrics are crowdsec-pull's counters: namespace portcullis,
// subsystem crowdsec_pull.
type pullMetrics struct {
	polls     *prometheus.CounterVec
	published *prometheus.CounterVec
	skipped   prometheus.Counter
}

func newPullMetrics(reg prometheus.Registerer) *pullMetrics {
	m := &pullMetrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "crowdsec_pull",
			Name: "polls_total", Help: "LAPI stream polls, by result (ok, error, publish_error)."}, []string{"result"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "crowdsec_pull",
			Name: "decisions_total", Help: "Decisions republished to the decisions topic, by op."}, []string{"op"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "crowdsec_pull",
			Name: "skipped_total", Help: "LAPI decisions that could not be converted (other scopes, types, bad values)."}),
	}
	reg.MustRegister(m.polls, m.published, m.skipped)
	return m
}

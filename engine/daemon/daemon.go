// Package daemon runs the live detection engine: acquisition (files, Kafka,
// syslog, from an acquis.yaml), the parse stage, optionally the re-keying
// of parsed events through Kafka so several instances stay exact, the
// detect stage (scenarios and profiles), and the outputs: decisions to the
// decisions topic and alerts to alert-notifications.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/config/scenarios"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/parse"
	"github.com/portcullis-ips/portcullis/engine/profile"
	"github.com/portcullis-ips/portcullis/engine/scenario"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// Options are what the daemon gets besides its config file.
type Options struct {
	// Logger receives the daemon's log; nil discards it.
	Logger *slog.Logger
	// Registry receives the daemon's metrics; nil registers none.
	Registry prometheus.Registerer
	// Brokers, when not empty, replace the config's brokers: the caller
	// has resolved --brokers > PORTCULLIS_BROKERS > file > default.
	Brokers []string
	// Security is the TLS and SASL of every Kafka client of the daemon
	// (publisher, alerts and events writers, events reader, admin client);
	// nil is plaintext. Kafka sources of the acquis.yaml keep their own.
	Security *kafkaconn.Security
}

// Daemon is a configured engine, ready to Run once.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	host    string
	brokers []string
	sec     *kafkaconn.Security
	sources []acquire.Source
	scs     []*scenario.Scenario
	prof    *profile.Profiles
	parser  *parse.Parser
	met     *metrics
	pub     *decisionfeed.Publisher
	alerts  *kafka.Writer
	events  *kafka.Writer // nil unless re-keying
	// transport carries the alerts and events writers' connections.
	transport *kafka.Transport

	detect atomic.Pointer[engine.Stats] // the detect stage's last counters
	snapAt time.Time                    // when they were taken; detect stage only
}

// New loads everything the config names (acquis.yaml, scenarios,
// profiles), binds syslog listeners and prepares the Kafka clients. It does
// not contact the brokers; Run does.
func New(cfg Config, o Options) (_ *Daemon, err error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{cfg: cfg, log: log, host: cfg.Host, brokers: o.Brokers, sec: o.Security}
	if len(d.brokers) == 0 {
		d.brokers = cfg.Brokers
	}
	if len(d.brokers) == 0 {
		return nil, errors.New("engine: no Kafka brokers (set brokers in the config or --brokers)")
	}
	if d.host == "" {
		if d.host, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("engine: host name: %w", err)
		}
	}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.met, err = newMetrics(o.Registry, d); err != nil {
		return nil, err
	}
	srcCfgs, err := acquire.LoadConfig(cfg.path(cfg.Acquis))
	if err != nil {
		return nil, err
	}
	for _, sc := range srcCfgs {
		src, err := acquire.New(sc, acquire.Options{Logger: log.With("stage", "acquire"), Metrics: d.met.acquire})
		if err != nil {
			return nil, err
		}
		d.sources = append(d.sources, src)
	}
	if cfg.Scenarios != "" {
		d.scs, err = scenario.LoadFS(os.DirFS(cfg.path(cfg.Scenarios)), ".")
	} else {
		d.scs, err = scenario.LoadFS(scenarios.FS, ".")
	}
	if err != nil {
		return nil, fmt.Errorf("load scenarios: %w", err)
	}
	pcfg := profile.DefaultConfig()
	if cfg.Profiles != "" {
		if pcfg, err = profile.Load(cfg.path(cfg.Profiles)); err != nil {
			return nil, fmt.Errorf("load profiles: %w", err)
		}
	}
	if d.prof, err = profile.New(pcfg); err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	loc := time.UTC
	if cfg.Timezone != "" {
		if loc, err = time.LoadLocation(cfg.Timezone); err != nil {
			return nil, fmt.Errorf("timezone: %w", err)
		}
	}
	d.parser = parse.New(parse.Config{Location: loc})
	if d.pub, err = decisionfeed.NewPublisher(decisionfeed.PublisherConfig{
		Brokers: d.brokers, Topic: cfg.Topics.Decisions, ClientID: "portcullis-engine", Security: d.sec,
	}); err != nil {
		return nil, fmt.Errorf("decision publisher: %w", err)
	}
	d.transport = d.sec.Transport(&kafka.Transport{ClientID: "portcullis-engine"})
	d.alerts = &kafka.Writer{
		Addr: kafka.TCP(d.brokers...), Topic: cfg.Topics.Alerts, Balancer: &kafka.Hash{},
		BatchTimeout: 5 * time.Millisecond, RequiredAcks: kafka.RequireAll, MaxAttempts: 5,
		Transport: d.transport,
	}
	if cfg.Rekey {
		// The hash balancer sends one key, the source address, to one
		// partition, whichever instance parsed the line.
		d.events = &kafka.Writer{
			Addr: kafka.TCP(d.brokers...), Topic: cfg.Topics.Events, Balancer: &kafka.Hash{},
			BatchTimeout: 2 * time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll, MaxAttempts: 5,
			Transport: d.transport,
		}
	}
	return d, nil
}

// close releases what New opened: at the end of Run, or when New fails.
func (d *Daemon) close() {
	var errs []error
	for _, s := range d.sources {
		if c, ok := s.(interface{ Close() error }); ok {
			errs = append(errs, c.Close())
		}
	}
	if d.prof != nil {
		errs = append(errs, d.prof.Close())
	}
	if d.pub != nil {
		errs = append(errs, d.pub.Close())
	}
	if d.alerts != nil {
		errs = append(errs, d.alerts.Close())
	}
	if d.events != nil {
		errs = append(errs, d.events.Close())
	}
	if d.transport != nil {
		d.transport.CloseIdleConnections()
	}
	if err := errors.Join(errs...); err != nil {
		d.log.Warn("close", "err", err)
	}
}

// Sources returns the acquisition sources, in acquis.yaml order.
func (d *Daemon) Sources() []acquire.Source { return slices.Clone(d.sources) }

// output is one alert or decision on its way to Kafka.
type output struct {
	alert    *engine.Alert
	decision *decisionfeed.Decision
}

// sink hands the engine's output to the output stage and counts it.
type sink struct {
	out chan<- output
	met *metrics
}

// Alert implements engine.Sink.
func (s *sink) Alert(a engine.Alert) {
	s.met.alerts.WithLabelValues(a.Scenario).Inc()
	s.out <- output{alert: &a}
}

// Decision implements engine.Sink.
func (s *sink) Decision(dec decisionfeed.Decision) {
	s.met.decisions.WithLabelValues(dec.Scenario).Inc()
	s.out <- output{decision: &dec}
}

// Run runs the engine until ctx ends, then drains: sources stop, the lines
// already read are parsed and detected, and pending alerts and decisions
// are published (for at most the drain timeout). It returns an error when a
// source fails (the engine does not run blind) or the events topic cannot
// be created. A Daemon runs once.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.close()
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if d.events != nil {
		if err := d.ensureEventsTopic(runCtx); err != nil {
			return err
		}
	}
	// pubCtx outlives runCtx by the drain timeout, so that what was
	// detected before the stop still reaches Kafka.
	pubCtx, pubCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer pubCancel()
	var drain atomic.Pointer[time.Timer]
	stopDrain := context.AfterFunc(runCtx, func() {
		drain.Store(time.AfterFunc(d.cfg.DrainTimeout, pubCancel))
	})
	defer func() {
		stopDrain()
		if t := drain.Load(); t != nil {
			t.Stop()
		}
	}()

	lines := make(chan []acquire.Line, 64)
	out := make(chan output, 4096)
	eng, err := d.newEngine(&sink{out: out, met: d.met})
	if err != nil {
		return err
	}

	var srcWG sync.WaitGroup
	for _, src := range d.sources {
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			h := func(ctx context.Context, ls []acquire.Line) error {
				select {
				case lines <- slices.Clone(ls):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			err := src.Run(runCtx, h)
			if runCtx.Err() != nil {
				return
			}
			// A source ends by itself only when it cannot go on; the engine
			// stops with it rather than run blind.
			if err == nil {
				err = errors.New("stopped")
			}
			d.log.Error("source failed, stopping the engine", "source", src.Name(), "err", err)
			cancel(fmt.Errorf("source %s: %w", src.Name(), err))
		}()
	}
	go func() {
		srcWG.Wait()
		close(lines)
	}()

	var stageWG sync.WaitGroup
	if d.events == nil {
		stageWG.Add(1)
		go func() {
			defer stageWG.Done()
			d.parseDetect(lines, eng)
		}()
	} else {
		stageWG.Add(2)
		go func() {
			defer stageWG.Done()
			d.parseRekey(pubCtx, lines)
		}()
		go func() {
			defer stageWG.Done()
			d.detectRekeyed(runCtx, eng)
		}()
	}
	go func() {
		stageWG.Wait()
		close(out)
	}()
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		d.publish(pubCtx, out)
	}()
	pruneDone := d.startPruning(runCtx)
	d.log.Info("engine running", "sources", len(d.sources), "scenarios", len(d.scs), "rekey", d.events != nil, "host", d.host)
	<-runCtx.Done()
	d.log.Info("engine stopping, draining")
	<-outDone
	<-pruneDone
	if err := context.Cause(runCtx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	d.log.Info("engine stopped")
	return nil
}

// startPruning tombstones the expired and deleted keys of the decisions
// topic until ctx ends, sharing the partitions with the other engine
// instances through the prune consumer group. The returned channel closes
// when it has stopped.
func (d *Daemon) startPruning(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if d.cfg.PruneInterval < 0 {
		close(done)
		return done
	}
	pr, err := decisionfeed.NewPruner(decisionfeed.PrunerConfig{
		Brokers: d.brokers, Topic: d.cfg.Topics.Decisions, ClientID: "portcullis-engine-prune",
	})
	if err != nil {
		d.log.Error("pruning off", "err", err)
		close(done)
		return done
	}
	go func() {
		defer close(done)
		defer pr.Close()
		err := pr.RunGroup(ctx, decisionfeed.PruneLoopConfig{
			Group: d.cfg.PruneGroup, Interval: d.cfg.PruneInterval, Logger: d.log.With("stage", "prune"),
			OnPass: func(_ int, st decisionfeed.PruneStats, err error) {
				if err != nil {
					d.met.pruneErrors.Inc()
					return
				}
				d.met.pruned.WithLabelValues("expired").Add(float64(st.Expired))
				d.met.pruned.WithLabelValues("deleted").Add(float64(st.Deleted))
				d.met.pruned.WithLabelValues("republished").Add(float64(st.Republished))
			},
		})
		if err != nil {
			d.log.Error("pruning stopped", "err", err)
		}
	}()
	return done
}

func (d *Daemon) newEngine(s engine.Sink) (*engine.Engine, error) {
	eng, err := engine.New(engine.Config{
		Scenarios: d.scs, Profiles: d.prof, Sink: s, Host: d.host, MaxBuckets: d.cfg.MaxBuckets,
	})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	return eng, nil
}

// parseDetect is the single-instance stage: parse and detect in one goroutine.
func (d *Daemon) parseDetect(lines <-chan []acquire.Line, eng *engine.Engine) {
	for batch := range lines {
		for i := range batch {
			ev, err := d.parser.Line(batch[i])
			if err != nil {
				continue // counted by the parser
			}
			d.met.eventCounter(ev.Type).Inc()
			eng.Event(&ev)
		}
		d.snapshot(eng, false)
	}
	d.snapshot(eng, true)
}

// parseRekey parses lines and publishes their events to the events topic,
// keyed by source address. Lines are not lost at shutdown: the publishing
// context outlives the run by the drain timeout.
func (d *Daemon) parseRekey(ctx context.Context, lines <-chan []acquire.Line) {
	var msgs []kafka.Message
	for batch := range lines {
		msgs = msgs[:0]
		for i := range batch {
			ev, err := d.parser.Line(batch[i])
			if err != nil {
				continue
			}
			if !ev.Source.IsValid() || ev.Source.IsUnspecified() {
				d.met.unkeyed.Inc() // nothing to key on; the detect stage would drop it too
				continue
			}
			b, err := ev.MarshalBinary()
			if err != nil {
				d.met.rekeyBad.Inc()
				d.log.Warn("event not re-keyed", "source", batch[i].Source, "err", err)
				continue
			}
			msgs = append(msgs, kafka.Message{Key: []byte(ev.Source.String()), Value: b})
		}
		if len(msgs) == 0 {
			continue
		}
		if err := d.retry(ctx, "events", func(ctx context.Context) error { return d.events.WriteMessages(ctx, msgs...) }); err != nil {
			d.met.dropped.WithLabelValues("event").Add(float64(len(msgs)))
			continue
		}
		d.met.rekeyOut.Add(float64(len(msgs)))
	}
}

// snapshotEvery is how often the detect stage publishes its counters for
// the metrics endpoint.
const snapshotEvery = 250 * time.Millisecond

// snapshot stores the engine's counters for scrapes, at most every
// snapshotEvery unless final.
func (d *Daemon) snapshot(eng *engine.Engine, final bool) {
	now := time.Now()
	if !final && now.Sub(d.snapAt) < snapshotEvery {
		return
	}
	d.snapAt = now
	st := eng.Stats()
	d.detect.Store(&st)
}

// detectRekeyed consumes the events topic in the detect group and runs the
// scenarios over what it gets, until ctx ends.
func (d *Daemon) detectRekeyed(ctx context.Context, eng *engine.Engine) {
	defer d.snapshot(eng, true)
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: d.brokers, GroupID: d.cfg.RekeyGroup, Topic: d.cfg.Topics.Events,
		Dialer:      d.sec.Dialer(&kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}),
		StartOffset: kafka.FirstOffset, CommitInterval: acquire.KafkaCommitInterval,
		MaxWait: 100 * time.Millisecond, MaxBytes: 8 << 20,
		ReadBackoffMin: time.Millisecond, ReadBackoffMax: time.Second, // see acquire.KafkaSource
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) { d.log.Warn("kafka", "err", fmt.Sprintf(msg, args...)) }),
	})
	defer func() {
		// Close commits the offsets read since the last commit.
		if err := r.Close(); err != nil {
			d.log.Warn("close events reader", "err", err)
		}
	}()
	backoff := 100 * time.Millisecond
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.log.Warn("read events", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		var ev event.Event
		if err := ev.UnmarshalBinary(m.Value); err != nil {
			d.met.rekeyBad.Inc()
			d.log.Warn("bad event skipped", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		d.met.rekeyIn.Inc()
		d.met.eventCounter(ev.Type).Inc()
		eng.Event(&ev)
		d.snapshot(eng, false)
	}
}

// publish sends alerts and decisions, batching what is queued. A failed
// send is retried until ctx ends; what is left then is counted as dropped.
func (d *Daemon) publish(ctx context.Context, out <-chan output) {
	var alerts []kafka.Message
	var decisions []decisionfeed.Decision
	for o := range out {
		alerts, decisions = alerts[:0], decisions[:0]
		d.queue(o, &alerts, &decisions)
	more:
		for len(alerts)+len(decisions) < 500 {
			select {
			case o, ok := <-out:
				if !ok {
					break more
				}
				d.queue(o, &alerts, &decisions)
			default:
				break more
			}
		}
		if len(decisions) > 0 {
			if err := d.retry(ctx, "decisions", func(ctx context.Context) error { return d.pub.Publish(ctx, decisions...) }); err != nil {
				d.met.dropped.WithLabelValues("decision").Add(float64(len(decisions)))
			} else {
				d.met.published.WithLabelValues("decision").Add(float64(len(decisions)))
			}
		}
		if len(alerts) > 0 {
			if err := d.retry(ctx, "alerts", func(ctx context.Context) error { return d.alerts.WriteMessages(ctx, alerts...) }); err != nil {
				d.met.dropped.WithLabelValues("alert").Add(float64(len(alerts)))
			} else {
				d.met.published.WithLabelValues("alert").Add(float64(len(alerts)))
			}
		}
	}
}

func (d *Daemon) queue(o output, alerts *[]kafka.Message, decisions *[]decisionfeed.Decision) {
	if o.decision != nil {
		*decisions = append(*decisions, *o.decision)
		return
	}
	b, err := json.Marshal(o.alert)
	if err != nil {
		d.log.Error("encode alert", "ip", o.alert.IP, "err", err)
		return
	}
	*alerts = append(*alerts, kafka.Message{Key: []byte(o.alert.IP), Value: b})
}

// retry calls f until it succeeds or ctx ends, backing off between tries.
func (d *Daemon) retry(ctx context.Context, what string, f func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		d.met.publishErrors.WithLabelValues(what).Inc()
		if ctx.Err() != nil {
			d.log.Error("publish abandoned at shutdown", "topic", what, "err", err)
			return err
		}
		d.log.Warn("publish", "topic", what, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			d.log.Error("publish abandoned at shutdown", "topic", what, "err", err)
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// ensureEventsTopic creates the events topic when it does not exist.
func (d *Daemon) ensureEventsTopic(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tr := d.sec.Transport(&kafka.Transport{ClientID: "portcullis-engine"})
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(d.brokers...), Transport: tr}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: d.cfg.Topics.Events, NumPartitions: d.cfg.EventsPartitions, ReplicationFactor: -1,
		// Events are only in transit between the stages.
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "3600000"}},
	}}})
	if err != nil {
		return fmt.Errorf("create events topic %s: %w", d.cfg.Topics.Events, err)
	}
	if err := res.Errors[d.cfg.Topics.Events]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create events topic %s: %w", d.cfg.Topics.Events, err)
	}
	return nil
}

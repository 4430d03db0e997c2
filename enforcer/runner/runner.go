// Package runner sits between the decision feed and one enforcement backend.
// It implements decisionfeed.Handler: the feed's snapshot becomes one
// Reconcile of the backend, and changes are coalesced for a few milliseconds
// and applied in batches, retried with backoff when the backend fails.
//
// The runner is the one decision→enforcer path of every bouncer, so that
// every backend gets the same policy (enforcer/policy): decisions outside
// the filters (type, origin, scenario) are not enforced, and a ban whose
// prefix overlaps a protected address (whitelist, loopback, the host's own
// addresses, the bouncer's dependencies) is refused, counted and logged,
// and enforced after all if the protection goes away. It keeps the
// authoritative set of active entries, sweeps out expired ones, and exports
// Prometheus metrics. The feed's own
// metrics (lag, invalid messages) come from the subscriber, which is a
// collector of its own.
package runner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
)

// Config tunes a Runner. Start from DefaultConfig.
type Config struct {
	// Policy filters the decisions and protects addresses; Run refreshes
	// it every Policy.RefreshInterval. Nil means bans only and loopback
	// protected, nothing else.
	Policy *policy.Policy
	// Coalesce is how long a burst of changes is collected before it is
	// applied as one batch.
	Coalesce time.Duration
	// MaxBatch caps the changes handed to one Apply call.
	MaxBatch int
	// RetryMin and RetryMax bound the backoff between failed Apply calls.
	RetryMin, RetryMax time.Duration
	// SweepInterval is how often bans whose expiry has passed are deleted
	// from the backend (0: never; the backend's own expiry still applies).
	SweepInterval time.Duration
	// MetricsSubsystem is the Prometheus subsystem of the runner's metrics.
	MetricsSubsystem string
	// OnApplyError, when set, is told of every failed backend call that
	// Run will retry. It is called with the runner's lock held and must not
	// call back into it.
	OnApplyError func(err error)
	// Backend names the backend in the restores_total metric.
	Backend string
	// Deliberate, when set, is asked before every restore of a backend
	// that implements enforcer.Healer; true means the state was removed
	// on purpose (fw-bouncer cleanup) and Run returns ErrStoodDown
	// instead of fighting it.
	Deliberate func() bool
	// OnRestore is told of every restore (err nil: it succeeded, with n
	// bans, taking took); OnWatchError of every failure of the backend's
	// Watch, which is restarted. Both are called without the runner's lock.
	OnRestore    func(cause string, n int, took time.Duration, err error)
	OnWatchError func(err error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the configuration used by fw-bouncer.
func DefaultConfig() Config {
	return Config{
		Coalesce:         5 * time.Millisecond,
		MaxBatch:         65536,
		RetryMin:         100 * time.Millisecond,
		RetryMax:         10 * time.Second,
		SweepInterval:    time.Minute,
		MetricsSubsystem: "enforcer",
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.Coalesce < 0:
		return fmt.Errorf("coalesce: negative duration %s", c.Coalesce)
	case c.MaxBatch <= 0:
		return fmt.Errorf("max_batch: %d is not positive", c.MaxBatch)
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("retry: need 0 < min (%s) <= max (%s)", c.RetryMin, c.RetryMax)
	case c.SweepInterval < 0:
		return fmt.Errorf("sweep_interval: negative duration %s", c.SweepInterval)
	case c.MetricsSubsystem == "":
		return errors.New("metrics_subsystem: missing")
	}
	return nil
}

// change is one pending operation on a prefix: an add when add is true.
type change struct {
	add   bool
	entry enforcer.Entry
}

// labelKey identifies one series of the active-bans gauge.
type labelKey struct{ origin, scenario string }

// Runner applies the decision feed to one backend. It is safe for
// concurrent use; Snapshot and Changes are called by the feed subscriber
// while Run drives batching, retries and sweeps.
type Runner struct {
	cfg     Config
	backend enforcer.Enforcer
	now     func() time.Time

	// backendMu serialises calls into the backend so that a snapshot and
	// a batch never interleave.
	backendMu sync.Mutex

	pol *policy.Policy

	mu      sync.Mutex
	active  map[netip.Prefix]enforcer.Entry
	refused map[netip.Prefix]refusal // bans refused, enforced if unprotected later
	counts  map[labelKey]int
	pending map[netip.Prefix]change
	order   []netip.Prefix // pending prefixes in arrival order
	strs    map[string]string
	synced  bool
	problem string // see Health

	heal *healer // nil when the backend cannot heal

	wake chan struct{}
	m    metrics
}

type metrics struct {
	active   *prometheus.GaugeVec
	applied  *prometheus.CounterVec
	refused  *prometheus.CounterVec
	ignored  *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	batch    prometheus.Histogram
	restores *prometheus.CounterVec
	healthy  prometheus.Gauge
}

// refusal is a ban refused by the policy and the decision key it came from.
type refusal struct {
	key   string
	entry enforcer.Entry
}

// New returns a Runner for backend. Its metrics are registered on reg
// (nil: not registered).
func New(cfg Config, backend enforcer.Enforcer, reg prometheus.Registerer) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("runner config: %w", err)
	}
	if backend == nil {
		return nil, errors.New("runner: nil backend")
	}
	r := &Runner{
		cfg:     cfg,
		backend: backend,
		now:     cfg.Now,
		pol:     cfg.Policy,
		active:  make(map[netip.Prefix]enforcer.Entry),
		refused: make(map[netip.Prefix]refusal),
		counts:  make(map[labelKey]int),
		pending: make(map[netip.Prefix]change),
		strs:    make(map[string]string),
		wake:    make(chan struct{}, 1),
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.pol == nil {
		pol, err := policy.New(context.Background(), policy.Config{}, policy.Options{})
		if err != nil {
			return nil, fmt.Errorf("runner: default policy: %w", err)
		}
		r.pol = pol
	}
	if h, ok := backend.(enforcer.Healer); ok {
		r.heal = &healer{h: h, wake: make(chan struct{}, 1)}
	}
	r.m = newMetrics(cfg.MetricsSubsystem)
	r.m.healthy.Set(1)
	if reg != nil {
		if err := r.register(reg); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func newMetrics(sub string) metrics {
	const ns = "portcullis"
	return metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "active_bans",
			Help: "Bans currently enforced, by origin and scenario.",
		}, []string{"origin", "scenario"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "applied_total",
			Help: "Changes applied to the backend, by operation (add, delete).",
		}, []string{"op"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Ban decisions refused because they cover a protected address, by reason (whitelist, loopback, host_address, dependency).",
		}, []string{"reason"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "ignored_total",
			Help: "Decisions not enforced, by reason (type, origin, scenario: outside the filters; expired; invalid: not convertible).",
		}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Backend calls that failed, by operation (apply, reconcile, counters), and policy refreshes (policy_refresh).",
		}, []string{"op"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "apply_duration_seconds",
			Help:    "Duration of successful backend calls, by operation (apply, reconcile).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"op"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "batch_changes",
			Help:    "Changes per Apply call.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "restores_total",
			Help: "Full restores of the backend's kernel state after someone else changed it, by backend and cause.",
		}, []string{"backend", "cause"}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "healthy",
			Help: "1 while the backend holds the live set as far as the runner knows; 0 while a restore or batch keeps failing.",
		}),
	}
}

func (r *Runner) register(reg prometheus.Registerer) error {
	cs := []prometheus.Collector{r.m.active, r.m.applied, r.m.refused, r.m.ignored,
		r.m.errors, r.m.duration, r.m.batch, r.m.restores, r.m.healthy}
	ns, sub := "portcullis", r.cfg.MetricsSubsystem
	if cr, ok := r.backend.(enforcer.CounterReader); ok {
		cs = append(cs, &dropCollector{
			cr:     cr,
			errors: r.m.errors,
			packets: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "dropped_packets_total"),
				"Packets dropped by the backend, by reason (scenario or origin).", []string{"reason"}, nil),
			bytes: prometheus.NewDesc(prometheus.BuildFQName(ns, sub, "dropped_bytes_total"),
				"Bytes dropped by the backend, by reason (scenario or origin).", []string{"reason"}, nil),
		})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register runner metrics: %w", err)
		}
	}
	return nil
}

// dropCollector reads the backend's drop counters at scrape time.
type dropCollector struct {
	cr             enforcer.CounterReader
	errors         *prometheus.CounterVec
	packets, bytes *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (d *dropCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.packets
	ch <- d.bytes
}

// Collect implements prometheus.Collector.
func (d *dropCollector) Collect(ch chan<- prometheus.Metric) {
	c, err := d.cr.Counters()
	if err != nil {
		d.errors.WithLabelValues("counters").Inc()
		return
	}
	for reason, n := range c.ByReason {
		ch <- prometheus.MustNewConstMetric(d.packets, prometheus.CounterValue, float64(n.Packets), reason)
		ch <- prometheus.MustNewConstMetric(d.bytes, prometheus.CounterValue, float64(n.Bytes), reason)
	}
}

// refreshPolicy reads the protected addresses again. A ban in force that
// now covers one is withdrawn, as it would have been refused; a refused ban
// that no longer covers one is enforced.
func (r *Runner) refreshPolicy(ctx context.Context) error {
	changed, err := r.pol.Refresh(ctx)
	if !changed {
		return err
	}
	now := r.now()
	r.mu.Lock()
	n := 0
	for p, e := range r.active {
		if why := r.pol.Protected(p); why != "" {
			if c, ok := r.pending[p]; ok && !c.add {
				continue // already on its way out
			}
			r.queueLocked(p, change{entry: enforcer.Entry{Prefix: p}})
			r.refused[p] = refusal{key: p.String(), entry: e}
			r.m.refused.WithLabelValues(why).Inc()
			r.pol.Refused(p.String(), p, why)
			n++
		}
	}
	for p, rf := range r.refused {
		if r.pol.Protected(p) != "" {
			continue
		}
		delete(r.refused, p)
		if _, ok := r.pending[p]; ok || !rf.entry.Until.After(now) {
			continue
		}
		r.queueLocked(p, change{add: true, entry: rf.entry})
		n++
	}
	r.mu.Unlock()
	if n > 0 {
		r.signal()
	}
	return err
}

// intern returns one shared copy of s, so a million bans with the same
// scenario hold one string.
func (r *Runner) intern(s string) string {
	if v, ok := r.strs[s]; ok {
		return v
	}
	r.strs[s] = s
	return s
}

// convertLocked turns a decision into the change it asks for, or reports
// that the decision does not concern the backend at all (ok false).
func (r *Runner) convertLocked(d *decisionfeed.Decision, now time.Time) (p netip.Prefix, c change, ok bool) {
	e, err := enforcer.FromDecision(d)
	if err == nil {
		e.Prefix, err = enforcer.Canonical(e.Prefix)
	}
	if err != nil {
		r.m.ignored.WithLabelValues("invalid").Inc()
		return netip.Prefix{}, change{}, false
	}
	p = e.Prefix
	// Whatever the key held before, this decision replaces it.
	delete(r.refused, p)
	if d.Op == decisionfeed.OpDelete {
		return p, change{entry: e}, true
	}
	if why := r.pol.Filter(d); why != "" {
		r.m.ignored.WithLabelValues(why).Inc()
		return p, change{entry: e}, true
	}
	if d.Expired(now) {
		r.m.ignored.WithLabelValues("expired").Inc()
		return p, change{entry: e}, true
	}
	if why := r.pol.Protected(p); why != "" {
		r.m.refused.WithLabelValues(why).Inc()
		r.pol.Refused(d.Key(), p, why)
		e.Reason, e.Origin = r.intern(e.Reason), r.intern(e.Origin)
		r.refused[p] = refusal{key: d.Key(), entry: e}
		return p, change{entry: e}, true
	}
	e.Reason, e.Origin = r.intern(e.Reason), r.intern(e.Origin)
	return p, change{add: true, entry: e}, true
}

// Snapshot implements decisionfeed.Handler: the backend is reconciled to
// exactly the live bans, in one call. Changes still pending are superseded.
func (r *Runner) Snapshot(ctx context.Context, live []decisionfeed.Decision) error {
	r.backendMu.Lock()
	defer r.backendMu.Unlock()

	r.mu.Lock()
	now := r.now()
	clear(r.refused)
	want := make(map[netip.Prefix]enforcer.Entry, len(live))
	for i := range live {
		p, c, ok := r.convertLocked(&live[i], now)
		if !ok {
			continue
		}
		if c.add {
			want[p] = c.entry
		} else {
			delete(want, p)
		}
	}
	r.mu.Unlock()

	// In map order: sorting a million entries would cost more than
	// every backend's own bookkeeping of them.
	entries := make([]enforcer.Entry, 0, len(want))
	for _, e := range want {
		entries = append(entries, e)
	}

	start := time.Now()
	if err := r.backend.Reconcile(ctx, entries); err != nil {
		r.m.errors.WithLabelValues("reconcile").Inc()
		return fmt.Errorf("reconcile %d bans: %w", len(entries), err)
	}
	r.m.duration.WithLabelValues("reconcile").Observe(time.Since(start).Seconds())

	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.pending)
	r.order = r.order[:0]
	r.active = want
	clear(r.counts)
	r.m.active.Reset()
	for _, e := range want {
		r.countLocked(e, 1)
	}
	r.synced = true
	return nil
}

// Changes implements decisionfeed.Handler: the changes are queued and
// applied by Run after the coalescing delay. It does not fail: a backend
// error is retried by Run, not by the feed.
func (r *Runner) Changes(_ context.Context, changes []decisionfeed.Decision) error {
	r.mu.Lock()
	now := r.now()
	n := 0
	for i := range changes {
		p, c, ok := r.convertLocked(&changes[i], now)
		if !ok {
			continue
		}
		r.queueLocked(p, c)
		n++
	}
	r.mu.Unlock()
	if n > 0 {
		r.signal()
	}
	return nil
}

// queueLocked records c as the latest change for p; an earlier pending
// change for the same prefix is replaced, keeping its place in the order.
func (r *Runner) queueLocked(p netip.Prefix, c change) {
	if _, ok := r.pending[p]; !ok {
		r.order = append(r.order, p)
	}
	r.pending[p] = c
}

func (r *Runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *Runner) countLocked(e enforcer.Entry, d int) {
	k := labelKey{origin: e.Origin, scenario: e.Reason}
	n := r.counts[k] + d
	if n <= 0 {
		delete(r.counts, k)
		r.m.active.DeleteLabelValues(k.origin, k.scenario)
		return
	}
	r.counts[k] = n
	r.m.active.WithLabelValues(k.origin, k.scenario).Set(float64(n))
}

// Run applies queued changes, sweeps expired bans and refreshes the host's
// addresses until ctx ends. Changes still queued then are given one last
// attempt of at most a second; whatever is lost is rebuilt from the topic
// at the next start.
//
// For a backend that implements enforcer.Healer, Run also runs its Watch
// and answers each drift it reports, and each failed batch, with a full
// Restore of the live set, retried with backoff while it fails (Health
// says why meanwhile). When Config.Deliberate reports that the state was
// removed on purpose, Run returns ErrStoodDown instead.
func (r *Runner) Run(ctx context.Context) error {
	var sweep, refresh <-chan time.Time
	if r.cfg.SweepInterval > 0 {
		t := time.NewTicker(r.cfg.SweepInterval)
		defer t.Stop()
		sweep = t.C
	}
	if every := r.pol.RefreshInterval(); every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		refresh = t.C
	}
	backoff := r.cfg.RetryMin
	var retry <-chan time.Time
	applyFailing := false
	var heal <-chan struct{}
	if r.heal != nil {
		heal = r.heal.wake
		wctx, stopWatch := context.WithCancel(ctx)
		watchDone := make(chan struct{})
		go func() {
			defer close(watchDone)
			r.watch(wctx)
		}()
		defer func() {
			stopWatch()
			<-watchDone
		}()
	}
	for {
		select {
		case <-heal:
			if retry != nil {
				// A retry is scheduled and restores; news of the
				// backend (an interface back) brings it forward.
				retry = time.After(r.cfg.RetryMin)
				continue
			}
			failed, err := r.restorePending(ctx)
			if err != nil {
				return err
			}
			if failed {
				retry = time.After(backoff)
				backoff = min(backoff*2, r.cfg.RetryMax)
			} else {
				backoff = r.cfg.RetryMin
			}
			continue
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = r.flush(fctx)
			cancel()
			return nil
		case <-r.wake:
			if retry != nil {
				continue // a retry is scheduled; it will take these too
			}
			if r.cfg.Coalesce > 0 {
				t := time.NewTimer(r.cfg.Coalesce)
				select {
				case <-ctx.Done():
					t.Stop()
					continue
				case <-t.C:
				}
			}
		case <-retry:
			retry = nil
			if r.heal != nil {
				failed, err := r.restorePending(ctx)
				if err != nil {
					return err
				}
				if failed {
					retry = time.After(backoff)
					backoff = min(backoff*2, r.cfg.RetryMax)
					continue
				}
			}
		case <-sweep:
			r.Sweep()
		case <-refresh:
			if err := r.refreshPolicy(ctx); err != nil {
				r.m.errors.WithLabelValues("policy_refresh").Inc()
			}
		}
		if err := r.flush(ctx); err != nil {
			if ctx.Err() != nil {
				continue
			}
			if r.heal != nil {
				// A batch against a table or set that is gone fails
				// for ever: replace it with a full restore.
				r.drift(CauseApplyFailed)
			}
			r.setHealth("apply failed: " + err.Error())
			applyFailing = true
			retry = time.After(backoff)
			backoff = min(backoff*2, r.cfg.RetryMax)
			continue
		}
		if applyFailing {
			applyFailing = false
			r.setHealth("")
		}
		backoff = r.cfg.RetryMin
	}
}

// Sweep queues a delete for every active ban whose expiry has passed and
// returns how many it queued. Run calls it every SweepInterval.
func (r *Runner) Sweep() int {
	r.mu.Lock()
	now := r.now()
	n := 0
	for p, e := range r.active {
		if !e.Until.After(now) {
			if c, ok := r.pending[p]; ok && c.add {
				continue // a newer add is already on its way
			}
			r.queueLocked(p, change{entry: enforcer.Entry{Prefix: p}})
			n++
		}
	}
	r.mu.Unlock()
	if n > 0 {
		r.signal()
	}
	return n
}

// flush applies everything pending, MaxBatch changes per Apply call. On
// error the failed batch goes back to the queue (unless a newer change for
// the same prefix arrived meanwhile) and the error is returned.
func (r *Runner) flush(ctx context.Context) error {
	r.backendMu.Lock()
	defer r.backendMu.Unlock()
	for {
		r.mu.Lock()
		if len(r.order) == 0 {
			r.mu.Unlock()
			return nil
		}
		k := min(len(r.order), r.cfg.MaxBatch)
		taken := make([]netip.Prefix, k)
		copy(taken, r.order[:k])
		r.order = slices.Delete(r.order, 0, k)
		var b enforcer.Batch
		inFlight := make(map[netip.Prefix]change, k)
		for _, p := range taken {
			c := r.pending[p]
			delete(r.pending, p)
			inFlight[p] = c
			if c.add {
				b.Add = append(b.Add, c.entry)
			} else {
				b.Delete = append(b.Delete, p)
			}
		}
		r.mu.Unlock()

		start := time.Now()
		err := r.backend.Apply(ctx, b)
		r.mu.Lock()
		if err != nil {
			// Put the batch back in front, unless superseded.
			var back []netip.Prefix
			for _, p := range taken {
				if _, newer := r.pending[p]; newer {
					continue
				}
				r.pending[p] = inFlight[p]
				back = append(back, p)
			}
			r.order = append(back, r.order...)
			err = fmt.Errorf("apply %d adds, %d deletes: %w", len(b.Add), len(b.Delete), err)
			r.m.errors.WithLabelValues("apply").Inc()
			if r.cfg.OnApplyError != nil {
				r.cfg.OnApplyError(err)
			}
			r.mu.Unlock()
			return err
		}
		r.m.duration.WithLabelValues("apply").Observe(time.Since(start).Seconds())
		r.m.batch.Observe(float64(b.Len()))
		r.m.applied.WithLabelValues("add").Add(float64(len(b.Add)))
		r.m.applied.WithLabelValues("delete").Add(float64(len(b.Delete)))
		for _, e := range b.Add {
			if old, ok := r.active[e.Prefix]; ok {
				r.countLocked(old, -1)
			}
			r.active[e.Prefix] = e
			r.countLocked(e, 1)
		}
		for _, p := range b.Delete {
			if old, ok := r.active[p]; ok {
				r.countLocked(old, -1)
				delete(r.active, p)
			}
		}
		r.mu.Unlock()
	}
}

// Synced reports whether a snapshot has been reconciled into the backend.
func (r *Runner) Synced() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced
}

// Active returns the bans the runner has applied and not withdrawn, sorted
// by prefix.
func (r *Runner) Active() []enforcer.Entry {
	r.mu.Lock()
	out := make([]enforcer.Entry, 0, len(r.active))
	for _, e := range r.active {
		out = append(out, e)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b enforcer.Entry) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// Len returns the number of bans the runner has applied and not withdrawn.
func (r *Runner) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.active)
}

// Pending returns the number of changes waiting to be applied.
func (r *Runner) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.order)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

package cloudflare

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// EnforcerOptions tune an Enforcer. Zero durations take the defaults of
// DefaultEnforcerOptions.
type EnforcerOptions struct {
	// Debounce is how long a change waits for more before a sync, so a
	// burst becomes one bulk call; MaxDelay bounds the wait while changes
	// keep coming.
	Debounce, MaxDelay time.Duration
	// RetryMin and RetryMax bound the backoff after a failed sync.
	RetryMin, RetryMax time.Duration
	// ExpirySlack is how long after the earliest expiry the sync that
	// removes it runs (Cloudflare list items do not expire by themselves).
	ExpirySlack time.Duration
	// OnSync, when set, is told of every sync's outcome and duration. It
	// must not call back into the Enforcer.
	OnSync func(sum Summary, err error, took time.Duration)
}

// DefaultEnforcerOptions returns the options cf-bouncer runs with.
func DefaultEnforcerOptions() EnforcerOptions {
	return EnforcerOptions{
		Debounce:    2 * time.Second,
		MaxDelay:    30 * time.Second,
		RetryMin:    5 * time.Second,
		RetryMax:    5 * time.Minute,
		ExpirySlack: time.Second,
	}
}

// Enforcer is the Cloudflare backend as an enforcer.Enforcer: it holds the
// live entries and keeps the account in step with them through its Client.
// Reconcile syncs at once and returns the outcome; Apply only records the
// change and a sync follows after Debounce. A sync also runs just after the
// earliest expiry, every ResyncInterval, and again with backoff after a
// failure.
//
// Differences from the kernel backends, as the conformance suite runs it:
// expiry is a sync (at most ExpirySlack late), lists widen an IPv6 prefix
// longer than /64 to its /64 and refuse IPv4 shorter than /8 (List reports
// each entry whose widened form Cloudflare holds), and IP Access Rules take
// only some range lengths.
type Enforcer struct {
	c       *Client
	opt     EnforcerOptions
	kick    chan struct{} // a change to sync after the debounce
	resched chan struct{} // Reconcile synced: the next sync is due from now
	stop    context.CancelFunc
	done    chan struct{}

	syncMu sync.Mutex // one sync at a time, Reconcile's or the loop's

	mu     sync.Mutex
	items  map[netip.Prefix]Item
	dirty  bool // changes not yet synced
	closed bool
}

var (
	_ enforcer.Enforcer = (*Enforcer)(nil)
	_ enforcer.Lister   = (*Enforcer)(nil)
)

// NewEnforcer returns an Enforcer syncing through c and starts its sync
// loop; Close stops it.
func NewEnforcer(c *Client, opt EnforcerOptions) *Enforcer {
	def := DefaultEnforcerOptions()
	if opt.Debounce <= 0 {
		opt.Debounce = def.Debounce
	}
	opt.MaxDelay = max(opt.MaxDelay, opt.Debounce)
	if opt.RetryMin <= 0 {
		opt.RetryMin = def.RetryMin
	}
	opt.RetryMax = max(opt.RetryMax, opt.RetryMin)
	if opt.ExpirySlack <= 0 {
		opt.ExpirySlack = def.ExpirySlack
	}
	ctx, stop := context.WithCancel(context.Background())
	e := &Enforcer{c: c, opt: opt, kick: make(chan struct{}, 1), resched: make(chan struct{}, 1),
		stop: stop, done: make(chan struct{}), items: map[netip.Prefix]Item{}}
	go e.loop(ctx)
	return e
}

func itemOf(en enforcer.Entry) Item {
	a := Block
	if en.Remedy == enforcer.RemedyCaptcha {
		a = Challenge
	}
	return Item{Prefix: enforcer.MustCanonical(en.Prefix), Until: en.Until, Scenario: en.Reason, Action: a}
}

// Apply records the batch; the sync that carries it to Cloudflare follows
// after Debounce. It fails only for a closed Enforcer or an invalid prefix.
func (e *Enforcer) Apply(_ context.Context, b enforcer.Batch) error {
	if err := enforcer.CheckBatch(b); err != nil {
		return fmt.Errorf("cloudflare apply: %w", err)
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("cloudflare apply: %w", enforcer.ErrClosed)
	}
	for _, p := range b.Delete {
		delete(e.items, enforcer.MustCanonical(p))
	}
	for _, en := range b.Add {
		it := itemOf(en)
		e.items[it.Prefix] = it
	}
	e.dirty = true
	e.mu.Unlock()
	select {
	case e.kick <- struct{}{}:
	default:
	}
	return nil
}

// Reconcile makes the entries the live set and syncs at once.
func (e *Enforcer) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	if err := enforcer.CheckEntries(entries); err != nil {
		return fmt.Errorf("cloudflare reconcile: %w", err)
	}
	items := make(map[netip.Prefix]Item, len(entries))
	for _, en := range entries {
		it := itemOf(en)
		if old, ok := items[it.Prefix]; ok && !later(it.Until, old.Until) {
			continue
		}
		items[it.Prefix] = it
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("cloudflare reconcile: %w", enforcer.ErrClosed)
	}
	e.items, e.dirty = items, true
	e.mu.Unlock()
	if _, err := e.sync(ctx); err != nil {
		return err
	}
	select {
	case e.resched <- struct{}{}:
	default:
	}
	return nil
}

// Flush syncs now when changes are waiting for the debounce.
func (e *Enforcer) Flush(ctx context.Context) error {
	e.mu.Lock()
	dirty := e.dirty
	e.mu.Unlock()
	if !dirty {
		return nil
	}
	_, err := e.sync(ctx)
	return err
}

// sync carries the live set to Cloudflare.
func (e *Enforcer) sync(ctx context.Context) ([]Item, error) {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	e.mu.Lock()
	e.dirty = false
	e.mu.Unlock()
	items := e.live()
	start := time.Now()
	sum, err := e.c.Sync(ctx, items)
	if err != nil {
		e.mu.Lock()
		e.dirty = true
		e.mu.Unlock()
		err = fmt.Errorf("cloudflare sync of %d items: %w", len(items), err)
	}
	if e.opt.OnSync != nil {
		e.opt.OnSync(sum, err, time.Since(start))
	}
	return items, err
}

// loop syncs after changes settle (Debounce, at most MaxDelay after the
// first), just after the earliest expiry, every resync interval, and again
// with backoff after a failure.
func (e *Enforcer) loop(ctx context.Context) {
	defer close(e.done)
	timer := time.NewTimer(e.c.cfg.ResyncInterval)
	defer timer.Stop()
	var first time.Time // first change not yet synced
	retry := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			if retry > 0 {
				continue // a retry is scheduled; it syncs the latest state
			}
			timer.Reset(min(e.opt.Debounce, max(first.Add(e.opt.MaxDelay).Sub(now), 0)))
			continue
		case <-e.resched:
			if retry == 0 && first.IsZero() {
				timer.Reset(nextDue(e.live(), time.Now(), e.c.cfg.ResyncInterval, e.opt.ExpirySlack))
			}
			continue
		case <-timer.C:
		}
		first = time.Time{}
		items, err := e.sync(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			retry = min(max(2*retry, e.opt.RetryMin), e.opt.RetryMax)
			timer.Reset(retry)
			continue
		}
		retry = 0
		timer.Reset(nextDue(items, time.Now(), e.c.cfg.ResyncInterval, e.opt.ExpirySlack))
	}
}

// live returns the entries' items.
func (e *Enforcer) live() []Item {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Item, 0, len(e.items))
	for _, it := range e.items {
		out = append(out, it)
	}
	return out
}

// nextDue is when the next sync is due without changes: just after the
// earliest expiry, at the latest after resync.
func nextDue(items []Item, now time.Time, resync, slack time.Duration) time.Duration {
	due := resync
	for _, it := range items {
		if !it.Until.IsZero() && it.Until.After(now) {
			due = min(due, it.Until.Sub(now)+slack)
		}
	}
	return due
}

// List syncs pending changes, then reads what Cloudflare holds: each live
// entry whose list item (or access rule) is there, with its expiry, and
// every other item the lists hold, without one. It reads every item, so it
// is meant for tests and diagnostics.
func (e *Enforcer) List(ctx context.Context) ([]enforcer.Entry, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("cloudflare list: %w", enforcer.ErrClosed)
	}
	if err := e.Flush(ctx); err != nil {
		return nil, err
	}
	p, err := e.c.DryRun(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("cloudflare list: %w", err)
	}
	var held []string
	for _, lp := range p.Lists {
		held = append(held, lp.DeleteIPs...)
	}
	if p.Access != nil {
		held = append(held, p.Access.DeleteValues...)
	}
	norm := normalize
	if e.c.cfg.Mode == ModeAccessRules {
		norm = accessValue
	}
	now := time.Now()
	byValue := map[string][]enforcer.Entry{}
	e.mu.Lock()
	for pf, it := range e.items {
		if !it.Until.IsZero() && !it.Until.After(now) {
			continue
		}
		if v, _, err := norm(pf); err == nil {
			en := enforcer.Entry{Prefix: pf, Until: it.Until, Reason: it.Scenario}
			if it.Action == Challenge {
				en.Remedy = enforcer.RemedyCaptcha
			}
			byValue[v] = append(byValue[v], en)
		}
	}
	e.mu.Unlock()
	var out []enforcer.Entry
	for _, v := range held {
		if ens, ok := byValue[v]; ok {
			out = append(out, ens...)
			delete(byValue, v)
			continue
		}
		pf, err := parsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("cloudflare list: item %q: %w", v, err)
		}
		out = append(out, enforcer.Entry{Prefix: pf})
	}
	return out, nil
}

// Close stops the sync loop; what Cloudflare holds stays (cf-bouncer
// cleanup removes it). Later calls fail with enforcer.ErrClosed.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	already := e.closed
	e.closed = true
	e.mu.Unlock()
	if !already {
		e.stop()
		<-e.done
	}
	return nil
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// ErrStoodDown is returned by Run when the backend's state was removed on
// purpose (Config.Deliberate said so): the runner does not restore it.
var ErrStoodDown = errors.New("enforcement removed on purpose; not restoring it")

// Restore causes that the runner itself reports.
const (
	// CauseApplyFailed: a batch failed; a full restore replaces the retry
	// of the same batch, which could never succeed once a table or set is
	// gone.
	CauseApplyFailed = "apply_failed"
	// CauseWatchFailed: the backend's Watch failed and was restarted;
	// changes may have gone unseen meanwhile.
	CauseWatchFailed = "watch_failed"
)

// restorePending restores when a drift is pending. failed reports a
// restore that failed and must be retried (its cause stays pending); err
// is ErrStoodDown, which ends Run.
func (r *Runner) restorePending(ctx context.Context) (failed bool, err error) {
	cause := r.takeCause()
	if cause == "" {
		return false, nil
	}
	if err := r.restore(ctx, cause); err != nil {
		if errors.Is(err, ErrStoodDown) {
			return false, err
		}
		r.mu.Lock()
		if r.heal.cause == "" {
			r.heal.cause = cause
		}
		r.mu.Unlock()
		return ctx.Err() == nil, nil
	}
	return false, nil
}

// healer is the runner's view of a backend that can heal.
type healer struct {
	h     enforcer.Healer
	wake  chan struct{}
	cause string // latest cause not yet handled; guarded by Runner.mu
}

// drift records cause and wakes Run.
func (r *Runner) drift(cause string) {
	r.mu.Lock()
	if r.heal.cause == "" {
		r.heal.cause = cause
	}
	r.mu.Unlock()
	select {
	case r.heal.wake <- struct{}{}:
	default:
	}
}

// expect implements enforcer.WatchHooks.Expect: with no change of ours in
// flight, it counts the bans live at a point slightly ahead (so a ban
// about to expire counts on neither side) and hands the count to check.
func (r *Runner) expect(check func(live int, at time.Time) error) error {
	r.backendMu.Lock()
	defer r.backendMu.Unlock()
	at := r.now().Add(2 * time.Second)
	r.mu.Lock()
	n := 0
	for _, e := range r.active {
		if e.Until.IsZero() || e.Until.After(at) {
			n++
		}
	}
	r.mu.Unlock()
	return check(n, at)
}

// watch runs the backend's Watch until ctx ends, restarting it (after a
// pause) when it fails, which it reports as a drift: events may have been
// lost meanwhile.
func (r *Runner) watch(ctx context.Context) {
	hooks := enforcer.WatchHooks{Drift: r.drift, Expect: r.expect}
	for {
		err := r.heal.h.Watch(ctx, hooks)
		if ctx.Err() != nil {
			return
		}
		r.m.errors.WithLabelValues("watch").Inc()
		if r.cfg.OnWatchError != nil {
			r.cfg.OnWatchError(err)
		}
		r.drift(CauseWatchFailed)
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.cfg.RetryMin):
		}
	}
}

// takeCause returns and clears the pending drift cause.
func (r *Runner) takeCause() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.heal.cause
	r.heal.cause = ""
	return c
}

// restore makes the backend hold the runner's live set again: the bans
// applied so far with the pending changes on top, in one Restore. On
// success nothing is pending any more.
func (r *Runner) restore(ctx context.Context, cause string) error {
	if r.cfg.Deliberate != nil && r.cfg.Deliberate() {
		return ErrStoodDown
	}
	r.backendMu.Lock()
	defer r.backendMu.Unlock()

	r.mu.Lock()
	want := make(map[netip.Prefix]enforcer.Entry, len(r.active)+len(r.pending))
	for p, e := range r.active {
		want[p] = e
	}
	for _, p := range r.order {
		if c := r.pending[p]; c.add {
			want[p] = c.entry
		} else {
			delete(want, p)
		}
	}
	r.mu.Unlock()
	entries := make([]enforcer.Entry, 0, len(want))
	for _, e := range want {
		entries = append(entries, e)
	}

	start := time.Now()
	err := r.heal.h.Restore(ctx, entries)
	took := time.Since(start)
	if err != nil {
		r.m.errors.WithLabelValues("restore").Inc()
		r.setHealth(fmt.Sprintf("restore after %s failed: %v", cause, err))
		err = fmt.Errorf("restore %d bans after %s: %w", len(entries), cause, err)
	} else {
		r.m.restores.WithLabelValues(r.cfg.Backend, cause).Inc()
		r.m.duration.WithLabelValues("restore").Observe(took.Seconds())
		r.mu.Lock()
		clear(r.pending)
		r.order = r.order[:0]
		r.active = want
		clear(r.counts)
		r.m.active.Reset()
		for _, e := range want {
			r.countLocked(e, 1)
		}
		r.mu.Unlock()
		r.setHealth("")
	}
	if r.cfg.OnRestore != nil {
		r.cfg.OnRestore(cause, len(entries), took, err)
	}
	return err
}

// setHealth records why the backend is not enforcing the live set ("":
// it is).
func (r *Runner) setHealth(problem string) {
	r.mu.Lock()
	r.problem = problem
	r.mu.Unlock()
	if problem == "" {
		r.m.healthy.Set(1)
	} else {
		r.m.healthy.Set(0)
	}
}

// Health returns "" while the backend holds the live set as far as the
// runner knows, or what is wrong: a restore or a batch that keeps failing.
func (r *Runner) Health() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.problem
}

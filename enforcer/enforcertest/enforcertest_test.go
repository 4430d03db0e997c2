package enforcertest

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// memEnforcer is a reference backend in memory: expiry is checked on
// read, as a kernel with element timeouts behaves. The suite passing on it
// shows the suite asks only what the contract promises.
type memEnforcer struct {
	mu     sync.Mutex
	m      map[netip.Prefix]time.Time
	closed bool
}

func (e *memEnforcer) Apply(_ context.Context, b enforcer.Batch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return enforcer.ErrClosed
	}
	if err := enforcer.CheckBatch(b); err != nil {
		return err
	}
	for _, p := range b.Delete {
		delete(e.m, enforcer.MustCanonical(p))
	}
	for _, en := range b.Add {
		e.m[enforcer.MustCanonical(en.Prefix)] = en.Until
	}
	return nil
}

func (e *memEnforcer) Reconcile(_ context.Context, entries []enforcer.Entry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return enforcer.ErrClosed
	}
	if err := enforcer.CheckEntries(entries); err != nil {
		return err
	}
	e.m = map[netip.Prefix]time.Time{}
	for _, en := range entries {
		p := enforcer.MustCanonical(en.Prefix)
		if old, ok := e.m[p]; !ok || en.Until.After(old) {
			e.m[p] = en.Until
		}
	}
	return nil
}

func (e *memEnforcer) List(context.Context) ([]enforcer.Entry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []enforcer.Entry
	now := time.Now()
	for p, u := range e.m {
		if u.IsZero() || u.After(now) {
			out = append(out, enforcer.Entry{Prefix: p, Until: u})
		}
	}
	return out, nil
}

func (e *memEnforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

func TestReferenceEnforcer(t *testing.T) {
	TestEnforcer(t, func(*testing.T) enforcer.Enforcer { return &memEnforcer{m: map[netip.Prefix]time.Time{}} })
}

func TestDiffEntries(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	a := enforcer.Entry{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Until: now}
	b := enforcer.Entry{Prefix: netip.MustParsePrefix("192.0.2.2/32"), Until: now}
	late := a
	late.Until = now.Add(Tolerance + time.Second)
	cases := []struct {
		got, want []enforcer.Entry
		diff      string
	}{
		{[]enforcer.Entry{a, b}, []enforcer.Entry{a, b}, ""},
		{[]enforcer.Entry{a}, []enforcer.Entry{a, b}, "- 192.0.2.2/32 until 2026-11-25T12:00:00Z\n"},
		{[]enforcer.Entry{a, b}, []enforcer.Entry{b}, "+ 192.0.2.1/32 until 2026-11-25T12:00:00Z\n"},
		{[]enforcer.Entry{late}, []enforcer.Entry{a}, "~ 192.0.2.1/32 until 2026-11-25T12:00:03Z, want 2026-11-25T12:00:00Z\n"},
	}
	for i, c := range cases {
		if got := diffEntries(c.got, c.want); got != c.diff {
			t.Errorf("case %d: diff %q, want %q", i, got, c.diff)
		}
	}
}

package runner

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
)

// healRecorder is a recorder that can heal: its Watch reports the drifts
// sent on drifts, and Restore replaces the state (failing restoreFail
// times first).
type healRecorder struct {
	*recorder
	drifts      chan string
	restoreFail atomic.Int32
	restored    chan []string
	hooks       chan enforcer.WatchHooks
}

func newHealRecorder() *healRecorder {
	return &healRecorder{recorder: newRecorder(), drifts: make(chan string, 10),
		restored: make(chan []string, 10), hooks: make(chan enforcer.WatchHooks, 1)}
}

func (h *healRecorder) Watch(ctx context.Context, w enforcer.WatchHooks) error {
	h.hooks <- w
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-h.drifts:
			w.Drift(c)
		}
	}
}

func (h *healRecorder) Restore(_ context.Context, es []enforcer.Entry) error {
	if h.restoreFail.Add(-1) >= 0 {
		return errors.New("injected restore failure")
	}
	h.mu.Lock()
	clear(h.state)
	var got []string
	for _, e := range es {
		h.state[e.Prefix] = e
		got = append(got, e.Prefix.String())
	}
	h.mu.Unlock()
	slices.Sort(got)
	h.restored <- got
	return nil
}

func waitRestored(t *testing.T, h *healRecorder) []string {
	t.Helper()
	select {
	case got := <-h.restored:
		return got
	case <-time.After(5 * time.Second):
		t.Fatal("no restore within 5s")
	}
	return nil
}

func TestDriftRestoresLiveSet(t *testing.T) {
	clk := &clock{t: t0}
	h := newHealRecorder()
	h.restoreFail.Store(2)
	reg := prometheus.NewRegistry()
	cfg := testConfig(clk)
	cfg.Backend = "fake"
	var logged atomic.Int32
	cfg.OnRestore = func(string, int, time.Duration, error) { logged.Add(1) }
	r, err := New(cfg, h, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	if err := r.Snapshot(ctx, slices.Values([]decisionfeed.Decision{ban("192.0.2.7"), ban("2001:db8:2::/64")})); err != nil {
		t.Fatal(err)
	}
	// Someone wipes the backend: the runner restores exactly the live set,
	// after two failed attempts that leave it unhealthy meanwhile.
	h.mu.Lock()
	clear(h.state)
	h.mu.Unlock()
	h.drifts <- "table_removed"
	got := waitRestored(t, h)
	settle(r)
	if want := []string{"192.0.2.7/32", "2001:db8:2::/64"}; !slices.Equal(got, want) {
		t.Errorf("restored %v, want %v", got, want)
	}
	if r.Health() != "" {
		t.Errorf("Health() = %q after a successful restore, want healthy", r.Health())
	}
	if n := testutil.ToFloat64(r.m.restores.WithLabelValues("fake", "table_removed")); n != 1 {
		t.Errorf("restores_total{cause=table_removed} = %v, want 1", n)
	}
	if n := testutil.ToFloat64(r.m.errors.WithLabelValues("restore")); n != 2 {
		t.Errorf("errors_total{op=restore} = %v, want the 2 injected failures", n)
	}
	if logged.Load() != 3 {
		t.Errorf("OnRestore called %d times, want 3 (2 failures, 1 success)", logged.Load())
	}

	// A batch that fails (its table is gone) is replaced by a restore that
	// includes it.
	h.mu.Lock()
	h.failN = 1000
	h.mu.Unlock()
	if err := r.Changes(ctx, []decisionfeed.Decision{ban("192.0.2.8"), del("192.0.2.7")}); err != nil {
		t.Fatal(err)
	}
	got = waitRestored(t, h)
	settle(r)
	if want := []string{"192.0.2.8/32", "2001:db8:2::/64"}; !slices.Equal(got, want) {
		t.Errorf("restored after a failed batch %v, want %v", got, want)
	}
	if r.Pending() != 0 {
		t.Errorf("Pending() = %d after the restore, want 0", r.Pending())
	}
	if n := testutil.ToFloat64(r.m.restores.WithLabelValues("fake", CauseApplyFailed)); n != 1 {
		t.Errorf("restores_total{cause=apply_failed} = %v, want 1", n)
	}

	// Expect counts the live bans at a point ahead of now.
	w := <-h.hooks
	var live int
	if err := w.Expect(func(n int, _ time.Time) error { live = n; return nil }); err != nil {
		t.Fatal(err)
	}
	if live != 2 {
		t.Errorf("Expect counted %d live bans, want 2", live)
	}
}

func TestDeliberateWipeStandsDown(t *testing.T) {
	clk := &clock{t: t0}
	h := newHealRecorder()
	cfg := testConfig(clk)
	cfg.Deliberate = func() bool { return true }
	r, err := New(cfg, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.7")})); err != nil {
		t.Fatal(err)
	}
	h.drifts <- "table_removed"
	select {
	case err := <-done:
		if !errors.Is(err, ErrStoodDown) {
			t.Fatalf("Run = %v, want ErrStoodDown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running 5s after a deliberate wipe")
	}
	select {
	case got := <-h.restored:
		t.Fatalf("restored %v after a deliberate wipe", got)
	default:
	}
	if got := r.Active(); len(got) != 1 || got[0].Prefix != netip.MustParsePrefix("192.0.2.7/32") {
		t.Errorf("Active() = %v", got)
	}
}

func TestFailingRestoreIsUnhealthy(t *testing.T) {
	clk := &clock{t: t0}
	h := newHealRecorder()
	h.restoreFail.Store(1 << 30)
	r, err := New(testConfig(clk), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	if err := r.Snapshot(ctx, slices.Values([]decisionfeed.Decision{ban("192.0.2.7")})); err != nil {
		t.Fatal(err)
	}
	h.drifts <- "set_removed"
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(r.m.errors.WithLabelValues("restore")) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("restore not retried 3 times within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	if got := r.Health(); !strings.Contains(got, "restore after set_removed failed") {
		t.Errorf("Health() = %q while restores fail", got)
	}
	if g := testutil.ToFloat64(r.m.healthy); g != 0 {
		t.Errorf("healthy gauge = %v while restores fail, want 0", g)
	}
	h.restoreFail.Store(0)
	waitRestored(t, h)
	settle(r)
	if got := r.Health(); got != "" {
		t.Errorf("Health() = %q after the restore succeeded", got)
	}
}

func TestDriftBeforeSnapshotRestoresWithIt(t *testing.T) {
	clk := &clock{t: t0}
	h := newHealRecorder()
	cfg := testConfig(clk)
	cfg.Backend = "fake"
	r, err := New(cfg, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// A wipe before the feed's snapshot: nothing to restore yet, the
	// snapshot itself is loaded with Restore.
	h.drifts <- "table_removed"
	time.Sleep(50 * time.Millisecond)
	select {
	case got := <-h.restored:
		t.Fatalf("restored %v before any snapshot", got)
	default:
	}
	if err := r.Snapshot(ctx, slices.Values([]decisionfeed.Decision{ban("192.0.2.7")})); err != nil {
		t.Fatal(err)
	}
	if got := waitRestored(t, h); !slices.Equal(got, []string{"192.0.2.7/32"}) {
		t.Errorf("snapshot restored %v", got)
	}
	if n := testutil.ToFloat64(r.m.restores.WithLabelValues("fake", "table_removed")); n != 1 {
		t.Errorf("restores_total = %v, want 1", n)
	}
}

func TestDropsBySourceFromPerBanCounters(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	r := startRunner(t, testConfig(clk), f, nil)
	cli := ban("192.0.2.2")
	cli.Origin, cli.Scenario = "cli", ""
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.1"), cli})); err != nil {
		t.Fatal(err)
	}
	p1, p2 := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	read := func(by map[netip.Prefix]enforcer.Count) map[enforcer.Source]enforcer.Count {
		f.mu.Lock()
		f.drops = enforcer.Counters{ByPrefix: by}
		f.mu.Unlock()
		got, err := r.DropsBySource()
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	engine := enforcer.Source{Origin: "engine", Scenario: "crowdsecurity/ssh-bf"}
	cliSrc := enforcer.Source{Origin: "cli"}
	read(map[netip.Prefix]enforcer.Count{p1: {Packets: 5, Bytes: 300}, p2: {Packets: 1, Bytes: 60}})
	// The first ban's element was made anew (a restore): its counter
	// restarted, the total goes on from 5.
	got := read(map[netip.Prefix]enforcer.Count{p1: {Packets: 2, Bytes: 120}, p2: {Packets: 4, Bytes: 240}})
	if got[engine] != (enforcer.Count{Packets: 7, Bytes: 420}) || got[cliSrc] != (enforcer.Count{Packets: 4, Bytes: 240}) {
		t.Errorf("DropsBySource = %v", got)
	}
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
)

// call is one recorded backend call.
type call struct {
	op      string // "apply" or "reconcile"
	adds    []string
	deletes []string
}

// recorder is a fake Enforcer that records calls, holds the resulting
// state and fails the next failN calls.
type recorder struct {
	mu     sync.Mutex
	calls  []call
	state  map[netip.Prefix]enforcer.Entry
	failN  int
	notify chan struct{}
	drops  enforcer.Counters
}

func newRecorder() *recorder {
	return &recorder{state: map[netip.Prefix]enforcer.Entry{}, notify: make(chan struct{}, 100)}
}

func (f *recorder) fail() error {
	if f.failN > 0 {
		f.failN--
		return errors.New("injected failure")
	}
	return nil
}

func (f *recorder) Apply(_ context.Context, b enforcer.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := call{op: "apply"}
	for _, e := range b.Add {
		c.adds = append(c.adds, e.Prefix.String())
	}
	for _, p := range b.Delete {
		c.deletes = append(c.deletes, p.String())
	}
	if err := f.fail(); err != nil {
		c.op = "apply-failed"
		f.calls = append(f.calls, c)
		f.notify <- struct{}{}
		return err
	}
	f.calls = append(f.calls, c)
	for _, e := range b.Add {
		f.state[e.Prefix] = e
	}
	for _, p := range b.Delete {
		delete(f.state, p)
	}
	f.notify <- struct{}{}
	return nil
}

func (f *recorder) Reconcile(_ context.Context, es []enforcer.Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := call{op: "reconcile"}
	for _, e := range es {
		c.adds = append(c.adds, e.Prefix.String())
	}
	if err := f.fail(); err != nil {
		c.op = "reconcile-failed"
		f.calls = append(f.calls, c)
		return err
	}
	f.calls = append(f.calls, c)
	clear(f.state)
	for _, e := range es {
		f.state[e.Prefix] = e
	}
	return nil
}

func (f *recorder) Close() error { return nil }

func (f *recorder) Counters() (enforcer.Counters, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.drops, nil
}

func (f *recorder) snapshot() ([]call, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var st []string
	for p := range f.state {
		st = append(st, p.String())
	}
	slices.Sort(st)
	return slices.Clone(f.calls), st
}

// waitCalls waits until the recorder has seen n backend calls.
func (f *recorder) waitCalls(t *testing.T, n int) []call {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		calls, _ := f.snapshot()
		if len(calls) >= n {
			return calls
		}
		select {
		case <-f.notify:
		case <-deadline:
			t.Fatalf("waited for %d backend calls, have %d: %+v", n, len(calls), calls)
		}
	}
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func dec(op decisionfeed.Op, typ decisionfeed.Type, value string, until time.Time) decisionfeed.Decision {
	scope := decisionfeed.ScopeIP
	if strings.Contains(value, "/") {
		scope = decisionfeed.ScopeRange
	}
	return decisionfeed.Decision{
		V: 1, ID: "id-" + value, Op: op, Type: typ, Scope: scope, Value: value,
		Until: until, Scenario: "crowdsecurity/ssh-bf", Origin: "engine", CreatedAt: t0.Add(-time.Hour),
	}
}

func ban(value string) decisionfeed.Decision {
	return dec(decisionfeed.OpAdd, decisionfeed.TypeBan, value, t0.Add(time.Hour))
}

func del(value string) decisionfeed.Decision {
	return dec(decisionfeed.OpDelete, decisionfeed.TypeBan, value, time.Time{})
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// testPolicy protects a whitelist and the host addresses hosts returns.
func testPolicy(hosts func() ([]netip.Addr, error)) *policy.Policy {
	pc := policy.DefaultConfig()
	pc.Whitelist = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/28"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	pc.HostAddressesRefresh = 0
	pol, err := policy.New(context.Background(), pc, policy.Options{HostAddrs: hosts})
	if err != nil {
		panic(err)
	}
	return pol
}

func testConfig(clk *clock) Config {
	cfg := DefaultConfig()
	cfg.Policy = testPolicy(func() ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:1::1")}, nil
	})
	cfg.Coalesce = 20 * time.Millisecond
	cfg.RetryMin = time.Millisecond
	cfg.RetryMax = 4 * time.Millisecond
	cfg.SweepInterval = 0
	cfg.MetricsSubsystem = "fw_bouncer"
	cfg.Now = clk.now
	return cfg
}

// settle waits for the runner to finish the flush whose backend call the
// recorder has already seen, so that its own state is updated too.
func settle(r *Runner) {
	r.backendMu.Lock()
	r.backendMu.Unlock() //nolint:staticcheck // an empty critical section is the point
}

func startRunner(t *testing.T, cfg Config, f *recorder, reg prometheus.Registerer) *Runner {
	t.Helper()
	r, err := New(cfg, f, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func TestSnapshotFiltersAndReconcilesOnce(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	reg := prometheus.NewRegistry()
	r := startRunner(t, testConfig(clk), f, reg)

	live := []decisionfeed.Decision{
		ban("192.0.2.7"),
		ban("2001:db8:2::/64"),
		ban("198.51.100.5"),     // whitelisted address
		ban("198.51.100.0/24"),  // range containing the whitelist
		ban("198.51.100.64/26"), // beside the whitelist: allowed
		ban("203.0.113.0/24"),   // contains a host address
		ban("2001:db8:1::1"),    // a host address
		ban("2001:db8:ffff:1::/64"),
		dec(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "192.0.2.8", t0.Add(time.Hour)),
		dec(decisionfeed.OpAdd, decisionfeed.TypeBan, "192.0.2.9", t0.Add(-time.Second)), // expired
		{V: 1, Op: decisionfeed.OpAdd, Type: decisionfeed.TypeBan, Scope: "bogus", Value: "x"},
	}
	if err := r.Snapshot(context.Background(), slices.Values(live)); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	calls, state := f.snapshot()
	want := []string{"192.0.2.7/32", "198.51.100.64/26", "2001:db8:2::/64"}
	if len(calls) == 1 {
		slices.Sort(calls[0].adds)
	}
	if len(calls) != 1 || calls[0].op != "reconcile" || !slices.Equal(calls[0].adds, want) {
		t.Fatalf("backend calls = %+v, want one reconcile of %v", calls, want)
	}
	if !slices.Equal(state, want) {
		t.Fatalf("backend state = %v, want %v", state, want)
	}
	if !r.Synced() {
		t.Fatal("Synced() = false after a snapshot")
	}
	for reason, n := range map[string]float64{policy.RefusedWhitelist: 3, policy.RefusedHostAddress: 2} {
		if got := testutil.ToFloat64(r.m.refused.WithLabelValues(reason)); got != n {
			t.Errorf("refused_total{reason=%s} = %v, want %v", reason, got, n)
		}
	}
	for reason, n := range map[string]float64{"type": 1, "expired": 1, "invalid": 1} {
		if got := testutil.ToFloat64(r.m.ignored.WithLabelValues(reason)); got != n {
			t.Errorf("ignored_total{reason=%s} = %v, want %v", reason, got, n)
		}
	}
	if got := testutil.ToFloat64(r.m.active.WithLabelValues("engine", "crowdsecurity/ssh-bf")); got != 3 {
		t.Errorf("active_bans = %v, want 3", got)
	}
}

func TestChangesCoalesceIntoOneBatch(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	r := startRunner(t, testConfig(clk), f, nil)
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.1"), ban("192.0.2.2")})); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Three bursts inside the coalescing window, with a key added and
	// deleted again, and a ban replaced by a captcha.
	_ = r.Changes(ctx, []decisionfeed.Decision{ban("192.0.2.3"), ban("192.0.2.4")})
	_ = r.Changes(ctx, []decisionfeed.Decision{del("192.0.2.3"), ban("2001:db8:5::/48")})
	_ = r.Changes(ctx, []decisionfeed.Decision{
		dec(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "192.0.2.1", t0.Add(time.Hour)),
		ban("203.0.113.1"), // host address: refused, so it withdraws nothing that is banned
	})
	calls := f.waitCalls(t, 2)
	settle(r)
	want := call{op: "apply",
		adds:    []string{"192.0.2.4/32", "2001:db8:5::/48"},
		deletes: []string{"192.0.2.3/32", "192.0.2.1/32", "203.0.113.1/32"}}
	got := calls[1]
	if got.op != want.op || !slices.Equal(got.adds, want.adds) || !slices.Equal(got.deletes, want.deletes) {
		t.Fatalf("batch = %+v, want %+v", got, want)
	}
	_, state := f.snapshot()
	if ws := []string{"192.0.2.2/32", "192.0.2.4/32", "2001:db8:5::/48"}; !slices.Equal(state, ws) {
		t.Fatalf("state = %v, want %v", state, ws)
	}
	var active []string
	for _, e := range r.Active() {
		active = append(active, e.Prefix.String())
	}
	if !slices.Equal(active, state) {
		t.Fatalf("Active() = %v, backend holds %v", active, state)
	}
	if n := testutil.ToFloat64(r.m.applied.WithLabelValues("add")); n != 2 {
		t.Errorf("applied_total{op=add} = %v, want 2", n)
	}
	if n := testutil.ToFloat64(r.m.applied.WithLabelValues("delete")); n != 3 {
		t.Errorf("applied_total{op=delete} = %v, want 3", n)
	}
}

func TestApplyRetriesAndKeepsNewerChanges(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	cfg := testConfig(clk)
	cfg.Coalesce = 0
	var errs []string
	cfg.OnApplyError = func(err error) { errs = append(errs, err.Error()) }
	r := startRunner(t, cfg, f, nil)
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{})); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.failN = 2
	f.mu.Unlock()
	_ = r.Changes(context.Background(), []decisionfeed.Decision{ban("192.0.2.10"), ban("192.0.2.11")})
	f.waitCalls(t, 2) // the snapshot and the first failure
	// While the retry is pending, the first key is withdrawn.
	_ = r.Changes(context.Background(), []decisionfeed.Decision{del("192.0.2.10")})
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, state := f.snapshot()
		if slices.Equal(state, []string{"192.0.2.11/32"}) && r.Pending() == 0 {
			break
		}
		if time.Now().After(deadline) {
			calls, _ := f.snapshot()
			t.Fatalf("state = %v after retries; calls %+v", state, calls)
		}
		time.Sleep(time.Millisecond)
	}
	calls, _ := f.snapshot()
	var failed int
	for _, c := range calls {
		if c.op == "apply-failed" {
			failed++
		}
	}
	if failed != 2 {
		t.Fatalf("failed applies = %d, want 2 (%+v)", failed, calls)
	}
	last := calls[len(calls)-1]
	if last.op != "apply" || !slices.Equal(last.adds, []string{"192.0.2.11/32"}) || !slices.Equal(last.deletes, []string{"192.0.2.10/32"}) {
		t.Fatalf("last call = %+v", last)
	}
	if n := testutil.ToFloat64(r.m.errors.WithLabelValues("apply")); n != 2 {
		t.Errorf("errors_total{op=apply} = %v, want 2", n)
	}
	r.mu.Lock()
	n := len(errs)
	r.mu.Unlock()
	if n != 2 || !strings.Contains(errs[0], "injected failure") {
		t.Errorf("OnApplyError saw %q", errs)
	}
}

func TestSnapshotErrorIsReturned(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	f.failN = 1
	r := startRunner(t, testConfig(clk), f, nil)
	err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.1")}))
	if err == nil || !strings.Contains(err.Error(), "reconcile 1 bans: injected failure") {
		t.Fatalf("Snapshot error = %v", err)
	}
	if r.Synced() {
		t.Fatal("Synced() = true after a failed snapshot")
	}
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.1")})); err != nil {
		t.Fatalf("second Snapshot: %v", err)
	}
	if _, state := f.snapshot(); !slices.Equal(state, []string{"192.0.2.1/32"}) {
		t.Fatalf("state = %v", state)
	}
}

func TestSweepDeletesExpired(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	r := startRunner(t, testConfig(clk), f, nil)
	short := dec(decisionfeed.OpAdd, decisionfeed.TypeBan, "192.0.2.20", t0.Add(time.Minute))
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{short, ban("192.0.2.21")})); err != nil {
		t.Fatal(err)
	}
	if n := r.Sweep(); n != 0 {
		t.Fatalf("Sweep before expiry queued %d", n)
	}
	clk.set(t0.Add(time.Minute))
	if n := r.Sweep(); n != 1 {
		t.Fatalf("Sweep at expiry queued %d, want 1", n)
	}
	calls := f.waitCalls(t, 2)
	settle(r)
	if c := calls[1]; c.op != "apply" || len(c.adds) != 0 || !slices.Equal(c.deletes, []string{"192.0.2.20/32"}) {
		t.Fatalf("sweep batch = %+v", c)
	}
	if got := len(r.Active()); got != 1 {
		t.Fatalf("active after sweep = %d, want 1", got)
	}
}

func TestHostAddressRefreshWithdrawsBan(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	cfg := testConfig(clk)
	var mu sync.Mutex
	hosts := []netip.Addr{netip.MustParseAddr("203.0.113.1")}
	cfg.Policy = testPolicy(func() ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(hosts), nil
	})
	r := startRunner(t, cfg, f, nil)
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.0/24"), ban("192.0.2.99")})); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	hosts = append(hosts, netip.MustParseAddr("192.0.2.50"))
	mu.Unlock()
	if err := r.refreshPolicy(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.waitCalls(t, 2)
	if _, state := f.snapshot(); !slices.Equal(state, []string{"192.0.2.99/32"}) {
		t.Fatalf("state = %v, want the range withdrawn", state)
	}
}

func TestMetricsExposition(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	f.drops = enforcer.Counters{
		ByReason: map[string]enforcer.Count{"crowdsecurity/ssh-bf": {Packets: 7, Bytes: 420}},
		BySource: map[enforcer.Source]enforcer.Count{{Origin: "engine", Scenario: "crowdsecurity/ssh-bf"}: {Packets: 7, Bytes: 420}},
	}
	cfg := testConfig(clk)
	reg := prometheus.NewRegistry()
	r := startRunner(t, cfg, f, reg)
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.1")})); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP portcullis_fw_bouncer_active_bans Bans currently enforced, by origin and scenario.
# TYPE portcullis_fw_bouncer_active_bans gauge
portcullis_fw_bouncer_active_bans{origin="engine",scenario="crowdsecurity/ssh-bf"} 1
# HELP portcullis_fw_bouncer_dropped_bytes_total Bytes dropped by the backend, by reason (scenario or origin).
# TYPE portcullis_fw_bouncer_dropped_bytes_total counter
portcullis_fw_bouncer_dropped_bytes_total{reason="crowdsecurity/ssh-bf"} 420
# HELP portcullis_fw_bouncer_dropped_packets_total Packets dropped by the backend, by reason (scenario or origin).
# TYPE portcullis_fw_bouncer_dropped_packets_total counter
portcullis_fw_bouncer_dropped_packets_total{reason="crowdsecurity/ssh-bf"} 7
# HELP portcullis_fw_bouncer_source_dropped_packets_total Packets dropped by the backend, by the origin and scenario of the ban (backends that count per ban source).
# TYPE portcullis_fw_bouncer_source_dropped_packets_total counter
portcullis_fw_bouncer_source_dropped_packets_total{origin="engine",scenario="crowdsecurity/ssh-bf"} 7
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"portcullis_fw_bouncer_active_bans", "portcullis_fw_bouncer_dropped_bytes_total",
		"portcullis_fw_bouncer_dropped_packets_total", "portcullis_fw_bouncer_source_dropped_packets_total")
	if err != nil {
		t.Fatal(err)
	}
}

func TestActiveByOrigin(t *testing.T) {
	clk := &clock{t: t0}
	r := startRunner(t, testConfig(clk), newRecorder(), nil)
	cli := ban("192.0.2.2")
	cli.Origin = "cli"
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.1"), ban("192.0.2.3"), cli})); err != nil {
		t.Fatal(err)
	}
	if got := r.ActiveByOrigin(); got["engine"] != 2 || got["cli"] != 1 || len(got) != 2 {
		t.Errorf("ActiveByOrigin() = %v, want engine 2, cli 1", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"max batch": func(c *Config) { c.MaxBatch = 0 },
		"retry":     func(c *Config) { c.RetryMax = c.RetryMin / 2 },
		"coalesce":  func(c *Config) { c.Coalesce = -1 },
		"subsystem": func(c *Config) { c.MetricsSubsystem = "" },
		"sweep":     func(c *Config) { c.SweepInterval = -time.Second },
	} {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted an invalid config", name)
		}
	}
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig invalid: %v", err)
	}
}

func TestManyChangesAreSplitIntoBatches(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	cfg := testConfig(clk)
	cfg.MaxBatch = 100
	r := startRunner(t, cfg, f, nil)
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{})); err != nil {
		t.Fatal(err)
	}
	var ds []decisionfeed.Decision
	for i := range 250 {
		ds = append(ds, ban(fmt.Sprintf("192.0.2.%d", i+1)))
	}
	_ = r.Changes(context.Background(), ds)
	calls := f.waitCalls(t, 4)
	settle(r)
	for i, n := range []int{100, 100, 50} {
		if c := calls[i+1]; c.op != "apply" || len(c.adds) != n {
			t.Fatalf("batch %d: %s with %d adds, want %d", i, c.op, len(c.adds), n)
		}
	}
	if got := len(r.Active()); got != 250 {
		t.Fatalf("active = %d, want 250", got)
	}
}

// TestRefusedBanEnforcedWhenProtectionEnds: a ban refused because it
// covered a host address is enforced once the host no longer has it, and
// withdrawn again when the address comes back.
func TestRefusedBanEnforcedWhenProtectionEnds(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	cfg := testConfig(clk)
	var mu sync.Mutex
	hosts := []netip.Addr{netip.MustParseAddr("192.0.2.50")}
	cfg.Policy = testPolicy(func() ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(hosts), nil
	})
	reg := prometheus.NewRegistry()
	r := startRunner(t, cfg, f, reg)
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.0/24"), ban("192.0.2.99")})); err != nil {
		t.Fatal(err)
	}
	if _, state := f.snapshot(); !slices.Equal(state, []string{"192.0.2.99/32"}) {
		t.Fatalf("state = %v, want the range refused", state)
	}
	setHosts := func(as ...string) {
		mu.Lock()
		hosts = hosts[:0]
		for _, a := range as {
			hosts = append(hosts, netip.MustParseAddr(a))
		}
		mu.Unlock()
		if err := r.refreshPolicy(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	setHosts("203.0.113.1")
	f.waitCalls(t, 2)
	if _, state := f.snapshot(); !slices.Equal(state, []string{"192.0.2.0/24", "192.0.2.99/32"}) {
		t.Fatalf("state = %v, want the range enforced once unprotected", state)
	}
	setHosts("192.0.2.50")
	f.waitCalls(t, 3)
	if _, state := f.snapshot(); !slices.Equal(state, []string{"192.0.2.99/32"}) {
		t.Fatalf("state = %v, want the range withdrawn again", state)
	}
	if got := testutil.ToFloat64(r.m.refused.WithLabelValues(policy.RefusedHostAddress)); got != 2 {
		t.Fatalf("refused{host_address} = %v, want 2", got)
	}
}

// TestFiltersDecideWhatReachesTheBackend: origin and type filters, and a
// filtered decision replacing what its key held.
func TestFiltersDecideWhatReachesTheBackend(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	cfg := testConfig(clk)
	pc := policy.DefaultConfig()
	pc.Origins = []string{"engine", "cli"}
	pc.Types = []decisionfeed.Type{decisionfeed.TypeBan, decisionfeed.TypeCaptcha}
	pol, err := policy.New(context.Background(), pc, policy.Options{
		Supported: []decisionfeed.Type{decisionfeed.TypeBan, decisionfeed.TypeCaptcha},
		HostAddrs: func() ([]netip.Addr, error) { return nil, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Policy = pol
	r := startRunner(t, cfg, f, nil)
	fromList := ban("192.0.2.3")
	fromList.Origin = "blocklist"
	captcha := dec(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "192.0.2.4", t0.Add(time.Hour))
	throttle := dec(decisionfeed.OpAdd, decisionfeed.TypeThrottle, "192.0.2.5", t0.Add(time.Hour))
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.1"), fromList, captcha, throttle})); err != nil {
		t.Fatal(err)
	}
	act := r.Active()
	if len(act) != 2 || act[0].Prefix.String() != "192.0.2.1/32" || act[1].Prefix.String() != "192.0.2.4/32" ||
		act[0].Remedy != enforcer.RemedyBan || act[1].Remedy != enforcer.RemedyCaptcha {
		t.Fatalf("active = %+v, want the engine ban and the captcha", act)
	}
	moved := ban("192.0.2.1")
	moved.Origin = "crowdsec"
	_ = r.Changes(context.Background(), []decisionfeed.Decision{moved})
	f.waitCalls(t, 2)
	settle(r)
	if got := r.Len(); got != 1 {
		t.Fatalf("active = %d, want the filtered decision to withdraw its key's ban", got)
	}
	for reason, want := range map[string]float64{"origin": 2, "type": 1} {
		if got := testutil.ToFloat64(r.m.ignored.WithLabelValues(reason)); got != want {
			t.Errorf("ignored{%s} = %v, want %v", reason, got, want)
		}
	}
}

// TestBrokerBanRefusedAsBrokersMove is the fleet lockout: a ban on the
// broker's address is refused, and when the broker name comes to resolve
// to an address already banned, that ban is withdrawn; the old address
// stays protected.
func TestBrokerBanRefusedAsBrokersMove(t *testing.T) {
	clk := &clock{t: t0}
	f := newRecorder()
	cfg := testConfig(clk)
	var mu sync.Mutex
	answer := "192.0.2.10"
	pc := policy.DefaultConfig()
	pc.ProtectHostAddresses = false
	pol, err := policy.New(context.Background(), pc, policy.Options{
		Dependencies: []string{"kafka-1.example:9092"},
		Resolve: func(context.Context, string) ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			return []netip.Addr{netip.MustParseAddr(answer)}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Policy = pol
	reg := prometheus.NewRegistry()
	r := startRunner(t, cfg, f, reg)
	if err := r.Snapshot(context.Background(), slices.Values([]decisionfeed.Decision{ban("192.0.2.10"), ban("192.0.2.11"), ban("192.0.2.12")})); err != nil {
		t.Fatal(err)
	}
	if _, state := f.snapshot(); !slices.Equal(state, []string{"192.0.2.11/32", "192.0.2.12/32"}) {
		t.Fatalf("state = %v, want the broker's address refused", state)
	}
	mu.Lock()
	answer = "192.0.2.11"
	mu.Unlock()
	if err := r.refreshPolicy(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.waitCalls(t, 2)
	if _, state := f.snapshot(); !slices.Equal(state, []string{"192.0.2.12/32"}) {
		t.Fatalf("state = %v, want the broker's new address withdrawn and the old one still refused", state)
	}
	// A later add for the old address is refused too.
	_ = r.Changes(context.Background(), []decisionfeed.Decision{ban("192.0.2.0/24")})
	time.Sleep(3 * cfg.Coalesce)
	settle(r)
	if _, state := f.snapshot(); !slices.Equal(state, []string{"192.0.2.12/32"}) {
		t.Fatalf("state = %v, want a range covering the brokers refused", state)
	}
	if got := testutil.ToFloat64(r.m.refused.WithLabelValues(policy.RefusedDependency)); got != 3 {
		t.Fatalf("refused{dependency} = %v, want 3", got)
	}
}

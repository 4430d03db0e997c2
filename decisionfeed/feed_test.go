package decisionfeed_test

import (
	"context"
	"fmt"
	"iter"
	"net/netip"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// recorder is a Handler that keeps the live set it is told about.
type recorder struct {
	mu        sync.Mutex
	snapshots int
	live      map[string]decisionfeed.Decision
	changes   []decisionfeed.Decision
	ready     chan struct{}
	notify    chan struct{}
}

func newRecorder() *recorder {
	return &recorder{live: map[string]decisionfeed.Decision{}, ready: make(chan struct{}), notify: make(chan struct{}, 1)}
}

func (r *recorder) Snapshot(_ context.Context, live iter.Seq[decisionfeed.Decision]) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snapshots++
	for d := range live {
		r.live[d.Target()] = d
	}
	close(r.ready)
	return nil
}

func (r *recorder) Changes(_ context.Context, cs []decisionfeed.Decision) error {
	r.mu.Lock()
	for _, d := range cs {
		r.changes = append(r.changes, d)
		if d.Op == decisionfeed.OpDelete {
			delete(r.live, d.Target())
		} else {
			r.live[d.Target()] = d
		}
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	return nil
}

// ids returns the ids of the live set, sorted by key.
func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.live))
	for k := range r.live {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + r.live[k].ID
	}
	return out
}

func idsOf(m map[string]decisionfeed.Decision) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + "=" + m[k].ID
	}
	return out
}

func ip(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), 32)
}

func TestSnapshotEqualsLiveSet(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})

	now := time.Now()
	want := map[string]decisionfeed.Decision{}
	var all []decisionfeed.Decision
	add := func(d decisionfeed.Decision) {
		all = append(all, d)
		if d.Op == decisionfeed.OpDelete {
			delete(want, d.Target())
		} else {
			want[d.Target()] = d
		}
	}
	for i := range 300 {
		add(decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), 4*time.Hour, "test", now))
	}
	for i := 0; i < 300; i += 3 {
		add(decisionfeed.NewDecision(decisionfeed.OpDelete, decisionfeed.TypeBan, ip(i), 0, "test", now))
	}
	for i := 0; i < 300; i += 9 { // re-add some deleted keys
		add(decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), time.Hour, "test", now))
	}
	// Expiring: published live, expired by the time the subscriber reads them.
	var expiring []decisionfeed.Decision
	for i := 1000; i < 1010; i++ {
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), 300*time.Millisecond, "test", now)
		all = append(all, d)
		expiring = append(expiring, d)
	}
	rng := netip.MustParsePrefix("2001:db8:1::/48")
	add(decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, rng, time.Hour, "test", now))
	if err := pub.Publish(ctx, all...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	_ = expiring

	for run := range 2 { // a restarted subscriber rebuilds the same state
		sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: fmt.Sprintf("g-%s-%d", topic, run)})
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecorder()
		sctx, scancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- sub.Run(sctx, rec) }()
		select {
		case <-rec.ready:
		case <-ctx.Done():
			t.Fatal("no snapshot")
		}
		got, exp := rec.ids(), idsOf(want)
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Fatalf("run %d: snapshot has %d keys, want %d\ngot  %v\nwant %v", run, len(got), len(exp), got, exp)
		}
		waitFor(t, 10*time.Second, "ready", func() bool { return sub.Stats().Ready })
		if st := sub.Stats(); st.Live != len(want) || !st.Ready || st.Messages != uint64(len(all)) || st.Invalid != 0 {
			t.Fatalf("run %d: stats %+v, want live %d messages %d", run, st, len(want), len(all))
		}
		scancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestNoGoroutineLeft runs a publisher and a subscriber through a snapshot
// and a change, stops both, and checks that every goroutine they started
// is gone.
func TestNoGoroutineLeft(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 3)
	time.Sleep(100 * time.Millisecond)
	before := runtime.NumGoroutine()

	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "g-" + topic, CommitInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx, rec) }()
	<-rec.ready
	if err := pub.Publish(ctx, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(1), time.Hour, "test", time.Now())); err != nil {
		t.Fatal(err)
	}
	<-rec.notify
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCollector(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 1)
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	ctx := context.Background()
	for i := range 3 {
		if err := pub.Publish(ctx, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), time.Hour, "test", time.Now())); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(sub); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	run(t, sub, rec)
	<-rec.ready
	waitFor(t, 10*time.Second, "ready", func() bool { return sub.Stats().Ready })
	want := `
# HELP portcullis_feed_invalid_total Messages of the decisions topic that failed validation and went to the dead-letter topic.
# TYPE portcullis_feed_invalid_total counter
portcullis_feed_invalid_total 0
# HELP portcullis_feed_lag Messages on the decisions topic not yet handed to the enforcer (sum over partitions).
# TYPE portcullis_feed_lag gauge
portcullis_feed_lag 0
# HELP portcullis_feed_live Addresses where a decision stands (each enforced as the union of its decisions).
# TYPE portcullis_feed_live gauge
portcullis_feed_live 3
# HELP portcullis_feed_messages_total Messages read from the decisions topic, valid or not.
# TYPE portcullis_feed_messages_total counter
portcullis_feed_messages_total 3
# HELP portcullis_feed_ready 1 once the live set was rebuilt and handed to the enforcer.
# TYPE portcullis_feed_ready gauge
portcullis_feed_ready 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"portcullis_feed_invalid_total", "portcullis_feed_lag", "portcullis_feed_live", "portcullis_feed_messages_total", "portcullis_feed_ready"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 10 {
		t.Fatalf("%d metrics, want 10: %v", n, err)
	}
}

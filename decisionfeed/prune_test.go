package decisionfeed_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// pruneFixture publishes, on a fresh compacted topic of 3 partitions, 20
// decisions that last a day, 30 that last an hour and 10 that are added
// and deleted, and returns the keys of the 20.
func pruneFixture(t *testing.T, brokers []string, topic string, now time.Time) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	var ds []decisionfeed.Decision
	var live []string
	for i := range 20 {
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), 24*time.Hour, "cli", now)
		live = append(live, d.Key())
		ds = append(ds, d)
	}
	for i := 100; i < 130; i++ {
		ds = append(ds, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), time.Hour, "engine", now))
	}
	for i := 200; i < 210; i++ {
		ds = append(ds, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), 24*time.Hour, "cli", now))
	}
	if err := pub.Publish(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	var dels []decisionfeed.Decision
	for i := 200; i < 210; i++ {
		dels = append(dels, decisionfeed.NewDecision(decisionfeed.OpDelete, decisionfeed.TypeBan, ip(i), 0, "cli", now))
	}
	if err := pub.Publish(ctx, dels...); err != nil {
		t.Fatal(err)
	}
	sort.Strings(live)
	return live
}

func newPruner(t *testing.T, cfg decisionfeed.PrunerConfig) *decisionfeed.Pruner {
	t.Helper()
	pr, err := decisionfeed.NewPruner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pr.Close)
	return pr
}

// liveKeys rebuilds the live set at now with a fresh subscriber and
// returns its keys, sorted, and the number of records the rebuild read.
func liveKeys(t *testing.T, brokers []string, topic string, now time.Time) ([]string, uint64) {
	t.Helper()
	sub, rec, stop := subscribe(t, decisionfeed.SubscriberConfig{
		Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-", Now: func() time.Time { return now },
	})
	defer stop()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	keys := make([]string, 0, len(rec.live))
	for k := range rec.live {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, sub.Stats().Messages
}

func TestPruneOnceTombstonesDeadKeys(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	now := time.Now()
	live := pruneFixture(t, brokers, topic, now)
	later := now.Add(2 * time.Hour)
	clock := func() time.Time { return later }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dry := newPruner(t, decisionfeed.PrunerConfig{Brokers: brokers, Topic: topic, Now: clock, DryRun: true})
	st, err := dry.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := decisionfeed.PruneStats{Records: 70, Live: 20, Expired: 30, Deleted: 10}
	if st != want {
		t.Fatalf("dry run: %+v, want %+v", st, want)
	}
	if st, err = dry.Once(ctx); err != nil || st != want {
		t.Fatalf("dry run wrote something: second dry run %+v (err %v), want %+v", st, err, want)
	}

	pr := newPruner(t, decisionfeed.PrunerConfig{Brokers: brokers, Topic: topic, Now: clock})
	st, err = pr.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The tombstones landed right after what was read: not read back.
	if want := (decisionfeed.PruneStats{Records: 70, Live: 20, Expired: 30, Deleted: 10}); st != want {
		t.Fatalf("prune: %+v, want %+v", st, want)
	}
	st, err = pr.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A fresh pass reads the 70 records and the 40 tombstones.
	if want := (decisionfeed.PruneStats{Records: 110, Live: 20}); st != want {
		t.Fatalf("second prune: %+v, want %+v (nothing left to tombstone)", st, want)
	}
	got, _ := liveKeys(t, brokers, topic, later)
	if fmt.Sprint(got) != fmt.Sprint(live) {
		t.Fatalf("live set after prune:\n got %v\nwant %v", got, live)
	}
	// Before expiry the pruned keys are gone too: the engine's hour-long
	// bans expired, so the tombstones, not the clock, now say so.
	got, _ = liveKeys(t, brokers, topic, now)
	if fmt.Sprint(got) != fmt.Sprint(live) {
		t.Fatalf("live set at publication time after prune:\n got %v\nwant %v", got, live)
	}
}

// TestPruneRepublishesRaced publishes a new decision for a key between the
// pruner's read and its tombstone (from the pruner's clock, which it reads
// exactly there) and checks that the decision survives.
func TestPruneRepublishesRaced(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	now := time.Now()
	old := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(1), time.Hour, "engine", now.Add(-2*time.Hour))
	if err := pub.Publish(ctx, old); err != nil {
		t.Fatal(err)
	}
	fresh := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(1), 4*time.Hour, "engine", now)
	var once sync.Once
	clock := func() time.Time {
		once.Do(func() {
			if err := pub.Publish(ctx, fresh); err != nil {
				t.Error(err)
			}
		})
		return now
	}
	pr := newPruner(t, decisionfeed.PrunerConfig{Brokers: brokers, Topic: topic, Now: clock})
	st, err := pr.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expired != 1 || st.Republished != 1 {
		t.Fatalf("prune: %+v, want 1 expired and 1 republished", st)
	}
	sub, rec, stop := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-"})
	defer stop()
	_ = sub
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if d, ok := rec.live[fresh.Key()]; !ok || d.ID != fresh.ID {
		t.Fatalf("the decision that raced with the tombstone is lost: live %v", rec.live)
	}
}

// TestPruneThenCompactReadsLiveOnly runs on the embedded broker, whose
// cleaner compacts: after prune and compaction a rebuild reads the live
// records and little else.
func TestPruneThenCompactReadsLiveOnly(t *testing.T) {
	cfg := broker.CompactConfigs()
	cfg["delete.retention.ms"] = "0"
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", CleanerInterval: time.Hour, Topics: []broker.Topic{
		{Name: "decisions", Partitions: 3, Configs: cfg},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	brokers := []string{b.Addr()}
	now := time.Now()
	live := pruneFixture(t, brokers, "decisions", now)
	later := now.Add(2 * time.Hour)
	_, before := liveKeys(t, brokers, "decisions", later)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pr := newPruner(t, decisionfeed.PrunerConfig{Brokers: brokers, Topic: "decisions", Now: func() time.Time { return later }})
	if _, err := pr.Once(ctx); err != nil {
		t.Fatal(err)
	}
	// The broker never compacts the last batch of a partition (the active
	// segment); the decisions that follow in a running fleet close it.
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: "decisions"})
	var next []decisionfeed.Decision
	for i := 300; i < 330; i++ {
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), 24*time.Hour, "cli", later)
		next = append(next, d)
		live = append(live, d.Key())
	}
	if err := pub.Publish(ctx, next...); err != nil {
		t.Fatal(err)
	}
	sort.Strings(live)
	b.Compact()
	got, after := liveKeys(t, brokers, "decisions", later)
	if fmt.Sprint(got) != fmt.Sprint(live) {
		t.Fatalf("live set after prune and compaction:\n got %v\nwant %v", got, live)
	}
	if before != 70 || after > uint64(len(live)) {
		t.Fatalf("rebuild read %d records before prune and %d after, want 70 and at most the %d live", before, after, len(live))
	}
}

// TestPruneGroupSharesPartitions runs two pruning loops in one group: each
// partition is pruned by one of them, and together they prune every dead key.
func TestPruneGroupSharesPartitions(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	now := time.Now()
	live := pruneFixture(t, brokers, topic, now)
	later := now.Add(2 * time.Hour)
	group := "prune-" + topic

	type pass struct {
		inst, part int
		at         time.Time
	}
	var (
		mu     sync.Mutex
		passes []pass
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for inst := range 2 {
		pr := newPruner(t, decisionfeed.PrunerConfig{Brokers: brokers, Topic: topic, Now: func() time.Time { return later }})
		wg.Go(func() {
			err := pr.RunGroup(ctx, decisionfeed.PruneLoopConfig{
				Group: group, Interval: 200 * time.Millisecond, SessionTimeout: 6 * time.Second,
				OnPass: func(p int, _ decisionfeed.PruneStats, err error) {
					if err != nil {
						t.Logf("instance %d partition %d: %v", inst, p, err)
					}
					mu.Lock()
					passes = append(passes, pass{inst, p, time.Now()})
					mu.Unlock()
				},
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	// Wait until both instances have pruned, then look at a window after
	// the group has settled.
	waitFor(t, 60*time.Second, "both instances pruning", func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := map[int]bool{}
		for _, p := range passes {
			seen[p.inst] = true
		}
		return len(seen) == 2
	})
	time.Sleep(time.Second)
	from := time.Now()
	time.Sleep(2 * time.Second)
	mu.Lock()
	owner := map[int]map[int]bool{}
	for _, p := range passes {
		if p.at.Before(from) {
			continue
		}
		if owner[p.part] == nil {
			owner[p.part] = map[int]bool{}
		}
		owner[p.part][p.inst] = true
	}
	mu.Unlock()
	if len(owner) != 3 {
		t.Fatalf("partitions pruned in the window: %v, want all 3", owner)
	}
	for p, insts := range owner {
		if len(insts) != 1 {
			t.Errorf("partition %d pruned by instances %v in one window, want one", p, insts)
		}
	}
	got, _ := liveKeys(t, brokers, topic, now)
	if fmt.Sprint(got) != fmt.Sprint(live) {
		t.Fatalf("live set after group pruning:\n got %v\nwant %v", got, live)
	}
}

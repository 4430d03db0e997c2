package realkafka

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/segmentio/kafka-go"
)

// failoverDecisions is how many decisions the failover test publishes.
const failoverDecisions = 10000

// follower is a bouncer's view of the feed: the live set a Subscriber
// hands it, and when each decision first arrived.
type follower struct {
	mu        sync.Mutex
	live      map[string]bool
	snapshots int
	// shrank is set when a key the follower held went away: a bouncer
	// must keep what it enforces through a broker failure.
	shrank  bool
	arrived map[string]time.Time
}

func newFollower() *follower {
	return &follower{live: map[string]bool{}, arrived: map[string]time.Time{}}
}

func (f *follower) Snapshot(_ context.Context, seq iter.Seq[decisionfeed.Decision]) error {
	live := slices.Collect(seq)
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshots++
	if len(f.live) > 0 && len(live) < len(f.live) {
		f.shrank = true
	}
	f.live = make(map[string]bool, len(live))
	for i := range live {
		f.note(&live[i], now)
	}
	return nil
}

func (f *follower) Changes(_ context.Context, changes []decisionfeed.Decision) error {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range changes {
		d := &changes[i]
		if d.Op == decisionfeed.OpDelete {
			if f.live[d.Key()] {
				f.shrank = true
			}
			delete(f.live, d.Key())
			continue
		}
		f.note(d, now)
	}
	return nil
}

func (f *follower) note(d *decisionfeed.Decision, now time.Time) {
	k := d.Key()
	f.live[k] = true
	if _, ok := f.arrived[k]; !ok {
		f.arrived[k] = now
	}
}

// missing returns how many of keys the follower does not hold.
func (f *follower) missing(keys []string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, k := range keys {
		if !f.live[k] {
			n++
		}
	}
	return n
}

// firstArrival returns the earliest arrival among keys.
func (f *follower) firstArrival(keys []string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	var first time.Time
	for _, k := range keys {
		if at, ok := f.arrived[k]; ok && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// failoverDecision is decision i of the failover run: a 24 h ban of a
// distinct address in 10.0.0.0/8.
func failoverDecision(i int, now time.Time) decisionfeed.Decision {
	a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), 24*time.Hour, "engine", now)
}

// TestDecisionsSurviveLeaderKill publishes 10,000 decisions (acks=all) to
// a decisions topic of the three-broker cluster whose three partitions
// are all led by one broker, kills that broker with SIGKILL a third of the
// way through while two bouncers (Subscribers) follow, and checks that
// every acknowledged decision reaches both bouncers, that they lost
// nothing they held, that a bouncer started afterwards rebuilds all of
// them, and that the killed broker, started again, rejoins every ISR.
func TestDecisionsSurviveLeaderKill(t *testing.T) {
	// The cluster is this test's alone: it runs beside the secure node's.
	t.Parallel()
	env := need(t, envClusterBrokers, envClusterDir)
	brokers, dir := list(env[0]), env[1]
	if len(brokers) != 3 {
		t.Fatalf("%s: want three brokers, got %q", envClusterBrokers, env[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const leader = 1
	topic := clusterTopic(ctx, t, brokers, leader)

	followers := []*follower{newFollower(), newFollower()}
	runCtx, stopFollowers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopFollowers(); wg.Wait() }()
	subs := make([]*decisionfeed.Subscriber, len(followers))
	for i, f := range followers {
		subs[i] = subscriber(t, brokers, topic)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := subs[i].Run(runCtx, f); err != nil {
				t.Errorf("subscriber %d: %v", i, err)
			}
		}()
	}
	waitReady(ctx, t, subs...)

	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := pub.Close(); err != nil {
			t.Errorf("close publisher: %v", err)
		}
	}()

	const batch = 20
	keys := make([]string, 0, failoverDecisions)
	var (
		killedAt      time.Time
		ackedAt       time.Time // the first acknowledgement after the kill
		afterKill     []string  // the keys first sent after the kill
		failedPublish int
	)
	for start := 0; start < failoverDecisions; start += batch {
		if killedAt.IsZero() && start >= failoverDecisions/3 {
			killNode(t, dir, leader)
			killedAt = time.Now()
		}
		ds := make([]decisionfeed.Decision, 0, batch)
		now := time.Now()
		for i := start; i < start+batch && i < failoverDecisions; i++ {
			ds = append(ds, failoverDecision(i, now))
		}
		// A producer whose publish fails sends again, as the engine and
		// the CLI do; only an acknowledged decision counts as published.
		for {
			err := pub.Publish(ctx, ds...)
			if err == nil {
				break
			}
			failedPublish++
			if ctx.Err() != nil {
				t.Fatalf("publish decisions %d-%d: %v", start, start+len(ds)-1, err)
			}
			t.Logf("publish decisions %d-%d failed, sending again: %v", start, start+len(ds)-1, err)
		}
		if !killedAt.IsZero() && ackedAt.IsZero() {
			ackedAt = time.Now()
		}
		for i := range ds {
			k := ds[i].Key()
			keys = append(keys, k)
			if !killedAt.IsZero() {
				afterKill = append(afterKill, k)
			}
		}
	}
	published := time.Now()
	t.Logf("published %d decisions in batches of %d; %d publish calls failed during the failover and were sent again; first acknowledgement %v after the kill",
		len(keys), batch, failedPublish, ackedAt.Sub(killedAt).Round(time.Millisecond))

	// Every bouncer gets every acknowledged decision.
	for i, f := range followers {
		for f.missing(keys) > 0 {
			if ctx.Err() != nil {
				t.Fatalf("bouncer %d misses %d of %d published decisions", i, f.missing(keys), len(keys))
			}
			time.Sleep(50 * time.Millisecond)
		}
		f.mu.Lock()
		snaps, shrank := f.snapshots, f.shrank
		f.mu.Unlock()
		if snaps != 1 || shrank {
			t.Errorf("bouncer %d: %d snapshots, lost keys it held: %v; want one snapshot and nothing lost", i, snaps, shrank)
		}
		first := f.firstArrival(afterKill)
		t.Logf("bouncer %d: all %d decisions %v after the last acknowledgement; failover gap (kill to first decision sent after it delivered) %v; fetch errors %d",
			i, len(keys), time.Since(published).Round(time.Millisecond), first.Sub(killedAt).Round(time.Millisecond), subs[i].Stats().FetchErrors)
	}
	stopFollowers()
	wg.Wait()

	// The killed broker comes back and catches up, and a bouncer that
	// starts now rebuilds every decision from the surviving replicas.
	restartNode(ctx, t, dir, brokers[0], leader)
	waitFullISR(ctx, t, brokers, topic, 3)
	late := newFollower()
	sub := subscriber(t, brokers, topic)
	lateCtx, stopLate := context.WithCancel(ctx)
	lateDone := make(chan error, 1)
	go func() { lateDone <- sub.Run(lateCtx, late) }()
	waitReady(ctx, t, sub)
	stopLate()
	if err := <-lateDone; err != nil {
		t.Errorf("late subscriber: %v", err)
	}
	if n := late.missing(keys); n > 0 {
		t.Errorf("a bouncer started after the failover rebuilt a live set missing %d of %d decisions", n, len(keys))
	}
}

// subscriber returns a bouncer's Subscriber on the cluster with the
// bouncers' defaults (backoff included), committing no offsets: the test's
// groups would outlive it.
func subscriber(t *testing.T, brokers []string, topic string) *decisionfeed.Subscriber {
	t.Helper()
	s, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers: brokers, Topic: topic, Group: "-",
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitReady waits until every subscriber handed over its snapshot.
func waitReady(ctx context.Context, t *testing.T, subs ...*decisionfeed.Subscriber) {
	t.Helper()
	for i, s := range subs {
		for !s.Stats().Ready {
			if ctx.Err() != nil {
				t.Fatalf("subscriber %d not ready: %+v", i, s.Stats())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// clusterTopic creates a decisions topic shaped as in production (three
// partitions, compacted) with three replicas each, every partition's
// preferred leader being node leader, and its dead-letter topic; it waits
// until leader leads all three partitions.
func clusterTopic(ctx context.Context, t *testing.T, brokers []string, leader int) string {
	t.Helper()
	name := fmt.Sprintf("crowdsec-decisions-failover-%d", time.Now().UnixNano())
	var others []int
	for id := 1; id <= 3; id++ {
		if id != leader {
			others = append(others, id)
		}
	}
	var assign []kafka.ReplicaAssignment
	for p := range 3 {
		// Followers alternate so that each follower takes over some partitions.
		f := []int{others[p%2], others[(p+1)%2]}
		assign = append(assign, kafka.ReplicaAssignment{Partition: p, Replicas: append([]int{leader}, f...)})
	}
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{
			Topic: name, NumPartitions: -1, ReplicationFactor: -1, ReplicaAssignments: assign,
			ConfigEntries: []kafka.ConfigEntry{
				{ConfigName: "cleanup.policy", ConfigValue: "compact"},
				{ConfigName: "min.insync.replicas", ConfigValue: "2"},
			},
		},
		{Topic: decisionfeed.DLQTopic(name), NumPartitions: 1, ReplicationFactor: 3},
	}})
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	for topic, err := range res.Errors {
		if err != nil {
			t.Fatalf("create topic %s: %v", topic, err)
		}
	}
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		if err == nil && len(md.Topics) == 1 && len(md.Topics[0].Partitions) == 3 {
			led := 0
			for _, p := range md.Topics[0].Partitions {
				if p.Leader.ID == leader && len(p.Isr) == 3 {
					led++
				}
			}
			if led == 3 {
				return name
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("topic %s: node %d does not lead every partition with a full ISR: %v", name, leader, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nodePid returns the pid of cluster node id from kafka.sh's pid file,
// checking that the process is that node's broker.
func nodePid(t *testing.T, dir string, id int) int {
	t.Helper()
	nodeDir := filepath.Join(dir, "node-"+strconv.Itoa(id))
	b, err := os.ReadFile(filepath.Join(nodeDir, "kafka.pid"))
	if err != nil {
		t.Fatalf("node %d pid: %v", id, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("node %d pid file: %v", id, err)
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || !strings.Contains(string(cmdline), filepath.Join(nodeDir, "server.properties")) {
		t.Fatalf("pid %d is not node %d's broker (%v)", pid, id, err)
	}
	return pid
}

// killNode kills cluster node id with SIGKILL and waits until it is gone.
func killNode(t *testing.T, dir string, id int) {
	t.Helper()
	pid := nodePid(t, dir, id)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 node %d (pid %d): %v", id, pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		// Gone, or a zombie its parent has not reaped yet.
		if err != nil || strings.Contains(string(stat), ") Z ") {
			t.Logf("killed node %d (pid %d) with SIGKILL", id, pid)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d (pid %d) still alive 10 s after SIGKILL", id, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// restartNode starts cluster node id again with kafka.sh.
func restartNode(ctx context.Context, t *testing.T, dir, firstBroker string, id int) {
	t.Helper()
	_, port, ok := strings.Cut(firstBroker, ":")
	if !ok {
		t.Fatalf("broker %q: no port", firstBroker)
	}
	cmd := exec.CommandContext(ctx, "../kafka/kafka.sh", "start-node", port, strconv.Itoa(id))
	cmd.Env = append(os.Environ(), "PORTCULLIS_KAFKA_STATE="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("restart node %d: %v\n%s", id, err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// waitFullISR waits until every partition of topic has n in-sync replicas.
func waitFullISR(ctx context.Context, t *testing.T, brokers []string, topic string, n int) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	start := time.Now()
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(md.Topics) == 1 {
			full := 0
			for _, p := range md.Topics[0].Partitions {
				if len(p.Isr) == n {
					full++
				}
			}
			if full == len(md.Topics[0].Partitions) && full > 0 {
				t.Logf("every partition back to %d in-sync replicas %v after the restart", n, time.Since(start).Round(time.Millisecond))
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("partitions of %s not back to %d in-sync replicas: %v", topic, n, errors.Join(err, ctx.Err()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

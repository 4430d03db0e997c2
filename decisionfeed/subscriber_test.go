package decisionfeed_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/internal/syncbuf"
	"github.com/segmentio/kafka-go"
)

// run starts sub.Run(h) and returns a stop function that ends it and
// fails the test if Run returned an error.
func run(t testing.TB, sub *decisionfeed.Subscriber, h decisionfeed.Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return 10s after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// subscribe creates a subscriber with cfg, runs it into a fresh recorder
// until the test ends (or stop), and waits for its snapshot.
func subscribe(t *testing.T, cfg decisionfeed.SubscriberConfig) (sub *decisionfeed.Subscriber, rec *recorder, stop func()) {
	t.Helper()
	sub, err := decisionfeed.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec = newRecorder()
	stop = run(t, sub, rec)
	waitReady(t, rec)
	return sub, rec, stop
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitReady(t *testing.T, r *recorder) {
	t.Helper()
	select {
	case <-r.ready:
	case <-time.After(30 * time.Second):
		t.Fatal("no snapshot after 30s")
	}
}

// TestBrokerKilledMidStream kills the broker process with SIGKILL while
// decisions stream, starts it again on the same port and data directory,
// and checks that the subscriber reconnected, lost nothing and saw every
// key's decisions in publish order.
func TestBrokerKilledMidStream(t *testing.T) {
	if feedtest.External() {
		t.Skip("needs a broker this test can kill and restart; runs on the embedded broker")
	}
	bp := feedtest.StartBrokerProcess(t)
	brokers := bp.Brokers()
	sub, rec, _ := subscribe(t, decisionfeed.SubscriberConfig{
		Brokers: brokers, Group: "-", BackoffMin: 20 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		MaxWait: 100 * time.Millisecond,
	})

	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, MaxAttempts: 3})
	const keys, steps = 20, 30
	var (
		published = map[string][]string{} // key -> ids in publish order
		want      = map[string]decisionfeed.Decision{}
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for step := range steps {
		if step == steps/2 {
			bp.Kill()
			time.Sleep(300 * time.Millisecond)
			bp.Start()
		}
		var batch []decisionfeed.Decision
		for k := range keys {
			op := decisionfeed.OpAdd
			if (step+k)%3 == 2 {
				op = decisionfeed.OpDelete
			}
			d := decisionfeed.NewDecision(op, decisionfeed.TypeBan, ip(k), time.Hour, "test", time.Now())
			d.Reason = "step " + strconv.Itoa(step)
			batch = append(batch, d)
		}
		// A publish that fails may still have been written; publishing the
		// same decisions again keeps the per-key order.
		for attempt := 0; ; attempt++ {
			err := pub.Publish(ctx, batch...)
			if err == nil {
				break
			}
			if ctx.Err() != nil || attempt > 100 {
				t.Fatalf("publish step %d: %v", step, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, d := range batch {
			_, standing := want[d.Target()]
			if d.Op == decisionfeed.OpDelete && !standing {
				continue // withdraws nothing: the handler is not told
			}
			published[d.Target()] = append(published[d.Target()], d.ID)
			if d.Op == decisionfeed.OpDelete {
				delete(want, d.Target())
			} else {
				want[d.Target()] = d
			}
		}
	}
	last := map[string]string{}
	for k, ids := range published {
		last[k] = ids[len(ids)-1]
	}
	waitFor(t, 60*time.Second, "the last decision of every key", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		seen := map[string]string{}
		for _, d := range rec.changes {
			seen[d.Target()] = d.ID
		}
		return fmt.Sprint(seen) == fmt.Sprint(last)
	})
	rec.mu.Lock()
	got := map[string][]string{}
	for _, d := range rec.changes {
		ids := got[d.Target()]
		if len(ids) > 0 && ids[len(ids)-1] == d.ID {
			continue // a decision published twice around the crash
		}
		got[d.Target()] = append(ids, d.ID)
	}
	rec.mu.Unlock()
	for k, ids := range published {
		if fmt.Sprint(got[k]) != fmt.Sprint(ids) {
			t.Fatalf("key %s: handler saw\n%v\npublished\n%v", k, got[k], ids)
		}
	}
	if g, w := rec.ids(), idsOf(want); fmt.Sprint(g) != fmt.Sprint(w) {
		t.Fatalf("live set after the restart\n%v\nwant\n%v", g, w)
	}
	if st := sub.Stats(); st.FetchErrors == 0 || st.Live != len(want) || st.Lag != 0 {
		t.Fatalf("stats %+v: want fetch errors from the crash, live %d, lag 0", st, len(want))
	}
}

// rawWriter writes raw messages, valid or not, keyed like the publisher.
// It has a transport of its own: kafka-go's default one caches metadata
// across tests and would not know a topic created since. It is closed
// when the test ends.
func rawWriter(t *testing.T, brokers []string, topic string) *kafka.Writer {
	tr := &kafka.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	w := &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, Transport: tr,
	}
	t.Cleanup(func() { feedtest.Close(t, w) })
	return w
}

func encode(t *testing.T, d decisionfeed.Decision) []byte {
	t.Helper()
	b, err := decisionfeed.Encode(&d, decisionfeed.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dlqMessage is a message read back from the dead-letter topic.
type dlqMessage struct {
	key, reason, partition, offset, truncated string
	size                                      int
}

func readDLQ(t *testing.T, brokers []string, topic string, n int) []dlqMessage {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer feedtest.Close(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []dlqMessage
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: have %d of %d messages: %v", topic, len(out), n, err)
		}
		dm := dlqMessage{key: string(m.Key), size: len(m.Value)}
		for _, h := range m.Headers {
			switch h.Key {
			case decisionfeed.HeaderReason:
				dm.reason = string(h.Value)
			case decisionfeed.HeaderSourcePartition:
				dm.partition = string(h.Value)
			case decisionfeed.HeaderSourceOffset:
				dm.offset = string(h.Value)
			case decisionfeed.HeaderTruncated:
				dm.truncated = string(h.Value)
			}
		}
		out = append(out, dm)
	}
	return out
}

// TestMalformedGoToDLQ writes malformed messages between valid ones,
// before and after the snapshot, and checks that the handler never sees
// them, that they are counted, and that each lands in the DLQ with its
// reason and source offset.
func TestMalformedGoToDLQ(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 1) // one partition: offsets are predictable
	w := rawWriter(t, brokers, topic)
	ctx := context.Background()
	now := time.Now()
	good1 := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(1), time.Hour, "test", now)
	good2 := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(2), time.Hour, "test", now)
	valid := string(encode(t, good1))
	badIP := strings.Replace(valid, good1.Value, "203.0.1.300", 1)
	unknownOp := strings.Replace(valid, `"op":"add"`, `"op":"ban"`, 1)
	huge := strings.Replace(valid, `"origin":"test"`, `"origin":"test","reason":"`+strings.Repeat("x", 100_000)+`"`, 1)
	bad := []struct {
		key, value, reason string
		tombstone          bool
	}{
		{"ip:203.0.9.1", `{"v":1,`, "json: unexpected EOF", false},
		{"ip:203.0.9.2", `ban 203.0.9.2 4h`, "json: invalid character 'b'", false},
		{"ip:203.0.1.300", badIP, `value: "203.0.1.300" is not an IP address`, false},
		{good1.Key(), unknownOp, `op: unknown operation "ban"`, false},
		{good1.Key(), huge, "message too large", false},
		{good1.Key(), valid[:len(valid)/2], "json: unexpected EOF", false},
		{"ip:203.0.9.9", valid, `key: "ip:203.0.9.9" is not the key of the decision on ` + good1.Target(), false},
		{"ip:not-an-ip", "", `tombstone: key "ip:not-an-ip": value: "not-an-ip" is not an IP address`, true},
	}
	msgs := []kafka.Message{{Key: []byte(good1.Key()), Value: encode(t, good1)}}
	for _, b := range bad {
		m := kafka.Message{Key: []byte(b.key), Value: []byte(b.value)}
		if b.tombstone {
			m.Value = nil
		}
		msgs = append(msgs, m)
	}
	for _, m := range msgs { // one by one: the writer would split batches anyway
		if err := w.WriteMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	sub, rec, _ := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-"})
	if got := rec.ids(); fmt.Sprint(got) != fmt.Sprint([]string{good1.Target() + "=" + good1.ID}) {
		t.Fatalf("snapshot %v, want only the valid decision", got)
	}
	// After the snapshot: one more bad message, then a good one.
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(good2.Key()), Value: []byte(`{"v":2}`)},
		kafka.Message{Key: []byte(good2.Key()), Value: encode(t, good2)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the valid decision after the bad one", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.changes) > 0
	})
	rec.mu.Lock()
	if len(rec.changes) != 1 || rec.changes[0].ID != good2.ID {
		t.Fatalf("changes %+v, want only %s", rec.changes, good2.ID)
	}
	rec.mu.Unlock()
	if st := sub.Stats(); st.Invalid != uint64(len(bad)+1) || st.Messages != uint64(len(msgs)+2) || st.DLQErrors != 0 {
		t.Fatalf("stats %+v, want %d invalid of %d messages", st, len(bad)+1, len(msgs)+2)
	}
	got := readDLQ(t, brokers, decisionfeed.DLQTopic(topic), len(bad)+1)
	for i, b := range bad {
		g := got[i]
		if g.key != b.key || !strings.Contains(g.reason, b.reason) || g.partition != "0" || g.offset != strconv.Itoa(i+1) {
			t.Errorf("DLQ message %d: %+v, want key %q reason %q offset %d", i, g, b.key, b.reason, i+1)
		}
	}
	if g := got[4]; g.truncated != strconv.Itoa(len(huge)) || g.size != 64<<10 {
		t.Errorf("huge message in the DLQ: %d bytes, truncated header %q", g.size, g.truncated)
	}
	if g := got[len(bad)]; g.reason != "v: unsupported schema version 2" || g.offset != strconv.Itoa(len(msgs)) {
		t.Errorf("DLQ message after the snapshot: %+v", g)
	}
}

// TestTombstonesDelete checks that a Kafka tombstone (null value) removes
// its key from the snapshot and is streamed as a delete.
func TestTombstonesDelete(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	w := rawWriter(t, brokers, topic)
	ctx := context.Background()
	now := time.Now()
	a := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(1), time.Hour, "test", now)
	b := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("2001:db8::/48"), time.Hour, "test", now)
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte(a.Key()), Value: encode(t, a)},
		kafka.Message{Key: []byte(b.Key()), Value: encode(t, b)},
		kafka.Message{Key: []byte(a.Key())}, // tombstone
	); err != nil {
		t.Fatal(err)
	}
	_, rec, _ := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-"})
	if got, want := rec.ids(), []string{b.Target() + "=" + b.ID}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("snapshot %v, want %v", got, want)
	}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(b.Key())}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the streamed tombstone", func() bool { return len(rec.ids()) == 0 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.changes) != 1 || rec.changes[0].Op != decisionfeed.OpDelete || rec.changes[0].Target() != b.Target() {
		t.Fatalf("changes %+v, want one delete of %s", rec.changes, b.Target())
	}
	if err := rec.changes[0].Validate(decisionfeed.DefaultLimits()); err != nil {
		t.Fatalf("the delete made from a tombstone does not validate: %v", err)
	}
}

// TestLagAndCommits checks the lag the subscriber reports and that it
// commits its offsets under its own group.
func TestLagAndCommits(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	group := "portcullis-test-" + topic
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	ctx := context.Background()
	var ds []decisionfeed.Decision
	for i := range 30 {
		ds = append(ds, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), time.Hour, "test", time.Now()))
	}
	if err := pub.Publish(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	// A handler that holds the first change batch shows the lag.
	block := make(chan struct{})
	h := &blockingHandler{recorder: newRecorder(), block: block}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: group, CommitInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, sub, h)
	waitReady(t, h.recorder)
	// Ready turns true once Snapshot has returned, a moment after it was called.
	waitFor(t, 10*time.Second, "ready", func() bool { return sub.Stats().Ready })
	if st := sub.Stats(); st.Lag != 0 || st.Live != 30 || !st.Ready || st.Partitions != 3 {
		t.Fatalf("stats after the snapshot %+v", st)
	}
	if err := pub.Publish(ctx, ds[:10]...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "lag 10", func() bool { return sub.Stats().Lag == 10 })
	close(block)
	waitFor(t, 30*time.Second, "lag 0", func() bool { return sub.Stats().Lag == 0 })
	stop()

	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	res, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1, 2}}})
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			t.Fatal(p.Error)
		}
		committed += p.CommittedOffset
	}
	if committed != 40 {
		t.Fatalf("committed offsets sum to %d, want 40 (every message)", committed)
	}
}

type blockingHandler struct {
	*recorder
	block chan struct{}
}

func (b *blockingHandler) Changes(ctx context.Context, cs []decisionfeed.Decision) error {
	select {
	case <-b.block:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.recorder.Changes(ctx, cs)
}

// failingHandler fails its first calls, to show they are retried.
type failingHandler struct {
	*recorder
	mu            sync.Mutex
	snapFails     int
	changeFails   int
	snapCalls     int
	changeBatches int
}

// fails counts a call in *calls and reports whether it is one of the
// first fails calls, which fail.
func (f *failingHandler) fails(calls *int, fails int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	*calls++
	return *calls <= fails
}

func (f *failingHandler) Snapshot(ctx context.Context, live iter.Seq[decisionfeed.Decision]) error {
	if f.fails(&f.snapCalls, f.snapFails) {
		return errors.New("backend not ready")
	}
	return f.recorder.Snapshot(ctx, live)
}

func (f *failingHandler) Changes(ctx context.Context, cs []decisionfeed.Decision) error {
	if f.fails(&f.changeBatches, f.changeFails) {
		return errors.New("backend busy")
	}
	return f.recorder.Changes(ctx, cs)
}

func TestHandlerErrorsAreRetried(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 1)
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	ctx := context.Background()
	d1 := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(1), time.Hour, "test", time.Now())
	if err := pub.Publish(ctx, d1); err != nil {
		t.Fatal(err)
	}
	h := &failingHandler{recorder: newRecorder(), snapFails: 2, changeFails: 2}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-",
		BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, sub, h)
	waitReady(t, h.recorder)
	d2 := decisionfeed.NewDecision(decisionfeed.OpDelete, decisionfeed.TypeBan, ip(1), 0, "test", time.Now())
	if err := pub.Publish(ctx, d2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the delete", func() bool { return len(h.ids()) == 0 })
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.snapCalls != 3 || h.changeBatches != 3 {
		t.Fatalf("snapshot called %d times, changes %d times; want 3 and 3", h.snapCalls, h.changeBatches)
	}
}

// TestPartitionerMatchesKafkaPython checks that the publisher puts a key
// on the partition kafka-python's (and the Java client's) murmur2
// partitioner picks; the expected partitions were computed with
// kafka.partitioner.default.murmur2 of kafka-python 3.0.12.
func TestPartitionerMatchesKafkaPython(t *testing.T) {
	want := map[string]int{
		"ip:203.0.113.7@test":                 0,
		"ip:198.51.100.1@test":                0,
		"range:198.51.100.0/24@test":          1,
		"ip:2001:db8::7@test":                 2,
		"range:2001:db8:1::/48@test":          2,
		"ip:10.0.0.1@test":                    2,
		"ip:185.220.101.5@test":               2,
		"ip:203.0.113.7@lists:firehol_level1": 1,
		"ip:198.51.100.1":                     2, // legacy schema v1 keys
		"range:2001:db8:1::/48":               0,
	}
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 3)
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	for k := range want {
		target, origin, legacy := strings.Cut(k, "@")
		legacy = !legacy
		if legacy {
			origin = "test"
		}
		scope, value, _ := strings.Cut(target, ":")
		var p netip.Prefix
		if scope == "ip" {
			a := netip.MustParseAddr(value)
			p = netip.PrefixFrom(a, a.BitLen())
		} else {
			p = netip.MustParsePrefix(value)
		}
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, p, time.Hour, origin, time.Now())
		d.Legacy = legacy
		if err := pub.Publish(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	got := map[string]int{}
	for part := range 3 {
		res, err := c.Fetch(context.Background(), &kafka.FetchRequest{Topic: topic, Partition: part, Offset: kafka.FirstOffset, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		for {
			r, err := res.Records.ReadRecord()
			if err != nil {
				break
			}
			k, _ := io.ReadAll(r.Key)
			got[string(k)] = part
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("partitions %v\nwant %v", got, want)
	}
}

func TestRunMisuse(t *testing.T) {
	if _, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{}); err == nil {
		t.Fatal("a subscriber without brokers was created")
	}
	if _, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{}); err == nil {
		t.Fatal("a publisher without brokers was created")
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Run(context.Background(), nil); err == nil {
		t.Fatal("Run accepted a nil handler")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// Nothing listens at port 1: Run keeps retrying until ctx ends, then returns nil.
	if err := sub.Run(ctx, newRecorder()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := sub.Run(context.Background(), newRecorder()); err == nil {
		t.Fatal("a second Run was accepted")
	}
	if st := sub.Stats(); st.Ready {
		t.Fatalf("stats %+v: ready without a broker", st)
	}
}

// TestFollowsAddedPartitions adds partitions to the topic while the
// subscriber streams and checks that decisions produced to them arrive.
func TestFollowsAddedPartitions(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 1)
	sub, rec, _ := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-",
		PartitionCheckInterval: 50 * time.Millisecond})
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	res, err := c.CreatePartitions(context.Background(), &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Errors[topic]; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "3 partitions", func() bool { return sub.Stats().Partitions == 3 })
	// A publisher created now sees 3 partitions; murmur2 spreads these keys
	// over all three (see TestPartitionerMatchesKafkaPython).
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	want := map[string]decisionfeed.Decision{}
	var ds []decisionfeed.Decision
	for i := range 30 {
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(i), time.Hour, "test", time.Now())
		ds = append(ds, d)
		want[d.Target()] = d
	}
	if err := pub.Publish(context.Background(), ds...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "decisions of the new partitions", func() bool { return len(rec.ids()) == len(want) })
	if g, w := rec.ids(), idsOf(want); fmt.Sprint(g) != fmt.Sprint(w) {
		t.Fatalf("live set %v\nwant %v", g, w)
	}
}

// TestMissingDLQPausesCopies points the DLQ at a topic that does not
// exist: the invalid messages are counted as DLQ errors, one failed copy
// pauses the others (one error logged, not twenty), and the snapshot
// comes promptly.
func TestMissingDLQPausesCopies(t *testing.T) {
	if feedtest.External() {
		t.Skip("Apache Kafka may create the missing topic on first write")
	}
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 1)
	w := rawWriter(t, brokers, topic)
	var msgs []kafka.Message
	for i := range 20 {
		msgs = append(msgs, kafka.Message{Key: []byte("ip:192.0.2." + strconv.Itoa(i)), Value: []byte("not json")})
	}
	good := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(1), time.Hour, "test", time.Now())
	msgs = append(msgs, kafka.Message{Key: []byte(good.Key()), Value: encode(t, good)})
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	start := time.Now()
	sub, rec, stop := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-",
		DLQTopic: topic + ".nosuch", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	stop()
	if n := strings.Count(logs.String(), "copy to the dead-letter topic failed"); n != 1 {
		t.Fatalf("%d DLQ failures logged, want 1 (then a pause):\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "invalid decision dropped"); n != 20 {
		t.Fatalf("%d invalid messages logged, want 20", n)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("snapshot after %s", el)
	}
	if got := rec.ids(); len(got) != 1 || got[0] != good.Target()+"="+good.ID {
		t.Fatalf("snapshot %v", got)
	}
	if st := sub.Stats(); st.Invalid != 20 || st.DLQErrors != 20 {
		t.Fatalf("stats %+v, want 20 invalid, 20 DLQ errors", st)
	}
}

// TestDLQOneCopyPerRecord restarts bouncers on a topic with bad records
// and checks that the DLQ holds one copy of each, not one per start.
func TestDLQOneCopyPerRecord(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 2)
	w := rawWriter(t, brokers, topic)
	good := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, ip(1), time.Hour, "test", time.Now())
	msgs := []kafka.Message{
		{Key: []byte(good.Key()), Value: encode(t, good)},
		{Key: []byte("ip:203.0.9.1@test"), Value: []byte(`{"v":1,`)},
		{Key: []byte("ip:203.0.9.2@te st"), Value: nil}, // tombstone with an odd origin
		{Key: []byte("ip:203.0.9.3@test"), Value: []byte(`{"v":2}`)},
		{Key: []byte(good.Key()), Value: []byte(strings.Replace(string(encode(t, good)), `"value"`, `"Value":"203.0.9.4","value"`, 1))},
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	const bad = 4
	for start := range 3 {
		sub, _, stop := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-"})
		st := sub.Stats()
		stop()
		wantSkipped := uint64(0)
		if start > 0 {
			wantSkipped = bad
		}
		if st.Invalid != bad || st.DLQSkipped != wantSkipped || st.DLQErrors != 0 {
			t.Fatalf("start %d: stats %+v, want %d invalid, %d not copied again", start, st, bad, wantSkipped)
		}
	}
	got := readDLQ(t, brokers, decisionfeed.DLQTopic(topic), bad)
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	res, err := c.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{decisionfeed.DLQTopic(topic): {kafka.LastOffsetOf(0)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if po := res.Topics[decisionfeed.DLQTopic(topic)]; len(po) != 1 || po[0].LastOffset != bad {
		t.Fatalf("DLQ offsets %+v, want %d copies in all; got %+v", po, bad, got)
	}
}

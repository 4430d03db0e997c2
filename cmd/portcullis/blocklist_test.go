package main

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
	"github.com/portcullis-ips/portcullis/intel"
)

// standInBouncer follows the feed like a bouncer: the live set by key, and
// every change it was handed after the snapshot.
type standInBouncer struct {
	mu      sync.Mutex
	live    map[string]decisionfeed.Decision
	changes []decisionfeed.Decision
	ready   bool
}

func (b *standInBouncer) Snapshot(_ context.Context, live iter.Seq[decisionfeed.Decision]) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.live = map[string]decisionfeed.Decision{}
	for d := range live {
		b.live[d.Target()] = d
	}
	b.ready = true
	return nil
}

func (b *standInBouncer) Changes(_ context.Context, cs []decisionfeed.Decision) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, d := range cs {
		if d.Op == decisionfeed.OpDelete {
			delete(b.live, d.Target())
		} else {
			b.live[d.Target()] = d
		}
	}
	b.changes = append(b.changes, cs...)
	return nil
}

// wait polls until cond holds on the bouncer's state.
func (b *standInBouncer) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b.mu.Lock()
		ok := b.ready && cond()
		n, c := len(b.live), len(b.changes)
		b.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached (live %d, changes %d)", what, n, c)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startBouncer(t *testing.T, brokers []string, topic string) *standInBouncer {
	t.Helper()
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-", MaxBatch: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &standInBouncer{}
	done := make(chan struct{})
	go func() { defer close(done); _ = sub.Run(ctx, b) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

// listAddr is the i-th address of the generated lists.
func listAddr(i int) string {
	return netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)}).String()
}

func TestBlocklistImport100k(t *testing.T) {
	const n, changed = 100_000, 1000
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	intelTopic := feedtest.Topic(t, 1)
	common := []string{"--brokers", strings.Join(brokers, ","), "--topic", topic, "--intel-topic", intelTopic, "--log-level", "warn"}
	dir := t.TempDir()

	var b strings.Builder
	b.WriteString("# generated list\n; spamhaus-style comment\n")
	for i := range n {
		if i == 500 {
			b.WriteString("10.0.0.1/8\n")     // line 503: not masked
			b.WriteString("not-an-address\n") // line 504
		}
		fmt.Fprintf(&b, "%s\n", listAddr(i))
	}
	first := filepath.Join(dir, "first.txt")
	if err := os.WriteFile(first, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	bouncer := startBouncer(t, brokers, topic)
	bouncer.wait(t, "empty snapshot", func() bool { return true })

	out, err := portcullis(t, append([]string{"blocklist", "import", first, "--name", "test-list", "--duration", "24h"}, common...)...)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "skipped line 503: ") || !strings.HasPrefix(lines[1], "skipped line 504: ") ||
		!strings.Contains(lines[2], fmt.Sprintf("%d prefixes, %d added, 0 deleted, 0 unchanged, 2 lines skipped", n, n)) {
		t.Fatalf("import output:\n%s", out)
	}
	bouncer.wait(t, "100k decisions live", func() bool { return len(bouncer.live) == n })

	// Into the nginx bouncer's prefix set, as the nginx bouncer would.
	set := prefixset.New()
	defer func() { _ = set.Close() }()
	bouncer.mu.Lock()
	var entries []enforcer.Entry
	for _, d := range bouncer.live {
		e, err := enforcer.FromDecision(&d)
		if err != nil || d.Origin != intel.Origin("test-list") || d.Scenario != "blocklist/test-list" || d.Type != decisionfeed.TypeBan {
			bouncer.mu.Unlock()
			t.Fatalf("live decision %+v (%v)", d, err)
		}
		entries = append(entries, e)
	}
	bouncer.changes = nil
	bouncer.mu.Unlock()
	if err := set.Reconcile(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 499, 500, 77_777, n - 1} {
		if m, ok := set.Lookup(netip.MustParseAddr(listAddr(i)), time.Now()); !ok || m.Remedy != prefixset.RemedyBan {
			t.Errorf("prefix set: %s not banned", listAddr(i))
		}
	}
	if _, ok := set.Lookup(netip.MustParseAddr(listAddr(n)), time.Now()); ok {
		t.Errorf("prefix set: %s banned", listAddr(n))
	}

	// Re-import with 1000 lines replaced: exactly 1000 deletes and 1000 adds.
	b.Reset()
	for i := range n {
		if i%(n/changed) == 7 {
			i += n // replaced by an address outside the first list
		}
		fmt.Fprintf(&b, "%s\n", listAddr(i))
	}
	stdin = strings.NewReader(b.String())
	defer func() { stdin = os.Stdin }()
	out, err = portcullis(t, append([]string{"blocklist", "import", "-", "--name", "test-list", "--duration", "24h", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatalf("re-import: %v\n%s", err, out)
	}
	var sum importSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("re-import -o json: %v\n%s", err, out)
	}
	if sum.Prefixes != n || sum.Added != changed || sum.Deleted != changed || sum.Unchanged != n-changed || len(sum.Skipped) != 0 {
		t.Fatalf("re-import summary: %+v", sum)
	}
	bouncer.wait(t, "1000 deletes and 1000 adds", func() bool { return len(bouncer.changes) >= 2*changed })
	time.Sleep(200 * time.Millisecond) // nothing more may follow
	bouncer.mu.Lock()
	defer bouncer.mu.Unlock()
	adds, dels := map[string]bool{}, map[string]bool{}
	for _, d := range bouncer.changes {
		if d.Op == decisionfeed.OpDelete {
			dels[d.Value] = true
		} else {
			adds[d.Value] = true
		}
	}
	if len(bouncer.changes) != 2*changed || len(adds) != changed || len(dels) != changed {
		t.Fatalf("changes after re-import: %d (%d adds, %d deletes), want %d and %d", len(bouncer.changes), len(adds), len(dels), changed, changed)
	}
	for i := 7; i < n; i += n / changed {
		if !dels[listAddr(i)] || !adds[listAddr(i+n)] {
			t.Fatalf("line %d: delete %s %v, add %s %v", i, listAddr(i), dels[listAddr(i)], listAddr(i+n), adds[listAddr(i+n)])
		}
	}
	if len(bouncer.live) != n {
		t.Fatalf("live after re-import: %d, want %d", len(bouncer.live), n)
	}

	// The two imports are recorded on threat-intel: 10 chunks each, keyed by name.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: intelTopic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	total := 0
	for i := range 2 * 10 {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("threat-intel message %d: %v", i, err)
		}
		var rec intel.Record
		if err := json.Unmarshal(m.Value, &rec); err != nil || string(m.Key) != "test-list" || rec.Chunks != 10 {
			t.Fatalf("threat-intel message %d: key %q %v %.200s", i, m.Key, err, m.Value)
		}
		total += len(rec.Prefixes)
	}
	if total != 2*n {
		t.Fatalf("threat-intel records hold %d prefixes, want %d", total, 2*n)
	}
}

// TestBlocklistReimportKeepsOtherOrigins lets the engine and an operator
// ban addresses, imports a list that holds them too (and another list that
// holds one of the list's), then re-imports the list without them: the
// list withdraws only its own decisions, so the bans stand. (Under one key
// per address, the import took the keys over, as its decisions lasted
// longer, and the re-import's deletes lifted the bans.)
func TestBlocklistReimportKeepsOtherOrigins(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	intelTopic := feedtest.Topic(t, 1)
	common := []string{"--brokers", strings.Join(brokers, ","), "--topic", topic, "--intel-topic", intelTopic, "--log-level", "warn"}
	dir := t.TempDir()
	write := func(name string, lines ...string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bouncer := startBouncer(t, brokers, topic)
	bouncer.wait(t, "empty snapshot", func() bool { return true })
	imp := func(file, name string) {
		t.Helper()
		if out, err := portcullis(t, append([]string{"blocklist", "import", file, "--name", name, "--duration", "24h"}, common...)...); err != nil {
			t.Fatalf("import %s: %v\n%s", name, err, out)
		}
	}
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	engineBan := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("192.0.2.1/32"), 4*time.Hour, "engine", time.Now())
	if err := pub.Publish(context.Background(), engineBan); err != nil {
		t.Fatal(err)
	}
	if out, err := portcullis(t, "decisions", "add", "--range", "198.51.100.0/24", "--duration", "1h",
		"--brokers", strings.Join(brokers, ","), "--topic", topic, "--log-level", "warn"); err != nil {
		t.Fatalf("add: %v\n%s", err, out)
	}
	imp(write("a1.txt", "192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.0/24"), "list-a")
	imp(write("b.txt", "192.0.2.3"), "list-b")
	imp(write("a2.txt", "192.0.2.2"), "list-a") // 192.0.2.1, .3 and the range dropped from list-a

	enforced := func() string {
		var out []string
		for k, d := range bouncer.live {
			out = append(out, k+"="+d.Origin)
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	const want = "ip:192.0.2.1=engine ip:192.0.2.2=lists:list-a ip:192.0.2.3=lists:list-b range:198.51.100.0/24=cli"
	bouncer.wait(t, "the other origins' bans standing", func() bool { return enforced() == want })
	fresh := startBouncer(t, brokers, topic)
	fresh.wait(t, "a fresh bouncer's snapshot", func() bool { return len(fresh.live) == 4 })
	fresh.mu.Lock()
	defer fresh.mu.Unlock()
	var got []string
	for k, d := range fresh.live {
		got = append(got, k+"="+d.Origin)
	}
	slices.Sort(got)
	if strings.Join(got, " ") != want {
		t.Fatalf("fresh snapshot %v\nwant %s", got, want)
	}
}

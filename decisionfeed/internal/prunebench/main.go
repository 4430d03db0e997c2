// Command prunebench measures what pruning buys a bouncer's start: it
// publishes N decisions that have expired plus L that live, measures a
// fresh subscriber's rebuild (wall time, records, bytes read from the
// sockets), prunes the topic once, lets the broker compact, and measures
// the rebuild again. The broker runs in another process (portcullis
// broker, or Apache Kafka).
//
//	prunebench -brokers 127.0.0.1:19393 -topic prune-1m -n 1000000 -live 10000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

func main() {
	if err := run(); err != nil {
		msg := err.Error()
		if len(msg) > 400 {
			msg = msg[:400] + "…" // kafka-go lists every failed message
		}
		fmt.Fprintln(os.Stderr, "prunebench:", msg)
		os.Exit(1)
	}
}

func run() error {
	var (
		brokers = flag.String("brokers", "127.0.0.1:9092", "bootstrap brokers")
		topic   = flag.String("topic", "prune-bench", "topic to create and fill")
		n       = flag.Int("n", 1000000, "decisions that have expired")
		live    = flag.Int("live", 10000, "decisions that live")
		wait    = flag.Duration("compact-timeout", 10*time.Minute, "how long to wait for compaction")
	)
	flag.Parse()
	bs := strings.Split(*brokers, ",")
	ctx := context.Background()
	cfg := broker.CompactConfigs()
	// Low settings so that the log cleaner of Apache Kafka runs within the
	// bench: segments roll after 10 s, any dirty share is cleanable, and
	// tombstones go a second after their segment was cleaned.
	cfg["delete.retention.ms"] = "1000"
	cfg["segment.ms"] = "10000"
	cfg["min.cleanable.dirty.ratio"] = "0.01"
	if err := feedtest.CreateTopic(ctx, bs, *topic, decisionfeed.PartitionsDecisions, cfg); err != nil {
		return fmt.Errorf("create topic: %w", err)
	}
	report("load average", loadavg())
	t0 := time.Now()
	if err := load(ctx, bs, *topic, *n, *live); err != nil {
		return err
	}
	report("published", fmt.Sprintf("%d expired + %d live in %s", *n, *live, time.Since(t0).Round(time.Millisecond)))

	before, err := rebuild(ctx, bs, *topic)
	if err != nil {
		return err
	}
	report("rebuild before prune", before.String())

	pr, err := decisionfeed.NewPruner(decisionfeed.PrunerConfig{Brokers: bs, Topic: *topic})
	if err != nil {
		return err
	}
	defer pr.Close()
	t0 = time.Now()
	r0 := rchar()
	st, err := pr.Once(ctx)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	report("prune", fmt.Sprintf("%s, read %d records (%s), live %d, tombstoned %d expired + %d deleted, republished %d, peak RSS so far %s",
		time.Since(t0).Round(time.Millisecond), st.Records, mib(rchar()-r0), st.Live, st.Expired, st.Deleted, st.Republished, mib(vmHWM())))

	// The fleet goes on: a decision per partition and some later ones
	// close the segment (Kafka) or batch (embedded) that holds the
	// tombstones, which neither broker cleans while it is active.
	deadline := time.Now().Add(*wait)
	var after rebuildStats
	for i := 0; ; i++ {
		time.Sleep(11 * time.Second)
		t0 := time.Now()
		for err := loadLive(ctx, bs, *topic, 1000000+i*10, 10); err != nil; err = loadLive(ctx, bs, *topic, 1000000+i*10, 10) {
			if time.Now().After(deadline) {
				return err
			}
		}
		report("publish 10 more", fmt.Sprintf("acknowledged after %s", time.Since(t0).Round(time.Millisecond)))
		if after, err = rebuild(ctx, bs, *topic); err != nil {
			return err
		}
		report("rebuild after prune", after.String())
		if after.records <= int64(*live)*3/2 || time.Now().After(deadline) {
			break
		}
	}
	report("ratio before/after", fmt.Sprintf("wall %.1fx, records %.1fx, bytes %.1fx",
		before.wall.Seconds()/after.wall.Seconds(), float64(before.records)/float64(after.records), float64(before.bytes)/float64(after.bytes)))
	report("load average", loadavg())
	return nil
}

func report(what, s string) { fmt.Printf("%-22s %s\n", what+":", s) }

// load publishes n decisions that expired an hour ago and live that last a day.
func load(ctx context.Context, bs []string, topic string, n, live int) error {
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: bs, Topic: topic})
	if err != nil {
		return err
	}
	defer pub.Close() //nolint:errcheck // Publish is synchronous
	now := time.Now()
	const batch = 2000
	work := make(chan int)
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			ds := make([]decisionfeed.Decision, 0, batch)
			for start := range work {
				ds = ds[:0]
				for i := start; i < min(start+batch, n+live); i++ {
					if i < n {
						ds = append(ds, decision(i, now.Add(-2*time.Hour), time.Hour))
					} else {
						ds = append(ds, decision(i, now, 24*time.Hour))
					}
				}
				if err := pub.Publish(ctx, ds...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err2 error
	for start := 0; start < n+live && err2 == nil; start += batch {
		select {
		case work <- start:
		case err2 = <-errs:
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	return errors.Join(err2, <-errs)
}

func loadLive(ctx context.Context, bs []string, topic string, from, k int) error {
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: bs, Topic: topic})
	if err != nil {
		return err
	}
	defer pub.Close() //nolint:errcheck // Publish is synchronous
	var ds []decisionfeed.Decision
	for i := from; i < from+k; i++ {
		ds = append(ds, decision(i, time.Now(), 24*time.Hour))
	}
	return pub.Publish(ctx, ds...)
}

// decision returns an engine ban of address i (10.0.0.0/8 and beyond).
func decision(i int, created time.Time, dur time.Duration) decisionfeed.Decision {
	a := netip.AddrFrom4([4]byte{byte(10 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), dur, "engine", created)
	d.Scenario = "crowdsecurity/http-probing"
	d.Host = "web-1"
	return d
}

type rebuildStats struct {
	wall    time.Duration
	records int64
	live    int
	bytes   int64
}

func (r rebuildStats) String() string {
	return fmt.Sprintf("%s wall, %d records, %d live, %s read from sockets", r.wall.Round(time.Millisecond), r.records, r.live, mib(r.bytes))
}

// count is a Handler that counts the snapshot.
type count struct {
	live  int
	ready chan struct{}
}

func (c *count) Snapshot(_ context.Context, live []decisionfeed.Decision) error {
	c.live = len(live)
	close(c.ready)
	return nil
}

func (*count) Changes(context.Context, []decisionfeed.Decision) error { return nil }

// rebuild runs a fresh subscriber until its snapshot.
func rebuild(ctx context.Context, bs []string, topic string) (rebuildStats, error) {
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: bs, Topic: topic, Group: "-", DLQTopic: "-"})
	if err != nil {
		return rebuildStats{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	h := &count{ready: make(chan struct{})}
	r0 := rchar()
	t0 := time.Now()
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx, h) }()
	select {
	case <-h.ready:
	case err := <-done:
		cancel()
		return rebuildStats{}, fmt.Errorf("subscriber ended: %v", err)
	}
	st := rebuildStats{wall: time.Since(t0), bytes: rchar() - r0, records: int64(sub.Stats().Messages), live: h.live}
	cancel()
	<-done
	return st, nil
}

// rchar is the bytes this process has read through read(2) and friends,
// sockets included (/proc/self/io).
func rchar() int64 { return procField("/proc/self/io", "rchar:") }

// vmHWM is the peak resident set of this process in bytes.
func vmHWM() int64 { return procField("/proc/self/status", "VmHWM:") * 1024 }

func procField(file, name string) int64 {
	f, err := os.Open(file)
	if err != nil {
		return -1
	}
	defer f.Close() //nolint:errcheck // read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	return -1
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

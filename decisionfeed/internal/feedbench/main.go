// Command feedbench measures the decision feed against running brokers:
// publish throughput, publish-to-callback latency, and the time and peak
// memory of rebuilding the live set. The broker runs in another process
// (portcullis broker, or Apache Kafka), so the memory figures are the
// subscriber's alone.
//
//	feedbench -brokers 127.0.0.1:9092 -mode load -n 1000000 -topic bench-1m
//	feedbench -brokers 127.0.0.1:9092 -mode rebuild -topic bench-1m
//	feedbench -brokers 127.0.0.1:9092 -mode latency -n 2000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"iter"
	"net/netip"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// memProfile is where the heap profile goes, "" for none.
var memProfile string

// security is the TLS and SASL of every client, from the PORTCULLIS_KAFKA_*
// environment as every program reads it.
var security *kafkaconn.Security

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "feedbench:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	var (
		brokers = flag.String("brokers", "127.0.0.1:9092", "bootstrap brokers")
		mode    = flag.String("mode", "", "load, rebuild or latency")
		n       = flag.Int("n", 1000000, "decisions to publish (load) or samples to take (latency)")
		topic   = flag.String("topic", "", "topic (created by load and latency when missing)")
		batch   = flag.Int("batch", 1000, "decisions per Publish call (load)")
		pubs    = flag.Int("publishers", 4, "concurrent Publish calls (load)")
		cpuProf = flag.String("cpuprofile", "", "write a CPU profile to this file")
		memProf = flag.String("memprofile", "", "write a heap profile (at snapshot) to this file")
	)
	flag.Parse()
	if security, err = feedtest.EnvSecurity(); err != nil {
		return err
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		// Deferred first, so it runs after StopCPUProfile has written the
		// profile out: a failed close means a truncated profile.
		defer func() {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("cpuprofile: %w", cerr)
			}
		}()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	memProfile = *memProf
	if memProfile != "" {
		runtime.MemProfileRate = 64 << 10
	}
	bs := strings.Split(*brokers, ",")
	ctx := context.Background()
	switch *mode {
	case "load":
		return load(ctx, bs, *topic, *n, *batch, *pubs)
	case "rebuild":
		return rebuild(ctx, bs, *topic)
	case "latency":
		return latency(ctx, bs, *topic, *n)
	}
	return fmt.Errorf("-mode %q: want load, rebuild or latency", *mode)
}

// addr returns the i-th distinct address of the benchmark: IPv4 from
// 10.0.0.0 on, every tenth one IPv6.
func addr(i int) netip.Prefix {
	if i%10 == 9 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
		return netip.PrefixFrom(a, 128)
	}
	a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	return netip.PrefixFrom(a, 32)
}

// load publishes n distinct, realistic add decisions.
func load(ctx context.Context, brokers []string, topic string, n, batch, pubs int) (err error) {
	if topic == "" {
		return errors.New("load needs -topic")
	}
	if err := feedtest.CreateTopic(ctx, brokers, topic, decisionfeed.PartitionsDecisions, broker.CompactConfigs()); err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic, Security: security})
	if err != nil {
		return err
	}
	defer closePublisher(pub, &err)
	scenarios := []string{"crowdsecurity/ssh-bf", "crowdsecurity/http-probing", "crowdsecurity/http-crawl-non_statics", "portcullis/cve-probe"}
	countries := []string{"RU", "CN", "US", "BR", "NL", "DE"}
	now := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, pubs)
	start := time.Now()
	for range pubs {
		wg.Go(func() {
			ds := make([]decisionfeed.Decision, 0, batch)
			for {
				from := int(next.Add(int64(batch))) - batch
				if from >= n {
					return
				}
				ds = ds[:0]
				for i := from; i < min(from+batch, n); i++ {
					d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, addr(i), 24*time.Hour, "engine", now)
					d.Scenario = scenarios[i%len(scenarios)]
					d.Country = countries[i%len(countries)]
					d.Host = "web-" + strconv.Itoa(i%8)
					ds = append(ds, d)
				}
				if err := pub.Publish(ctx, ds...); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Printf("load: %d decisions in %s: %.0f decisions/s (batch %d, %d publishers)\n", n, el.Round(time.Millisecond), float64(n)/el.Seconds(), batch, pubs)
	return nil
}

// closePublisher closes pub and reports its error through *err unless an
// earlier error is already there: Close flushes, so a failure means lost
// decisions.
func closePublisher(pub *decisionfeed.Publisher, err *error) {
	if cerr := pub.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}

// writeHeapProfile writes the heap profile as of now to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("memprofile: %w", err)
	}
	runtime.GC() // publish the allocation records up to now
	if err := pprof.WriteHeapProfile(f); err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("memprofile: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("memprofile: %w", err)
	}
	return nil
}

// counting is a Handler that records when the snapshot arrived.
type counting struct {
	snap chan int
}

func (c *counting) Snapshot(_ context.Context, live iter.Seq[decisionfeed.Decision]) error {
	if memProfile != "" {
		// Reported, not returned: a failed Snapshot would leave rebuild
		// waiting on c.snap for ever.
		if err := writeHeapProfile(memProfile); err != nil {
			fmt.Fprintln(os.Stderr, "feedbench:", err)
		}
	}
	n := 0
	for range live {
		n++
	}
	c.snap <- n
	return nil
}

func (c *counting) Changes(context.Context, []decisionfeed.Decision) error { return nil }

// rebuild measures the time and peak memory to rebuild the live set.
func rebuild(ctx context.Context, brokers []string, topic string) error {
	if topic == "" {
		return errors.New("rebuild needs -topic")
	}
	var peakHeap atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64() + s[1].Value.Uint64(); v > peakHeap.Load() {
				peakHeap.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-", Security: security})
	if err != nil {
		return err
	}
	h := &counting{snap: make(chan int, 1)}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- sub.Run(ctx, h) }()
	live := <-h.snap
	el := time.Since(start)
	close(stop)
	<-sampled
	cancel()
	if err := <-done; err != nil {
		return err
	}
	st := sub.Stats()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("rebuild: %d messages -> %d live in %s; peak heap in use %.0f MiB; peak RSS %s; allocated %.0f MiB in %d objects; GC cycles %d\n",
		st.Messages, live, el.Round(time.Millisecond), float64(peakHeap.Load())/(1<<20), peakRSS(),
		float64(ms.TotalAlloc)/(1<<20), ms.Mallocs, ms.NumGC)
	return nil
}

// peakRSS returns VmHWM from /proc/self/status.
func peakRSS() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close() //nolint:errcheck // read-only procfs file: nothing to lose on close

	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return strings.TrimSpace(v)
			}
			return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
		}
	}
	return "unknown"
}

// arrivals is a Handler that timestamps every change by decision id.
type arrivals struct {
	ready chan struct{}
	got   chan arrival
}

type arrival struct {
	id string
	at time.Time
}

func (a *arrivals) Snapshot(context.Context, iter.Seq[decisionfeed.Decision]) error {
	close(a.ready)
	return nil
}

func (a *arrivals) Changes(_ context.Context, cs []decisionfeed.Decision) error {
	now := time.Now()
	for _, d := range cs {
		a.got <- arrival{d.ID, now}
	}
	return nil
}

// latency publishes n decisions one at a time and measures the time from
// the Publish call to the subscriber's Changes callback.
func latency(ctx context.Context, brokers []string, topic string, n int) (err error) {
	if topic == "" {
		topic = "bench-latency-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	if err := feedtest.CreateTopic(ctx, brokers, topic, decisionfeed.PartitionsDecisions, broker.CompactConfigs()); err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-", Security: security})
	if err != nil {
		return err
	}
	h := &arrivals{ready: make(chan struct{}), got: make(chan arrival, 16)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx, h) }()
	<-h.ready
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic, Security: security})
	if err != nil {
		return err
	}
	defer closePublisher(pub, &err)
	var e2e, ack []time.Duration
	for i := range n + 50 { // the first 50 warm connections up and are not counted
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, addr(i), time.Hour, "bench", time.Now())
		start := time.Now()
		if err := pub.Publish(ctx, d); err != nil {
			return err
		}
		acked := time.Since(start)
		a := <-h.got
		if a.id != d.ID {
			return fmt.Errorf("got decision %s, want %s", a.id, d.ID)
		}
		if i >= 50 {
			e2e = append(e2e, a.at.Sub(start))
			ack = append(ack, acked)
		}
	}
	cancel()
	if err := <-done; err != nil {
		return err
	}
	fmt.Printf("latency over %d decisions: publish->callback p50 %s p99 %s max %s; publish ack p50 %s p99 %s\n",
		n, pct(e2e, 50), pct(e2e, 99), pct(e2e, 100), pct(ack, 50), pct(ack, 99))
	return nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return s[i].Round(10 * time.Microsecond)
}

package netns_test

import (
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// stream sends numbered UDP datagrams from one attacker address to a sink
// in the victim every gap, remembering when each was sent, so the first
// datagram a new ban stopped can be found and timed.
type stream struct {
	conn    *net.UDPConn
	sink    net.PacketConn
	gap     time.Duration
	mu      sync.Mutex
	sent    []time.Time // by sequence number
	lastRx  atomic.Int64
	rxAt    atomic.Int64 // unix nanos of the last receipt
	stop    chan struct{}
	stopped sync.WaitGroup
}

func newStream(tb testing.TB, e *env, p peer, gap time.Duration) *stream {
	tb.Helper()
	dst, err := e.top.VictimFor(p.src)
	if err != nil {
		tb.Fatal(err)
	}
	s := &stream{gap: gap, stop: make(chan struct{})}
	if err := e.top.Victim.Do(func() error {
		var err error
		s.sink, err = net.ListenPacket("udp", net.JoinHostPort(dst.String(), "0"))
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	port := s.sink.LocalAddr().(*net.UDPAddr).Port
	if err := p.ns.Do(func() error {
		var err error
		s.conn, err = net.DialUDP("udp", &net.UDPAddr{IP: p.src.AsSlice()}, &net.UDPAddr{IP: dst.AsSlice(), Port: port})
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	s.lastRx.Store(-1)
	s.stopped.Add(2)
	go s.receive()
	go s.send()
	tb.Cleanup(func() {
		close(s.stop)
		_ = s.sink.Close()
		_ = s.conn.Close()
		s.stopped.Wait()
	})
	return s
}

func (s *stream) send() {
	defer s.stopped.Done()
	buf := make([]byte, 8)
	for seq := uint64(0); ; seq++ {
		select {
		case <-s.stop:
			return
		default:
		}
		binary.BigEndian.PutUint64(buf, seq)
		s.mu.Lock()
		s.sent = append(s.sent, time.Now())
		s.mu.Unlock()
		_, _ = s.conn.Write(buf)
		time.Sleep(s.gap)
	}
}

func (s *stream) receive() {
	defer s.stopped.Done()
	buf := make([]byte, 64)
	for {
		k, _, err := s.sink.ReadFrom(buf)
		if err != nil {
			return
		}
		if k == 8 {
			s.lastRx.Store(int64(binary.BigEndian.Uint64(buf)))
			s.rxAt.Store(time.Now().UnixNano())
		}
	}
}

// waitQuiet waits until the first datagram not yet received was sent at
// least quiet ago, and returns its send time: the first one dropped. (A
// sender that merely stalled does not count as quiet: the datagram after
// the last one received has to exist and be overdue.)
func (s *stream) waitQuiet(tb testing.TB, quiet, timeout time.Duration) time.Time {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		first := s.lastRx.Load() + 1
		s.mu.Lock()
		if first < int64(len(s.sent)) && time.Since(s.sent[first]) >= quiet {
			at := s.sent[first]
			s.mu.Unlock()
			return at
		}
		s.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	tb.Fatalf("stream: still flowing after %s", timeout)
	return time.Time{}
}

// waitFlowing waits until a datagram sent after since arrives.
func (s *stream) waitFlowing(tb testing.TB, since time.Time, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if time.Unix(0, s.rxAt.Load()).After(since) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	tb.Fatalf("stream: nothing arrived within %s", timeout)
}

// medianGap is the median interval between sends, the timing resolution.
func (s *stream) medianGap() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var gaps []time.Duration
	for i := 1; i < len(s.sent); i++ {
		gaps = append(gaps, s.sent[i].Sub(s.sent[i-1]))
	}
	if len(gaps) == 0 {
		return 0
	}
	slices.Sort(gaps)
	return gaps[len(gaps)/2]
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkBanToDrop times, per iteration, one ban from the start of
// `portcullis decisions add` (a fresh process, as an operator runs it) to
// the first datagram of a steady stream that the kernel dropped, with
// fw-bouncer at its default 5 ms coalescing. Trials alternate between the
// CLI and the Go publisher (no process start). One call runs every trial
// (PORTCULLIS_BAN_TRIALS, default 100: 50 of each): use -benchtime=1x.
func BenchmarkBanToDrop(b *testing.B) {
	testenv.RequireRoot(b)
	trials := envInt(b, "PORTCULLIS_BAN_TRIALS", 100)
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			e := newEnvCoalesce(b, m, 5*time.Millisecond)
			bn := e.startBouncer("--log-level", "info")
			bn.waitLog(b, 0, 30*time.Second, "reconciled to the feed's snapshot")
			p := e.attacker(0, 4)
			s := newStream(b, e, p, 200*time.Microsecond)
			s.waitFlowing(b, time.Now(), 5*time.Second)
			var cliLat, pubLat, cliRun []time.Duration
			b.ResetTimer()
			for i := range trials {
				// Alternate the operator's CLI and the Go publisher (no
				// process start), and remove the ban between trials.
				t0 := time.Now()
				if i%2 == 0 {
					e.cli("decisions", "add", "--ip", p.src.String(), "--duration", "1h")
					cliRun = append(cliRun, time.Since(t0))
				} else {
					e.publish(ban(host(p.src), time.Hour))
				}
				first := s.waitQuiet(b, 100*time.Millisecond, 10*time.Second)
				if i%2 == 0 {
					cliLat = append(cliLat, first.Sub(t0))
				} else {
					pubLat = append(pubLat, first.Sub(t0))
				}
				b.StopTimer()
				t1 := time.Now()
				e.publish(unban(host(p.src)))
				s.waitFlowing(b, t1, 10*time.Second)
				b.StartTimer()
			}
			b.StopTimer()
			if len(cliLat) > 0 {
				b.ReportMetric(ms(percentile(cliLat, 0.5)), "cli-p50-ms")
				b.ReportMetric(ms(percentile(cliLat, 0.9)), "cli-p90-ms")
				b.ReportMetric(ms(percentile(cliLat, 0.99)), "cli-p99-ms")
				b.ReportMetric(ms(slices.Max(cliLat)), "cli-max-ms")
				// How long the CLI process itself took, start to exit,
				// which bounds its share of the latency.
				b.ReportMetric(ms(percentile(cliRun, 0.5)), "cli-exit-p50-ms")
			}
			if len(pubLat) > 0 {
				b.ReportMetric(ms(percentile(pubLat, 0.5)), "pub-p50-ms")
				b.ReportMetric(ms(percentile(pubLat, 0.9)), "pub-p90-ms")
				b.ReportMetric(ms(percentile(pubLat, 0.99)), "pub-p99-ms")
			}
			b.ReportMetric(float64(s.medianGap())/float64(time.Microsecond), "resolution-µs")
			b.ReportMetric(0, "ns/op")
			bn.stop(b)
		})
	}
}

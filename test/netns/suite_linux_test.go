package netns_test

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portcullis-ips/portcullis/internal/testenv"
	"github.com/portcullis-ips/portcullis/test/netns"
)

// TestFWBouncer is the one end-to-end suite every fw-bouncer mode passes:
// the real binary runs inside the victim namespace of a fresh topology and
// the assertions are on real packets. The steps share one topology and
// topic per mode and run in order.
func TestFWBouncer(t *testing.T) {
	testenv.RequireRoot(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			testMode(t, m)
		})
	}
}

func testMode(t *testing.T, m modeSpec) {
	e := newEnv(t, m)
	b := e.startBouncer()
	b.waitLog(t, 0, 30*time.Second, "reconciled to the feed's snapshot", "bans=0")
	for _, v := range []int{4, 6} {
		e.requireAll(e.attacker(0, v), true)
		e.requireAll(e.bystander(v), true)
	}

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, func(t *testing.T) { e.t = t; f(t) }) {
			t.FailNow()
		}
		e.t = t
	}

	step("single addresses v4 and v6", func(t *testing.T) {
		a4, a6 := e.attacker(0, 4), e.attacker(0, 6)
		e.publish(ban(host(a4.src), time.Hour), ban(host(a6.src), time.Hour))
		e.waitState(a4, false, 5*time.Second)
		e.waitState(a6, false, 5*time.Second)
		e.requireAll(a4, false)
		e.requireAll(a6, false)
		// The attacker's other addresses and the bystander are untouched.
		e.requireAll(e.attacker(1, 4), true)
		e.requireAll(e.attacker(1, 6), true)
		e.requireAll(e.bystander(4), true)
		e.requireAll(e.bystander(6), true)

		// The metrics show the bans and the packets the probes lost.
		mt := e.metrics()
		for series, want := range map[string]float64{
			`portcullis_fw_bouncer_active_bans{origin="e2e",scenario="e2e/test"}`: 2,
			`portcullis_fw_bouncer_applied_total{op="add"}`:                       2,
			`portcullis_feed_ready`:                                               1,
		} {
			if got, ok := metricValue(mt, series); !ok || got != want {
				t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
			}
		}
		// XDP counts per reason; the netfilter sets count per set, so
		// only the sum over reasons is common to every backend.
		if got := metricSum(mt, "portcullis_fw_bouncer_dropped_packets_total"); got < 6 {
			t.Errorf("dropped_packets_total summed over reasons = %v, want at least the 6 probes", got)
		}
		// XDP and nftables also split their drops by the origin and
		// scenario of the ban.
		if m.name == "xdp" || m.name == "nftables" {
			series := `portcullis_fw_bouncer_source_dropped_packets_total{origin="e2e",scenario="e2e/test"}`
			if got, _ := metricValue(mt, series); got < 6 {
				t.Errorf("%s = %v, want at least the 6 probes", series, got)
			}
		}
	})

	step("delete unblocks within a second", func(t *testing.T) {
		for _, v := range []int{4, 6} {
			p := e.attacker(0, v)
			start := time.Now()
			e.cli("decisions", "delete", "--ip", p.src.String())
			e.waitState(p, true, 5*time.Second)
			if took := time.Since(start); took > time.Second {
				t.Errorf("%s answered %s after `portcullis decisions delete`, want < 1s", p.src, took)
			}
			e.requireAll(p, true)
		}
	})

	v4Range := netip.MustParsePrefix("198.51.100.10/31")
	v6Range := netip.MustParsePrefix("2001:db8:a::10/127")
	step("range blocks every address in it", func(t *testing.T) {
		e.cli("decisions", "add", "--range", v4Range.String(), "--duration", "1h")
		e.cli("decisions", "add", "--range", v6Range.String(), "--duration", "1h")
		for i := range 2 {
			for _, v := range []int{4, 6} {
				p := e.attacker(i, v)
				e.waitState(p, false, 5*time.Second)
				e.requireAll(p, false)
			}
		}
		e.requireAll(e.bystander(4), true)
		e.requireAll(e.bystander(6), true)
		// The CLI's bans are lifted by the operator's delete; a delete from
		// another producer ("e2e") would withdraw only its own decisions.
		e.cli("decisions", "delete", "--range", v4Range.String())
		e.cli("decisions", "delete", "--range", v6Range.String())
		e.waitState(e.attacker(1, 4), true, 5*time.Second)
		e.waitState(e.attacker(1, 6), true, 5*time.Second)
	})

	step("whitelist and host addresses are refused", func(t *testing.T) {
		mk := b.mark()
		e.publish(ban(host(e.top.Bystander6), time.Hour), ban(host(e.top.VictimA4), time.Hour),
			ban(netip.MustParsePrefix("203.0.113.0/24"), time.Hour))
		b.waitLog(t, mk, 5*time.Second, "refused ban", "key=ip:"+e.top.Bystander6.String(), "reason=whitelist")
		b.waitLog(t, mk, 5*time.Second, "refused ban", "key=ip:"+e.top.VictimA4.String(), "reason=host_address")
		b.waitLog(t, mk, 5*time.Second, "refused ban", "key=range:203.0.113.0/24", "reason=host_address")
		e.requireAll(e.bystander(6), true)
		e.requireAll(e.bystander(4), true)
	})

	step("malformed decisions never reach the kernel", func(t *testing.T) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(e.brokers...), kgo.DefaultProduceTopic(e.topic))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		by := e.top.Bystander4.String()
		until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		created := time.Now().UTC().Format(time.RFC3339)
		bad := []string{
			`not json at all`,
			`{"v":1,"id":"m1","op":"add","type":"ban","scope":"ip","value":"` + by + `"`, // truncated
			`{"v":2,"id":"m2","op":"add","type":"ban","scope":"ip","value":"` + by + `","until":"` + until + `","origin":"x","created_at":"` + created + `"}`,
			`{"v":1,"id":"m3","op":"add","type":"ban","scope":"range","value":"0.0.0.0/0","until":"` + until + `","origin":"x","created_at":"` + created + `"}`,
			`{"v":1,"id":"m4","op":"add","type":"ban","scope":"ip","value":"203.0.113.10/24","until":"` + until + `","origin":"x","created_at":"` + created + `"}`,
			`{"v":1,"id":"m5","op":"add","type":"ban","scope":"ip","value":"` + by + `","until":"` + until + `","origin":"x","created_at":"` + created + `","extra":1}`,
			`{"v":1,"id":"m6","op":"nuke","type":"ban","scope":"ip","value":"` + by + `","until":"` + until + `","origin":"x","created_at":"` + created + `"}`,
			`{"v":1,"id":"m7","op":"add","type":"ban","scope":"ip","value":"` + by + `","until":"` + until + `","origin":"x","created_at":"` + created + `","reason":"` + strings.Repeat("A", 5000) + `"}`,
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, v := range bad {
			r := &kgo.Record{Key: []byte("ip:" + by), Value: []byte(v)}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatalf("produce: %v", err)
			}
		}
		// A valid ban after them shows the daemon read past them.
		sentinel := e.attacker(1, 4)
		e.publish(ban(host(sentinel.src), time.Hour))
		e.waitState(sentinel, false, 5*time.Second)
		if !b.running() {
			t.Fatal("fw-bouncer exited on malformed decisions")
		}
		e.requireAll(e.bystander(4), true)
		e.requireAll(e.bystander(6), true)
		e.requireAll(e.attacker(0, 4), true)
		e.publish(unban(host(sentinel.src)))
		e.waitState(sentinel, true, 5*time.Second)
	})

	step("restart keeps bans in force and reconciles to the topic", func(t *testing.T) {
		kept, dropped := e.attacker(0, 4), e.attacker(1, 4)
		kept6 := e.attacker(0, 6)
		e.publish(ban(host(kept.src), time.Hour), ban(host(kept6.src), time.Hour), ban(host(dropped.src), time.Hour))
		e.waitState(kept, false, 5*time.Second)
		e.waitState(kept6, false, 5*time.Second)
		e.waitState(dropped, false, 5*time.Second)

		// Probe the kept bans all through the restart.
		var leaks atomic.Int64
		var probes atomic.Int64
		stop := make(chan struct{})
		probing := make(chan struct{})
		go func() {
			defer close(probing)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, p := range []peer{kept, kept6} {
					if e.probe(p, netns.ICMP) == nil || e.probe(p, netns.UDP) == nil {
						leaks.Add(1)
					}
					probes.Add(2)
				}
			}
		}()
		b.stop(t)
		// While the daemon is down, one ban is withdrawn.
		e.publish(unban(host(dropped.src)))
		time.Sleep(500 * time.Millisecond)
		b = e.startBouncer()
		b.waitLog(t, 0, 30*time.Second, "reconciled to the feed's snapshot")
		e.waitState(dropped, true, 5*time.Second)
		close(stop)
		<-probing
		if n := leaks.Load(); n > 0 {
			t.Errorf("%d of %d probes of kept bans were answered during the restart", n, probes.Load())
		}
		if probes.Load() < 4 {
			t.Errorf("only %d probes ran during the restart", probes.Load())
		}
		e.requireAll(kept, false)
		e.requireAll(kept6, false)
		e.requireAll(dropped, true)
	})

	step("expiry unblocks with fw-bouncer stopped", func(t *testing.T) {
		p := e.attacker(1, 6)
		d := ban(host(p.src), 3*time.Second)
		e.publish(d)
		e.waitState(p, false, 2*time.Second)
		b.stop(t)
		e.requireAll(p, false)
		e.waitState(p, true, time.Until(d.Until)+3*time.Second)
		if early := time.Until(d.Until); early > 100*time.Millisecond {
			t.Errorf("unblocked %s before the ban's expiry", early)
		}
		e.requireAll(p, true)
		b = e.startBouncer()
		b.waitLog(t, 0, 30*time.Second, "reconciled to the feed's snapshot")
	})

	step("cleanup removes everything", func(t *testing.T) {
		b.stop(t)
		out := e.top.Victim.MustRun(t, bin(t, "fw-bouncer"), "cleanup", "--mode", m.name, "--config", e.cfgPath)
		if !strings.Contains(out, m.name+": removed") {
			t.Errorf("cleanup said %q", out)
		}
		if err := m.leftovers(e); err != nil {
			t.Error(err)
		}
		// The bans are still on the topic, but nothing enforces them now.
		e.requireAll(e.attacker(0, 4), true)
		e.requireAll(e.attacker(0, 6), true)
	})
}

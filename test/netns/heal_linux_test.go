package netns_test

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/test/netns"
)

// wipe is one way someone else removes fw-bouncer's enforcement.
type wipe struct {
	name string
	// do removes the enforcement; it runs in the test, with the victim
	// namespace at hand. It returns false when the kernel refused the
	// removal, which leaves nothing to restore.
	do func(t *testing.T, e *env) bool
	// cause is the restores_total cause fw-bouncer must report.
	cause string
}

// wipes lists, per mode, the removals a running fw-bouncer must undo
// within a second.
var wipes = map[string][]wipe{
	"nftables": {
		{name: "nft flush ruleset", cause: "table_removed", do: func(t *testing.T, e *env) bool {
			e.top.Victim.MustRun(t, "nft", "flush", "ruleset")
			return true
		}},
		{name: "nft delete table", cause: "table_removed", do: func(t *testing.T, e *env) bool {
			e.top.Victim.MustRun(t, "nft", "delete", "table", "inet", "portcullis")
			return true
		}},
		{name: "nft flush chain input", cause: "rule_removed", do: func(t *testing.T, e *env) bool {
			e.top.Victim.MustRun(t, "nft", "flush", "chain", "inet", "portcullis", "input")
			return true
		}},
		{name: "nft delete element", cause: "element_removed", do: func(t *testing.T, e *env) bool {
			out := e.top.Victim.MustRun(t, "nft", "list", "sets", "inet")
			set := regexp.MustCompile(`set (addr4-\d+)`).FindStringSubmatch(out)
			if set == nil {
				t.Fatalf("no addr4 set in:\n%s", out)
			}
			e.top.Victim.MustRun(t, "nft", "delete", "element", "inet", "portcullis", set[1],
				"{ "+e.attacker(0, 4).src.String()+" }")
			return true
		}},
	},
	"xdp": {
		{name: "ip link set xdp off", cause: "link_detached", do: func(t *testing.T, e *env) bool {
			// The program is attached through a bpf_link, which the kernel
			// protects from a netlink detach; should it ever allow one,
			// the bouncer restores it.
			out, err := e.top.Victim.Run("ip", "link", "set", "dev", netns.IfaceVictimA, "xdp", "off")
			if err != nil {
				t.Logf("kernel refused: %v %s", err, out)
				return false
			}
			return true
		}},
		{name: "bpftool link detach", cause: "link_detached", do: func(t *testing.T, e *env) bool {
			e.top.Victim.MustRun(t, "bpftool", "link", "detach", "pinned", e.pinPath+"/link_"+netns.IfaceVictimA)
			return true
		}},
		{name: "bpftool map delete", cause: "entry_removed", do: func(t *testing.T, e *env) bool {
			key := strings.ReplaceAll(e.attacker(0, 4).src.String(), ".", " ")
			e.top.Victim.MustRun(t, "bpftool", append([]string{"map", "delete", "pinned", e.pinPath + "/portcullis_ip4", "key"},
				strings.Fields(key)...)...)
			return true
		}},
		{name: "interface deleted and created again", cause: "link_detached", do: func(t *testing.T, e *env) bool {
			e.top.Victim.MustRun(t, "ip", "link", "del", netns.IfaceVictimA)
			netns.Link(t, e.top.Victim, netns.IfaceVictimA, e.top.Attacker, netns.IfaceAttacker)
			netns.AddAddrs(t, e.top.Victim, netns.IfaceVictimA,
				netip.PrefixFrom(e.top.VictimA4, 24), netip.PrefixFrom(e.top.VictimA6, 64))
			var att []netip.Prefix
			for _, a := range e.top.Attacker4 {
				att = append(att, netip.PrefixFrom(a, 24))
			}
			for _, a := range e.top.Attacker6 {
				att = append(att, netip.PrefixFrom(a, 64))
			}
			netns.AddAddrs(t, e.top.Attacker, netns.IfaceAttacker, att...)
			return true
		}},
	},
	"iptables": {
		{name: "iptables -F", cause: "rule_removed", do: func(t *testing.T, e *env) bool {
			e.top.Victim.MustRun(t, "iptables", "-F")
			return true
		}},
		{name: "iptables -F and ipset destroy", cause: "set_removed", do: func(t *testing.T, e *env) bool {
			e.top.Victim.MustRun(t, "iptables", "-F")
			e.top.Victim.MustRun(t, "iptables", "-X", "PORTCULLIS")
			e.top.Victim.MustRun(t, "ipset", "destroy", "portcullis-v4")
			return true
		}},
		{name: "jump deleted from INPUT", cause: "jump_removed", do: func(t *testing.T, e *env) bool {
			e.top.Victim.MustRun(t, "iptables", "-D", "INPUT", "-j", "PORTCULLIS")
			return true
		}},
	},
}

// TestFWBouncerHeals removes fw-bouncer's enforcement in each way an
// operator, a firewall reload or a container runtime does, and requires the
// banned source to be dropped again within a second (asserted with real
// packets), the restore to be logged and counted, and the bouncer to stand
// down rather than fight a deliberate `fw-bouncer cleanup`.
func TestFWBouncerHeals(t *testing.T) {
	netns.RequireRoot(t)
	netns.RequireTool(t, "nft", "iptables", "ipset", "bpftool")
	for _, m := range modes {
		ws := wipes[m.name]
		if len(ws) == 0 {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m)
			b := e.startBouncer()
			b.waitLog(t, 0, 30*time.Second, "reconciled to the feed's snapshot")
			a4, a6 := e.attacker(0, 4), e.attacker(0, 6)
			e.publish(ban(host(a4.src), time.Hour), ban(host(a6.src), time.Hour))
			e.waitState(a4, false, 5*time.Second)
			e.waitState(a6, false, 5*time.Second)

			for _, w := range ws {
				ok := t.Run(w.name, func(t *testing.T) {
					e.t = t
					defer func() { e.t = e.root }()
					mk := b.mark()
					before := metricValueOr0(e.metrics(), restoresSeries(m.name, w.cause))
					if !w.do(t, e) {
						e.requireAll(a4, false)
						e.requireAll(e.attacker(1, 4), true)
						return
					}
					took := waitBlocked(t, e, a4, 5*time.Second)
					b.waitLog(t, mk, 5*time.Second, "restored enforcement changed from outside", "cause="+w.cause)
					t.Logf("%s: %s dropped again %s after the wipe", w.name, a4.src, took.Round(time.Millisecond))
					if took > time.Second {
						t.Errorf("%s: %s dropped again only %s after the wipe, want within 1s", w.name, a4.src, took)
					}
					e.requireAll(a4, false)
					e.requireAll(a6, false)
					// The link works: the attacker's other address passes.
					e.requireAll(e.attacker(1, 4), true)
					e.requireAll(e.bystander(4), true)
					if got := metricValueOr0(e.metrics(), restoresSeries(m.name, w.cause)); got != before+1 {
						t.Errorf("%s = %v, want %v", restoresSeries(m.name, w.cause), got, before+1)
					}
				})
				if !ok {
					t.FailNow()
				}
			}

			// A deliberate cleanup is not undone: the daemon stops.
			mk := b.mark()
			e.top.Victim.MustRun(t, bin(t, "fw-bouncer"), "cleanup", "--mode", m.name, "--config", e.cfgPath)
			b.waitLog(t, mk, 5*time.Second, "fw-bouncer cleanup removed the enforcement")
			select {
			case <-b.done:
			case <-time.After(10 * time.Second):
				t.Fatal("fw-bouncer still running 10s after cleanup")
			}
			e.requireAll(a4, true)
			if err := m.leftovers(e); err != nil {
				t.Errorf("after cleanup with the daemon running: %v", err)
			}
		})
	}
}

func restoresSeries(mode, cause string) string {
	return fmt.Sprintf(`portcullis_fw_bouncer_restores_total{backend=%q,cause=%q}`, mode, cause)
}

func metricValueOr0(metrics, series string) float64 {
	v, _ := metricValue(metrics, series)
	return v
}

// waitBlocked probes p with ICMP until a probe goes unanswered and returns
// when that probe was sent, counted from the call. A wipe lets packets
// through until the restore; a probe sent after the restore is dropped.
func waitBlocked(t *testing.T, e *env, p peer, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	dst, err := e.top.VictimFor(p.src)
	if err != nil {
		t.Fatal(err)
	}
	for {
		sent := time.Since(start)
		if err := p.ns.Probe(netns.ICMP, p.src, dst, e.srv, 100*time.Millisecond); err != nil {
			return sent
		}
		if sent > timeout {
			t.Fatalf("%s still answered %s after the wipe", p.src, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

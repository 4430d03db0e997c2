package decisionfeed

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var tStand = time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)

// add returns the change of an add by origin on value.
func add(value, origin string, typ Type, dur time.Duration) *change {
	d := NewDecision(OpAdd, typ, netip.MustParsePrefix(value), dur, origin, tStand)
	return &change{d: d}
}

// del returns the change of a delete by origin on value.
func del(value, origin string) *change {
	d := NewDecision(OpDelete, TypeBan, netip.MustParsePrefix(value), 0, origin, tStand)
	return &change{d: d, del: true}
}

// tomb returns the change a tombstone of key makes.
func tomb(t *testing.T, key string) *change {
	t.Helper()
	k, err := parseKey([]byte(key), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	return &change{d: Decision{Op: OpDelete, Scope: k.scope, Value: k.value, Origin: k.origin, Legacy: k.legacy}, del: true}
}

func legacy(c *change) *change { c.d.Legacy = true; return c }

// liveOf renders the enforced decisions of s as sorted "target type until origin".
func liveOf(s *standingSet, now time.Time) []string {
	var out []string
	for d := range s.liveSeq(now.UnixNano()) {
		out = append(out, fmt.Sprintf("%s %s %s %s", d.Target(), d.Type, d.Until.Sub(tStand), d.Origin))
	}
	slices.Sort(out)
	return out
}

// TestUnion checks the rules bouncers enforce by: several producers'
// decisions on one address coexist, the strongest remedy wins until the
// latest expiry, and a delete withdraws its own key only.
func TestUnion(t *testing.T) {
	now := tStand.Add(time.Minute)
	for _, c := range []struct {
		name    string
		changes func(t *testing.T) []*change
		want    []string
		noops   int
	}{
		{"crowdsec delete does not lift the cli ban", func(*testing.T) []*change {
			return []*change{add("192.0.2.77/32", "cli", TypeBan, 24*time.Hour), del("192.0.2.77/32", "crowdsec")}
		}, []string{"ip:192.0.2.77 ban 24h0m0s cli"}, 1},
		{"list drop does not lift the engine ban", func(*testing.T) []*change {
			return []*change{
				add("198.51.100.0/24", "lists:drop", TypeBan, 24*time.Hour), add("198.51.100.0/24", "engine", TypeBan, 4*time.Hour),
				del("198.51.100.0/24", "lists:drop"),
			}
		}, []string{"range:198.51.100.0/24 ban 4h0m0s engine"}, 0},
		{"engine delete does not lift the cli ban", func(*testing.T) []*change {
			return []*change{add("2001:db8::1/128", "engine", TypeBan, 4*time.Hour), add("2001:db8::1/128", "cli", TypeBan, time.Hour),
				del("2001:db8::1/128", "engine")}
		}, []string{"ip:2001:db8::1 ban 1h0m0s cli"}, 0},
		{"strongest remedy until the latest expiry", func(*testing.T) []*change {
			return []*change{add("192.0.2.1/32", "engine", TypeCaptcha, 48*time.Hour), add("192.0.2.1/32", "cli", TypeBan, time.Hour),
				add("192.0.2.1/32", "lists:x", TypeThrottle, 24*time.Hour)}
		}, []string{"ip:192.0.2.1 ban 48h0m0s cli"}, 0},
		{"an expired decision does not count", func(*testing.T) []*change {
			return []*change{add("192.0.2.1/32", "engine", TypeBan, 30*time.Second), add("192.0.2.1/32", "cli", TypeCaptcha, time.Hour)}
		}, []string{"ip:192.0.2.1 captcha 1h0m0s cli"}, 0},
		{"a producer's re-add replaces its own only", func(*testing.T) []*change {
			return []*change{add("192.0.2.1/32", "engine", TypeBan, 4*time.Hour), add("192.0.2.1/32", "cli", TypeBan, time.Hour),
				add("192.0.2.1/32", "engine", TypeBan, 2*time.Hour)}
		}, []string{"ip:192.0.2.1 ban 2h0m0s engine"}, 0},
		{"operator withdraws every origin", func(*testing.T) []*change {
			return []*change{add("192.0.2.1/32", "engine", TypeBan, 4*time.Hour), add("192.0.2.1/32", "cli", TypeBan, time.Hour),
				del("192.0.2.1/32", "engine"), del("192.0.2.1/32", "cli")}
		}, nil, 0},
		{"v1 and new-format records for one address", func(*testing.T) []*change {
			return []*change{legacy(add("192.0.2.9/32", "engine", TypeBan, 4*time.Hour)), add("192.0.2.9/32", "engine", TypeBan, time.Hour),
				del("192.0.2.9/32", "engine")}
		}, []string{"ip:192.0.2.9 ban 4h0m0s engine"}, 0},
		{"legacy delete withdraws the legacy key only", func(*testing.T) []*change {
			return []*change{legacy(add("192.0.2.9/32", "engine", TypeBan, 4*time.Hour)), add("192.0.2.9/32", "cli", TypeBan, time.Hour),
				legacy(del("192.0.2.9/32", "cli"))}
		}, []string{"ip:192.0.2.9 ban 1h0m0s cli"}, 0},
		{"tombstones", func(t *testing.T) []*change {
			return []*change{add("192.0.2.1/32", "engine", TypeBan, 4*time.Hour), legacy(add("192.0.2.1/32", "cli", TypeBan, 8*time.Hour)),
				tomb(t, "ip:192.0.2.1"), tomb(t, "ip:192.0.2.1"), tomb(t, "ip:192.0.2.2@engine"), add("192.0.2.3/32", "cli", TypeBan, time.Hour),
				tomb(t, "ip:192.0.2.3@cli")}
		}, []string{"ip:192.0.2.1 ban 4h0m0s engine"}, 2},
		{"a delete from an origin that holds nothing", func(*testing.T) []*change {
			return []*change{del("192.0.2.1/32", "engine"), add("192.0.2.1/32", "cli", TypeBan, time.Hour), del("192.0.2.1/32", "engine")}
		}, []string{"ip:192.0.2.1 ban 1h0m0s cli"}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, hash := range []string{"real hash", "all collide"} {
				s := newStandingSet(4, nil)
				if hash == "all collide" {
					s.hashFn = func(string) uint64 { return 7 }
				}
				noops := 0
				for _, ch := range c.changes(t) {
					if _, _, noop := s.put(ch); noop {
						noops++
					}
				}
				if got := liveOf(s, now); strings.Join(got, "\n") != strings.Join(c.want, "\n") {
					t.Fatalf("%s: live\n%s\nwant\n%s", hash, strings.Join(got, "\n"), strings.Join(c.want, "\n"))
				}
				if noops != c.noops {
					t.Fatalf("%s: %d no-op deletes, want %d", hash, noops, c.noops)
				}
			}
		})
	}
}

// TestApplyEmitsEnforcedChanges checks what streaming hands bouncers: the
// new enforced decision when it changes, a delete when nothing stands,
// nothing when a change leaves the enforced decision as it was.
func TestApplyEmitsEnforcedChanges(t *testing.T) {
	s := newStandingSet(4, nil)
	now := tStand.Add(time.Second).UnixNano()
	step := func(c *change, want string) {
		t.Helper()
		out, ok, _ := s.apply(c, now)
		got := "-"
		if ok {
			got = fmt.Sprintf("%s %s %s %s", out.Op, out.Target(), out.Type, out.Origin)
			if out.Op == OpAdd {
				got += " " + out.Until.Sub(tStand).String()
			}
		}
		if got != want {
			t.Fatalf("after %s %s@%s: %q, want %q", c.d.Op, c.d.Value, c.d.Origin, got, want)
		}
	}
	step(add("192.0.2.1/32", "cli", TypeBan, time.Hour), "add ip:192.0.2.1 ban cli 1h0m0s")
	step(del("192.0.2.1/32", "crowdsec"), "-")
	step(add("192.0.2.1/32", "engine", TypeCaptcha, 4*time.Hour), "add ip:192.0.2.1 ban cli 4h0m0s")
	step(add("192.0.2.1/32", "engine", TypeCaptcha, 4*time.Hour), "-")
	step(del("192.0.2.1/32", "cli"), "add ip:192.0.2.1 captcha engine 4h0m0s")
	step(del("192.0.2.1/32", "engine"), "delete ip:192.0.2.1 captcha engine")
	step(del("192.0.2.1/32", "engine"), "-")
	step(add("192.0.2.2/32", "cli", TypeBan, time.Hour), "add ip:192.0.2.2 ban cli 1h0m0s")
	step(add("192.0.2.2/32", "cli", TypeBan, time.Millisecond), "delete ip:192.0.2.2 ban cli") // re-added already expired
	if s.keys != 1 || s.live != 1 {
		t.Fatalf("%d keys on %d addresses standing, want the expired one until the sweep", s.keys, s.live)
	}
	s.sweep(now)
	indexed := 0
	for _, e := range s.idx {
		if e != 0 {
			indexed++
		}
	}
	if s.keys != 0 || s.live != 0 || indexed != 0 || len(s.reasons)+len(s.ids) != 0 {
		t.Fatalf("after the sweep: %d keys, %d addresses, %d indexed, %d side", s.keys, s.live, indexed, len(s.reasons)+len(s.ids))
	}
}

// TestAcceptFiltersBeforeTheUnion checks that a refused decision does not
// count, and that a refused re-add withdraws what its key held.
func TestAcceptFiltersBeforeTheUnion(t *testing.T) {
	onlyBans := func(d *Decision) bool { return d.Type == TypeBan && (d.Origin == "engine" || d.Origin == "cli") }
	s := newStandingSet(4, onlyBans)
	for _, c := range []*change{
		add("192.0.2.1/32", "engine", TypeBan, time.Hour), add("192.0.2.1/32", "lists:x", TypeBan, 48*time.Hour),
		add("192.0.2.2/32", "cli", TypeCaptcha, time.Hour), add("192.0.2.3/32", "cli", TypeBan, time.Hour),
		add("192.0.2.3/32", "cli", TypeCaptcha, time.Hour),
	} {
		s.put(c)
	}
	if got, want := liveOf(s, tStand), []string{"ip:192.0.2.1 ban 1h0m0s engine"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("live %v, want %v", got, want)
	}
}

// TestStandingKeepsEverything checks that a decision comes back from the
// compact form as it went in, reason, odd id and legacy mark included, and
// that Standing marks the enforced one.
func TestStandingKeepsEverything(t *testing.T) {
	s := newStandingSet(4, nil)
	a := add("2001:db8::/48", "engine", TypeBan, 4*time.Hour)
	a.d.Scenario, a.d.Country, a.d.Host, a.d.Reason = "crowdsecurity/ssh-bf", "RU", "web-1", "brute force über ssh"
	b := legacy(add("2001:db8::/48", "cli", TypeCaptcha, 8*time.Hour))
	b.d.ID = "odd-id-1"
	s.put(a)
	s.put(b)
	got := s.standing(tStand.UnixNano())
	slices.SortFunc(got, func(x, y Standing) int { return strings.Compare(x.Key(), y.Key()) })
	if len(got) != 2 || !sameDecision(got[0].Decision, b.d) || !sameDecision(got[1].Decision, a.d) ||
		got[0].Enforced || !got[1].Enforced || got[0].Key() != "range:2001:db8::/48" {
		t.Fatalf("standing %+v\nwant %+v and %+v", got, b.d, a.d)
	}
}

// TestBackoff checks the backoff doubles from the minimum, stays within
// [d/2, d] and is capped.
func TestBackoff(t *testing.T) {
	s, err := NewSubscriber(SubscriberConfig{Brokers: []string{"x:1"}, BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for attempt, d := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		d *= time.Millisecond
		for range 50 {
			if b := s.backoff(attempt); b < d/2 || b > d {
				t.Fatalf("attempt %d: backoff %s outside [%s, %s]", attempt, b, d/2, d)
			}
		}
	}
	if s.backoff(1000) > time.Second {
		t.Fatal("backoff not capped")
	}
	if _, err := NewSubscriber(SubscriberConfig{Brokers: []string{"x:1"}, BackoffMin: time.Second, BackoffMax: time.Millisecond}); err == nil {
		t.Fatal("max below min accepted")
	}
}

// TestIndexAgainstMap drives the open-addressing index with adds and
// deletes under hashes that pile values into a few clusters (wrapping
// round the end of the table, and growing it), and checks every lookup
// against a map after each step.
func TestIndexAgainstMap(t *testing.T) {
	for _, buckets := range []uint64{1, 3, 1 << 62} {
		s := newStandingSet(4, nil)
		s.hashFn = func(v string) uint64 { return maphash.String(s.seed, v)%buckets + 13 } // 13: near the end of 16 slots
		model := map[string]bool{}
		rnd := rand.New(rand.NewPCG(1, buckets))
		for step := range 3000 {
			v := fmt.Sprintf("192.0.2.%d", rnd.IntN(60))
			c := add(v+"/32", "o", TypeBan, time.Hour)
			if rnd.IntN(2) == 0 {
				c = del(v+"/32", "o")
				delete(model, v)
			} else {
				model[v] = true
			}
			s.put(c)
			for i := range 60 {
				v := fmt.Sprintf("192.0.2.%d", i)
				if got := s.find(v) >= 0; got != model[v] {
					t.Fatalf("buckets %d step %d: find(%s) = %v, want %v", buckets, step, v, got, model[v])
				}
			}
			if s.live != len(model) {
				t.Fatalf("buckets %d step %d: %d addresses, want %d", buckets, step, s.live, len(model))
			}
		}
	}
}

// BenchmarkStandingPut measures the rebuild's per-message work on the set:
// one add per address, three producers on every tenth address.
func BenchmarkStandingPut(b *testing.B) {
	const n = 1 << 16
	cs := make([]*change, n)
	for i := range cs {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		origin := "engine"
		if i%10 == 0 {
			a = netip.AddrFrom4([4]byte{10, 0, 0, byte(i % 250)})
			origin = []string{"engine", "cli", "lists:x"}[i%3]
		}
		cs[i] = add(netip.PrefixFrom(a, 32).String(), origin, TypeBan, time.Hour)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += n {
		s := newStandingSet(n, nil)
		for j := 0; j < n && i+j < b.N; j++ {
			s.put(cs[j])
		}
	}
}

// BenchmarkStandingApply measures the streaming path: apply a change and
// work out what the bouncers are told.
func BenchmarkStandingApply(b *testing.B) {
	s := newStandingSet(1024, nil)
	now := tStand.UnixNano()
	cs := []*change{
		add("192.0.2.1/32", "engine", TypeBan, time.Hour), add("192.0.2.1/32", "cli", TypeCaptcha, 2*time.Hour),
		del("192.0.2.1/32", "engine"), del("192.0.2.1/32", "cli"),
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.apply(cs[i%len(cs)], now)
	}
}

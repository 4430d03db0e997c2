package decisionfeed

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"
)

// TestLiveSetCollisions runs the live set with a hash under which every
// value collides, so every key past the first lives in the spill map, and
// checks the result is still exact.
func TestLiveSetCollisions(t *testing.T) {
	for _, name := range []string{"real hash", "all collide"} {
		t.Run(name, func(t *testing.T) {
			l := newLiveSet(4)
			if name == "all collide" {
				l.hashFn = func(string) uint64 { return 42 }
			}
			now := time.Now()
			want := map[string]string{}
			mk := func(i int, op Op, dur time.Duration) change {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32)
				d := NewDecision(op, TypeBan, p, dur, "test", now)
				return change{value: d.Value, d: d, del: op == OpDelete}
			}
			handOver := now.Add(time.Second)
			apply := func(c change) {
				l.apply(c)
				if c.del || c.d.Expired(handOver) {
					delete(want, c.value)
				} else {
					want[c.value] = c.d.ID
				}
			}
			for i := range 20 {
				apply(mk(i, OpAdd, time.Hour))
			}
			for i := 0; i < 20; i += 2 {
				apply(mk(i, OpDelete, 0))
			}
			for i := 0; i < 20; i += 4 {
				apply(mk(i, OpAdd, time.Hour)) // re-add, into a freed slot
			}
			apply(mk(1, OpAdd, time.Hour)) // replace
			apply(mk(3, OpAdd, time.Millisecond))
			apply(mk(50, OpDelete, 0)) // delete of an unknown key
			live, keys := l.handOver(handOver)
			got := map[string]string{}
			for _, d := range live {
				if _, dup := got[d.Value]; dup {
					t.Fatalf("%s twice in the snapshot", d.Value)
				}
				got[d.Value] = d.ID
			}
			if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
				t.Fatalf("snapshot\n%v\nwant\n%v", sorted(got), sorted(want))
			}
			if name == "real hash" && keys.len() != len(want) {
				t.Fatalf("key set holds %d keys, want %d", keys.len(), len(want))
			}
		})
	}
}

func sorted(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
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

package scenario_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/config/scenarios"
	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

var w0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// shipped returns the shipped scenario called name, alone in a set.
func shipped(t *testing.T, name string) *scenario.Set {
	t.Helper()
	scs, err := scenario.LoadFS(scenarios.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scs {
		if s.Name == name {
			return scenario.NewSet([]*scenario.Scenario{s}, scenario.Options{})
		}
	}
	t.Fatalf("no shipped scenario %s", name)
	return nil
}

// The seed's thresholds are "N in T". For each shipped scenario that
// states one, N-1 events inside T are silent and the N-th fires, whether
// the attacker is steady (evenly spread over just under T) or bursty (all
// N within a second after a pause); N events spread over exactly T stay
// silent.
func TestWindowThresholds(t *testing.T) {
	src := netip.MustParseAddr("203.0.113.9")
	cases := []struct {
		name string
		n    int
		win  time.Duration
		ev   func(i int, at time.Time) *event.Event
	}{
		{"portcullis/http-l7-flood", 1000, 10 * time.Second, func(i int, at time.Time) *event.Event {
			return &event.Event{Time: at, Source: src, Type: event.TypeHTTPAccess, Method: "GET", Path: "/", Status: 200}
		}},
		{"crowdsecurity/ssh-bf", 5, time.Minute, func(i int, at time.Time) *event.Event {
			return &event.Event{Time: at, Source: src, Type: event.TypeSSHFailedAuth, User: "root"}
		}},
		{"crowdsecurity/http-bf-wordpress_bf", 10, time.Minute, func(i int, at time.Time) *event.Event {
			return &event.Event{Time: at, Source: src, Type: event.TypeHTTPAccess, Method: "POST", Path: "/wp-login.php", Status: 200}
		}},
		{"crowdsecurity/http-crawl-non_statics", 50, 10 * time.Second, func(i int, at time.Time) *event.Event {
			return &event.Event{Time: at, Source: src, Type: event.TypeHTTPAccess, Method: "GET", Path: fmt.Sprintf("/page/%d", i), Status: 200}
		}},
	}
	for _, c := range cases {
		shapes := []struct {
			name string
			at   func(i, n int) time.Time
			fire bool
		}{
			// steady: n events over 99% of the window.
			{"steady", func(i, n int) time.Time { return w0.Add(time.Duration(i) * (c.win * 99 / 100) / time.Duration(n-1)) }, true},
			// bursty: one early event, a pause, then the rest within 1s,
			// the whole inside the window.
			{"bursty", func(i, n int) time.Time {
				if i == 0 {
					return w0
				}
				return w0.Add(c.win - 2*time.Second + time.Duration(i)*time.Second/time.Duration(n))
			}, true},
			// spread over exactly the window: never n inside it.
			{"spread", func(i, n int) time.Time { return w0.Add(time.Duration(i) * c.win / time.Duration(n-1)) }, false},
		}
		for _, sh := range shapes {
			t.Run(c.name+"/"+sh.name, func(t *testing.T) {
				set := shipped(t, c.name)
				var out []scenario.Overflow
				for i := range c.n - 1 {
					out = set.Event(c.ev(i, sh.at(i, c.n)), out)
				}
				if len(out) != 0 {
					t.Fatalf("%d events: %d overflows, want none (N-1 is silent)", c.n-1, len(out))
				}
				out = set.Event(c.ev(c.n-1, sh.at(c.n-1, c.n)), out)
				if sh.fire && len(out) != 1 {
					t.Fatalf("event %d: %d overflows, want 1", c.n, len(out))
				}
				if !sh.fire && len(out) != 0 {
					t.Fatalf("event %d spread over the full window: %d overflows, want 0", c.n, len(out))
				}
				if sh.fire && out[0].Events != c.n {
					t.Errorf("overflow counts %d events, want %d", out[0].Events, c.n)
				}
			})
		}
	}
}

// A repeated page does not count towards the crawl's distinct pages.
func TestWindowDistinct(t *testing.T) {
	set := shipped(t, "crowdsecurity/http-crawl-non_statics")
	src := netip.MustParseAddr("198.51.100.3")
	var out []scenario.Overflow
	for i := range 200 {
		out = set.Event(&event.Event{Time: w0.Add(time.Duration(i) * time.Millisecond), Source: src,
			Type: event.TypeHTTPAccess, Path: fmt.Sprintf("/p%d", i%49), Status: 200}, out)
	}
	if len(out) != 0 {
		t.Fatalf("49 distinct pages fetched 200 times: %d overflows, want 0", len(out))
	}
	out = set.Event(&event.Event{Time: w0.Add(time.Second), Source: src, Type: event.TypeHTTPAccess, Path: "/p49", Status: 200}, out)
	if len(out) != 1 {
		t.Fatalf("50th distinct page: %d overflows, want 1", len(out))
	}
}

func TestWindowParseErrors(t *testing.T) {
	for _, c := range []struct{ y, want string }{
		{"name: a\ntype: window\nfilter: Status == 1\nwindow: 1s\n", "test.yaml:1: count: 0, a window needs at least 1"},
		{"name: a\ntype: window\nfilter: Status == 1\ncount: 3\n", "test.yaml:1: window: must be a positive duration up to 30 days"},
		{"name: a\ntype: leaky\nfilter: Status == 1\ncapacity: 1\nleakspeed: 1s\ncount: 3\n", "test.yaml:6: count/window: used by a window scenario only"},
	} {
		_, err := scenario.Parse("test.yaml", []byte(c.y))
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: got %v, want %s", c.y, err, c.want)
		}
	}
}

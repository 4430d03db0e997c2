package intel

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func liveAdd(p, origin, scenario string, typ decisionfeed.Type, dur time.Duration, at time.Time) decisionfeed.Decision {
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, typ, netip.MustParsePrefix(p), dur, origin, at)
	d.Scenario = scenario
	return d
}

func values(ds []decisionfeed.Decision) string {
	var vs []string
	for _, d := range ds {
		vs = append(vs, string(d.Op)+" "+d.Value)
	}
	slices.Sort(vs)
	return strings.Join(vs, ", ")
}

func TestPlan(t *testing.T) {
	l := List{Name: "drop", Type: decisionfeed.TypeBan, Duration: 24 * time.Hour}
	own := Origin("drop")
	now := t0.Add(2 * time.Hour)
	legacy := liveAdd("192.0.2.50/32", LegacyOrigin, "blocklist/drop", decisionfeed.TypeBan, 24*time.Hour, t0) // written by an older import
	legacy.Legacy = true
	otherLegacy := liveAdd("192.0.2.51/32", LegacyOrigin, "blocklist/other", decisionfeed.TypeBan, 24*time.Hour, t0)
	otherLegacy.Legacy = true
	live := []decisionfeed.Decision{
		liveAdd("192.0.2.1/32", own, "blocklist/drop", decisionfeed.TypeBan, 24*time.Hour, t0),                // kept
		liveAdd("192.0.2.2/32", own, "blocklist/drop", decisionfeed.TypeBan, 24*time.Hour, t0),                // dropped from the list
		liveAdd("198.51.100.0/24", own, "blocklist/drop", decisionfeed.TypeBan, 13*time.Hour, t0),             // 11h left < 12h: refreshed
		liveAdd("203.0.113.0/24", Origin("other"), "blocklist/other", decisionfeed.TypeBan, 48*time.Hour, t0), // another list: its own key
		liveAdd("203.0.113.9/32", "engine", "crowdsecurity/ssh-bf", decisionfeed.TypeBan, 4*time.Hour, t0),    // engine: its own key
		liveAdd("2001:db8::/48", "cli", "", decisionfeed.TypeBan, 48*time.Hour, t0),                           // operator: its own key
		liveAdd("10.9.9.9/32", Origin("other"), "blocklist/other", decisionfeed.TypeBan, time.Hour, t0),       // another list: untouched
		liveAdd("10.9.9.10/32", "engine", "crowdsecurity/ssh-bf", decisionfeed.TypeBan, time.Hour, t0),        // not listed, not the list's: untouched
		legacy, otherLegacy,
	}
	listed := prefixes(t, "192.0.2.1/32", "198.51.100.0/24", "203.0.113.0/24", "203.0.113.9/32", "2001:db8::/48", "192.0.2.77/32", "::ffff:192.0.2.77/128", "192.0.2.50/32")
	ch, err := Plan(l, listed, live, now)
	if err != nil {
		t.Fatal(err)
	}
	adds := ch.AddDecisions(0, len(ch.Adds))
	if got, want := values(adds), "add 192.0.2.50, add 192.0.2.77, add 198.51.100.0/24, add 2001:db8::/48, add 203.0.113.0/24, add 203.0.113.9"; got != want {
		t.Errorf("adds: %s, want %s", got, want)
	}
	if got, want := values(ch.Deletes), "delete 192.0.2.2, delete 192.0.2.50"; got != want {
		t.Errorf("deletes: %s, want %s", got, want)
	}
	if ch.Unchanged != 1 {
		t.Errorf("unchanged %d, want 1", ch.Unchanged)
	}
	for _, d := range append(adds, ch.Deletes...) {
		wantOrigin, wantKey := own, d.Target()+"@"+own
		if d.Value == "192.0.2.50" && d.Op == decisionfeed.OpDelete {
			wantOrigin, wantKey = LegacyOrigin, d.Target() // withdrawn where the older import put it
		}
		if d.Origin != wantOrigin || d.Key() != wantKey || d.Scenario != "blocklist/drop" {
			t.Errorf("%s %s: origin %q key %q scenario %q", d.Op, d.Value, d.Origin, d.Key(), d.Scenario)
		}
		if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
			t.Errorf("%s: %v", d.Value, err)
		}
	}
	if adds[0].Until != now.Add(24*time.Hour) {
		t.Errorf("until %s, want %s", adds[0].Until, now.Add(24*time.Hour))
	}

	// An empty list deletes all of its previous content, and only that.
	ch, err = Plan(l, nil, live, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := values(ch.Deletes), "delete 192.0.2.1, delete 192.0.2.2, delete 192.0.2.50, delete 198.51.100.0/24"; got != want || len(ch.Adds) != 0 {
		t.Errorf("empty list: deletes %s, adds %v", got, ch.Adds)
	}
}

func TestListValidate(t *testing.T) {
	for _, l := range []List{
		{Name: "", Type: decisionfeed.TypeBan, Duration: time.Hour},
		{Name: "a/b", Type: decisionfeed.TypeBan, Duration: time.Hour},
		{Name: strings.Repeat("a", 65), Type: decisionfeed.TypeBan, Duration: time.Hour},
		{Name: "ok", Type: "drop", Duration: time.Hour},
		{Name: "ok", Type: decisionfeed.TypeBan, Duration: 0},
	} {
		if err := l.Validate(); err == nil {
			t.Errorf("%+v: no error", l)
		}
	}
	ok := List{Name: "firehol_level1.netset", Type: decisionfeed.TypeCaptcha, Duration: time.Hour}
	if err := ok.Validate(); err != nil {
		t.Errorf("%+v: %v", ok, err)
	}
}

func TestRecords(t *testing.T) {
	l := List{Name: "big", Type: decisionfeed.TypeBan, Duration: time.Hour}
	ps := make([]netip.Prefix, 2*ChunkPrefixes+3)
	for i := range ps {
		ps[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	rs := Records(l, "id1", ps, t0)
	if len(rs) != 3 || len(rs[0].Prefixes) != ChunkPrefixes || len(rs[2].Prefixes) != 3 ||
		rs[2].Chunk != 3 || rs[2].Chunks != 3 || rs[1].Prefixes[0] != "10.0.39.16/32" || rs[0].Duration != "1h0m0s" {
		t.Fatalf("records: %d, chunk sizes %d/%d, last %d/%d, first of 2nd %s", len(rs), len(rs[0].Prefixes), len(rs[2].Prefixes), rs[2].Chunk, rs[2].Chunks, rs[1].Prefixes[0])
	}
	if rs := Records(l, "id2", nil, t0); len(rs) != 1 || len(rs[0].Prefixes) != 0 || rs[0].Chunks != 1 {
		t.Fatalf("empty list records: %+v", rs)
	}
}

// Plan relies on decisionfeed.PrefixTarget agreeing with the key of the
// decision NewDecision builds.
func TestPrefixTargetMatchesNewDecision(t *testing.T) {
	for _, s := range []string{"192.0.2.1/32", "198.51.100.0/24", "::ffff:192.0.2.1/128", "::ffff:198.51.100.0/120", "2001:db8::/48", "2001:db8::1/128"} {
		p := netip.MustParsePrefix(s)
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, p, time.Hour, Origin("l"), t0)
		if got := decisionfeed.PrefixTarget(p); got != d.Target() {
			t.Errorf("PrefixTarget(%s) = %s, decision target %s", s, got, d.Target())
		}
	}
}

package engine

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/portcullis-ips/portcullis/config/scenarios"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/internal/enginetest"
	"github.com/portcullis-ips/portcullis/engine/parse"
	"github.com/portcullis-ips/portcullis/engine/profile"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

// recorder is a Sink that keeps what it is given.
type recorder struct {
	alerts    []Alert
	decisions []decisionfeed.Decision
}

func (r *recorder) Alert(a Alert)                    { r.alerts = append(r.alerts, a) }
func (r *recorder) Decision(d decisionfeed.Decision) { r.decisions = append(r.decisions, d) }

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func newEngine(t *testing.T, edit func(*profile.Config)) (*Engine, *recorder) {
	t.Helper()
	scs, err := scenario.LoadFS(scenarios.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	cfg := profile.DefaultConfig()
	cfg.Whitelist = append(cfg.Whitelist, "203.0.113.10")
	if edit != nil {
		edit(&cfg)
	}
	prof, err := profile.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := prof.Close(); err != nil {
			t.Error(err)
		}
	})
	rec := &recorder{}
	eng, err := New(Config{Scenarios: scs, Profiles: prof, Sink: rec, Host: "engine-1"})
	if err != nil {
		t.Fatal(err)
	}
	return eng, rec
}

func sshFails(eng *Engine, ip string, start time.Duration, n int, every time.Duration) {
	for i := range n {
		eng.Event(&event.Event{Time: t0.Add(start + time.Duration(i)*every), Source: netip.MustParseAddr(ip),
			Type: event.TypeSSHFailedAuth, Parser: "sshd", User: "root"})
	}
}

func TestSSHBruteForceAlertAndDecision(t *testing.T) {
	eng, rec := newEngine(t, nil)
	sshFails(eng, "185.220.101.5", 0, 5, time.Second)
	if len(rec.alerts) != 1 || len(rec.decisions) != 1 {
		t.Fatalf("alerts %d decisions %d, want 1 and 1", len(rec.alerts), len(rec.decisions))
	}
	a := rec.alerts[0]
	want := Alert{V: 1, IP: "185.220.101.5", Scenario: "crowdsecurity/ssh-bf", Events: 5, FirstSeen: t0,
		LastSeen: t0.Add(4 * time.Second), Decision: &AlertDecision{Type: "ban", Duration: "4h0m0s"}, Host: "engine-1"}
	if a.Decision == nil || *a.Decision != *want.Decision {
		t.Fatalf("alert decision = %+v", a.Decision)
	}
	a.Decision, want.Decision = nil, nil
	if a != want {
		t.Errorf("alert =\n %+v\nwant\n %+v", a, want)
	}
	d := rec.decisions[0]
	if d.Op != decisionfeed.OpAdd || d.Type != decisionfeed.TypeBan || d.Scope != decisionfeed.ScopeIP ||
		d.Value != "185.220.101.5" || d.Scenario != "crowdsecurity/ssh-bf" || d.Origin != "engine" || d.Host != "engine-1" ||
		d.Duration != "4h0m0s" || !d.CreatedAt.Equal(t0.Add(4*time.Second)) || !d.Until.Equal(t0.Add(4*time.Hour+4*time.Second)) {
		t.Errorf("decision = %+v", d)
	}
	if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
		t.Errorf("decision invalid: %v", err)
	}
}

func TestWhitelistedSourceIgnored(t *testing.T) {
	eng, rec := newEngine(t, nil)
	sshFails(eng, "203.0.113.10", 0, 50, time.Second)
	sshFails(eng, "127.0.0.1", 0, 50, time.Second)
	if len(rec.alerts) != 0 {
		t.Fatalf("whitelisted sources alerted: %+v", rec.alerts)
	}
	if st := eng.Stats(); st.Whitelisted != 100 || st.Scenarios.Events != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// While a scenario's decision runs, its further overflows for the same
// address are not reported; after it ends, the next one escalates.
func TestRepeatsSuppressedThenEscalated(t *testing.T) {
	eng, rec := newEngine(t, nil)
	sshFails(eng, "192.0.2.1", 0, 180, time.Second) // three minutes of guessing, past the 1m blackhole
	// ssh-bf once (its repeats suppressed), and ssh-slow-bf once, covered
	// by the running ban so without a decision of its own.
	if len(rec.alerts) != 2 || rec.alerts[0].Scenario != profile.SSHBruteForce || rec.alerts[1].Scenario != profile.SSHSlowBruteForce ||
		rec.alerts[1].Decision != nil || len(rec.decisions) != 1 {
		t.Fatalf("alerts = %+v", rec.alerts)
	}
	if st := eng.Stats(); st.Repeats == 0 {
		t.Errorf("no repeat counted: %+v", st)
	}
	sshFails(eng, "192.0.2.1", 5*time.Hour, 5, time.Second) // back after the 4h ban
	if len(rec.decisions) != 2 || rec.decisions[1].Duration != "8h0m0s" {
		t.Fatalf("second offence: %+v", rec.decisions)
	}
	// Outside the escalation window (a week) the count starts again.
	sshFails(eng, "192.0.2.1", 200*time.Hour, 5, time.Second)
	if len(rec.decisions) != 3 || rec.decisions[2].Duration != "4h0m0s" {
		t.Fatalf("offence after the window: %+v", rec.decisions[2:])
	}
}

// A shorter decision never replaces a longer one on the same key.
func TestShorterDecisionNotPublished(t *testing.T) {
	eng, rec := newEngine(t, nil)
	ip := netip.MustParseAddr("192.0.2.9")
	eng.Event(&event.Event{Time: t0, Source: ip, Type: event.TypeHTTPAccess, Path: "/cgi-bin/.%2e/.%2e/etc/passwd", Status: 400})
	sshFails(eng, "192.0.2.9", time.Minute, 5, time.Second)
	if len(rec.alerts) != 2 || len(rec.decisions) != 1 {
		t.Fatalf("alerts %d decisions %d, want 2 and 1", len(rec.alerts), len(rec.decisions))
	}
	if rec.alerts[1].Scenario != "crowdsecurity/ssh-bf" || rec.alerts[1].Decision != nil {
		t.Errorf("covered alert = %+v", rec.alerts[1])
	}
	if rec.decisions[0].Duration != "48h0m0s" {
		t.Errorf("decision = %+v", rec.decisions[0])
	}
}

func TestSimulatedScenario(t *testing.T) {
	sim := true
	eng, rec := newEngine(t, func(c *profile.Config) {
		c.Scenarios[profile.BadUserAgent] = profile.Remedy{Duration: 24 * time.Hour, Simulated: &sim}
	})
	eng.Event(&event.Event{Time: t0, Source: netip.MustParseAddr("2001:db8::66"), Type: event.TypeHTTPAccess, Path: "/", UserAgent: "sqlmap/1.7"})
	if len(rec.alerts) != 1 || !rec.alerts[0].Simulated || rec.alerts[0].Decision == nil || len(rec.decisions) != 0 {
		t.Fatalf("alerts %+v decisions %+v", rec.alerts, rec.decisions)
	}
	if rec.alerts[0].IP != "2001:db8::66" || rec.alerts[0].Decision.Duration != "24h0m0s" {
		t.Errorf("alert = %+v", rec.alerts[0])
	}
	// Simulated offences do not escalate: once the simulated 24h remedy
	// is over, the next alert proposes 24h again.
	eng.Event(&event.Event{Time: t0.Add(25 * time.Hour), Source: netip.MustParseAddr("2001:db8::66"), Type: event.TypeHTTPAccess, Path: "/", UserAgent: "sqlmap/1.7"})
	if len(rec.alerts) != 2 || rec.alerts[1].Decision == nil || rec.alerts[1].Decision.Duration != "24h0m0s" {
		t.Fatalf("second simulated alert = %+v", rec.alerts[1:])
	}
}

func TestInvalidSourcesDropped(t *testing.T) {
	eng, rec := newEngine(t, nil)
	eng.Event(&event.Event{Time: t0, Type: event.TypeHTTPAccess, UserAgent: "sqlmap"})
	eng.Event(&event.Event{Time: t0, Source: netip.IPv4Unspecified(), Type: event.TypeHTTPAccess, UserAgent: "sqlmap"})
	if len(rec.alerts) != 0 || eng.Stats().NoSource != 2 {
		t.Fatalf("alerts %+v stats %+v", rec.alerts, eng.Stats())
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Config{}); err == nil || err.Error() != "engine: no profiles" {
		t.Errorf("err = %v", err)
	}
}

func TestFeed(t *testing.T) {
	eng, rec := newEngine(t, nil)
	var b strings.Builder
	for i := range 6 {
		fmt.Fprintf(&b, "Nov 25 10:00:0%d web-1 sshd[1]: Failed password for root from 192.0.2.44 port %d ssh2\r\n", i, 1000+i)
	}
	b.WriteString("garbage line\n")
	b.WriteString(strings.Repeat("x", MaxLineBytes+1) + "\n")
	b.WriteString(strings.Repeat("y", 300<<10) + "\n")                                                    // longer than the read buffer
	b.WriteString("Nov 25 10:00:09 web-1 sshd[1]: Accepted password for bob from 192.0.2.45 port 1 ssh2") // no final newline
	p := &Pipeline{Parser: parse.New(parse.Config{Reference: t0}), Engine: eng}
	var errLines []uint64
	st, err := Feed(strings.NewReader(b.String()), "sshd", "auth.log", p, func(line uint64, err error) { errLines = append(errLines, line) })
	if err != nil {
		t.Fatal(err)
	}
	if st != (FeedStats{Lines: 10, Malformed: 3}) {
		t.Errorf("stats = %+v", st)
	}
	if fmt.Sprint(errLines) != "[7 8 9]" {
		t.Errorf("malformed lines reported = %v, want [7 8 9]", errLines)
	}
	if len(rec.alerts) != 1 || rec.alerts[0].IP != "192.0.2.44" || rec.alerts[0].Events != 5 {
		t.Errorf("alerts = %+v", rec.alerts)
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{4 * time.Hour: "4h", 90 * time.Minute: "1h30m", 45 * time.Second: "45s", 48 * time.Hour: "48h", time.Hour + time.Second: "1h0m1s"} {
		if got := ShortDuration(d); got != want {
			t.Errorf("ShortDuration(%s) = %s, want %s", d, got, want)
		}
	}
}

// The country of the offender reaches the alert and the decision.
func TestCountryEnrichment(t *testing.T) {
	path := enginetest.CountryMMDB(t, map[string]string{"185.220.101.0/24": "RU"})
	eng, rec := newEngine(t, func(c *profile.Config) { c.GeoIP.CountryMMDB = path })
	sshFails(eng, "185.220.101.5", 0, 5, time.Second)
	sshFails(eng, "192.0.2.77", 0, 5, time.Second)
	if len(rec.alerts) != 2 || len(rec.decisions) != 2 {
		t.Fatalf("alerts %d decisions %d", len(rec.alerts), len(rec.decisions))
	}
	if rec.alerts[0].Country != "RU" || rec.decisions[0].Country != "RU" {
		t.Errorf("country: alert %q decision %q, want RU", rec.alerts[0].Country, rec.decisions[0].Country)
	}
	if rec.alerts[1].Country != "" || rec.decisions[1].Country != "" {
		t.Errorf("unknown address got a country: %q %q", rec.alerts[1].Country, rec.decisions[1].Country)
	}
}

// ipv6_prefix makes the decision cover the offender's /64; IPv4 offenders
// are banned by address.
func TestIPv6PrefixDecision(t *testing.T) {
	sc, err := scenario.Parse("p.yaml", []byte("name: t/v6\ntype: trigger\nfilter: Type == \"http_access\" && Path == \"/x\"\nipv6_prefix: 64\nlabels: {remediation: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	prof, err := profile.New(profile.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	eng, err := New(Config{Scenarios: []*scenario.Scenario{sc}, Profiles: prof, Sink: rec})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"2001:db8:1:2:aaaa::7", "198.51.100.4"} {
		eng.Event(&event.Event{Time: t0, Source: netip.MustParseAddr(ip), Type: event.TypeHTTPAccess, Path: "/x"})
	}
	if len(rec.decisions) != 2 {
		t.Fatalf("%d decisions", len(rec.decisions))
	}
	if d := rec.decisions[0]; d.Scope != decisionfeed.ScopeRange || d.Value != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 offender: %s %s, want range 2001:db8:1:2::/64", d.Scope, d.Value)
	}
	if d := rec.decisions[1]; d.Scope != decisionfeed.ScopeIP || d.Value != "198.51.100.4" {
		t.Errorf("IPv4 offender: %s %s", d.Scope, d.Value)
	}
}

// A reload keeps the buckets of unchanged scenarios and restarts changed
// ones.
func TestReloadKeepsUnchangedBuckets(t *testing.T) {
	load := func(files map[string]string) []*scenario.Scenario {
		fsys := fstest.MapFS{}
		for n, b := range files {
			fsys[n] = &fstest.MapFile{Data: []byte(b)}
		}
		scs, err := scenario.LoadFS(fsys, ".")
		if err != nil {
			t.Fatal(err)
		}
		return scs
	}
	a := "name: t/a\ntype: window\nfilter: Type == \"ssh_failed_auth\"\ncount: 5\nwindow: 1m\nlabels: {remediation: true}\n"
	b := "type: leaky\nname: t/b\nfilter: \"evt.Meta.log_type == 'ssh_failed-auth'\"\ngroupby: evt.Meta.source_ip\ncapacity: 4\nleakspeed: 1m\nlabels: {remediation: true}\n"
	prof, err := profile.New(profile.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	eng, err := New(Config{Scenarios: load(map[string]string{"a.yaml": a, "b.yaml": b}), Profiles: prof, Sink: rec})
	if err != nil {
		t.Fatal(err)
	}
	sshFails(eng, "198.51.100.70", 0, 4, time.Second)
	// t/b changes (capacity 4 → 6); t/a does not.
	kept, err := eng.Reload(load(map[string]string{"a.yaml": a, "b.yaml": strings.Replace(b, "capacity: 4", "capacity: 6", 1)}), prof)
	if err != nil || kept != 1 {
		t.Fatalf("reload: kept %d, %v", kept, err)
	}
	sshFails(eng, "198.51.100.70", 4*time.Second, 1, time.Second)
	if len(rec.alerts) != 1 || rec.alerts[0].Scenario != "t/a" || rec.alerts[0].Events != 5 {
		t.Fatalf("after reload, the kept window fires on its 5th event: %+v", rec.alerts)
	}
	// t/b restarted empty at the event after the reload: its overflow
	// counts from there.
	sshFails(eng, "198.51.100.70", 10*time.Second, 6, time.Second)
	var b0 []Alert
	for _, a := range rec.alerts {
		if a.Scenario == "t/b" {
			b0 = append(b0, a)
		}
	}
	if len(b0) != 1 || !b0[0].FirstSeen.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("t/b after its change: %+v, want one overflow of a bucket started at the reload", b0)
	}
}

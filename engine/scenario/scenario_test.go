package scenario

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/expr-lang/expr"

	"github.com/portcullis-ips/portcullis/engine/event"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func mustParse(t *testing.T, y string) *Scenario {
	t.Helper()
	s, err := Parse("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sshFail(ip string, at time.Duration) *event.Event {
	return &event.Event{Time: t0.Add(at), Source: netip.MustParseAddr(ip), Type: event.TypeSSHFailedAuth, Parser: "sshd"}
}

const leakyYAML = `
name: test/leaky
type: leaky
filter: Type == "ssh_failed_auth"
capacity: 4
leakspeed: 12s
blackhole: 1m
`

func run(set *Set, evs ...*event.Event) []Overflow {
	var out []Overflow
	for _, ev := range evs {
		out = set.Event(ev, out)
	}
	return out
}

func TestLeakyBurstOverflowsOnCapacityPlusOne(t *testing.T) {
	set := NewSet([]*Scenario{mustParse(t, leakyYAML)}, Options{})
	var evs []*event.Event
	for i := range 4 {
		evs = append(evs, sshFail("192.0.2.1", time.Duration(i)*time.Second))
	}
	if got := run(set, evs...); len(got) != 0 {
		t.Fatalf("4 events overflowed a bucket of 4: %+v", got)
	}
	got := run(set, sshFail("192.0.2.1", 4*time.Second))
	if len(got) != 1 {
		t.Fatalf("5th event: %d overflows, want 1", len(got))
	}
	o := got[0]
	if o.Events != 5 || !o.First.Equal(t0) || !o.Last.Equal(t0.Add(4*time.Second)) || o.Source != netip.MustParseAddr("192.0.2.1") || o.Scenario.Name != "test/leaky" {
		t.Errorf("overflow = %+v", o)
	}
	// Blackholed for a minute: more events are silenced.
	if got := run(set, sshFail("192.0.2.1", 5*time.Second), sshFail("192.0.2.1", 6*time.Second)); len(got) != 0 {
		t.Errorf("blackholed group overflowed again: %+v", got)
	}
	if st := set.Stats(); st.Silenced != 2 || st.Overflows != 1 || st.Matched != 7 {
		t.Errorf("stats = %+v", st)
	}
}

// Events spaced at the leak speed never fill the bucket; one faster
// arrival rate does, after (capacity) / (1 - interval/leak) events.
func TestLeakyRate(t *testing.T) {
	set := NewSet([]*Scenario{mustParse(t, leakyYAML)}, Options{})
	for i := range 100 {
		if got := run(set, sshFail("192.0.2.2", time.Duration(i)*12*time.Second)); len(got) != 0 {
			t.Fatalf("event %d at the leak rate overflowed", i)
		}
	}
	// Every 6 s: the level is 1 + (k-1)/2 at the k-th event and passes 4 at the 8th.
	set = NewSet([]*Scenario{mustParse(t, leakyYAML)}, Options{})
	for i := range 20 {
		got := run(set, sshFail("192.0.2.3", time.Duration(i)*6*time.Second))
		if (len(got) == 1) != (i == 7) {
			t.Fatalf("event %d: %d overflows", i+1, len(got))
		}
	}
}

// A bucket that has drained starts afresh, so old events do not count.
func TestLeakyDrainResets(t *testing.T) {
	set := NewSet([]*Scenario{mustParse(t, leakyYAML)}, Options{})
	run(set, sshFail("192.0.2.1", 0), sshFail("192.0.2.1", 0), sshFail("192.0.2.1", 0), sshFail("192.0.2.1", 0))
	got := run(set, sshFail("192.0.2.1", time.Hour), sshFail("192.0.2.1", time.Hour), sshFail("192.0.2.1", time.Hour),
		sshFail("192.0.2.1", time.Hour), sshFail("192.0.2.1", time.Hour))
	if len(got) != 1 || got[0].Events != 5 || !got[0].First.Equal(t0.Add(time.Hour)) {
		t.Fatalf("overflows = %+v", got)
	}
}

// Time going backwards inside a bucket (interleaved sources) is clamped.
func TestLeakyClampsBackwardTime(t *testing.T) {
	set := NewSet([]*Scenario{mustParse(t, leakyYAML)}, Options{})
	got := run(set, sshFail("192.0.2.1", time.Minute), sshFail("192.0.2.1", 0), sshFail("192.0.2.1", 0),
		sshFail("192.0.2.1", 0), sshFail("192.0.2.1", 0))
	if len(got) != 1 || !got[0].Last.Equal(t0) || got[0].Events != 5 {
		t.Fatalf("overflows = %+v", got)
	}
}

func TestTriggerAndBlackhole(t *testing.T) {
	s := mustParse(t, `
name: test/trigger
type: trigger
filter: Path contains "/.%2e/"
blackhole: 5m
`)
	set := NewSet([]*Scenario{s}, Options{})
	ev := func(at time.Duration) *event.Event {
		return &event.Event{Time: t0.Add(at), Source: netip.MustParseAddr("2001:db8::5"), Type: event.TypeHTTPAccess, Path: "/cgi-bin/.%2e/x"}
	}
	got := run(set, ev(0), ev(time.Minute), ev(4*time.Minute), ev(5*time.Minute))
	if len(got) != 2 || !got[0].Last.Equal(t0) || !got[1].Last.Equal(t0.Add(5*time.Minute)) || got[1].Events != 1 {
		t.Fatalf("overflows = %+v", got)
	}
}

func TestDistinct(t *testing.T) {
	s := mustParse(t, `
name: test/distinct
type: leaky
filter: Status == 404
distinct: Path
capacity: 2
leakspeed: 1m
`)
	set := NewSet([]*Scenario{s}, Options{})
	ev := func(p string) *event.Event {
		return &event.Event{Time: t0, Source: netip.MustParseAddr("192.0.2.7"), Type: event.TypeHTTPAccess, Status: 404, Path: p}
	}
	if got := run(set, ev("/a"), ev("/a"), ev("/b"), ev("/a"), ev("/b")); len(got) != 0 {
		t.Fatalf("repeated paths overflowed: %+v", got)
	}
	if got := run(set, ev("/c")); len(got) != 1 || got[0].Events != 3 {
		t.Fatalf("third distinct path: %+v", got)
	}
}

func TestGroupBy(t *testing.T) {
	s := mustParse(t, `
name: test/groupby
type: leaky
filter: Type == "ssh_failed_auth"
groupby: User
capacity: 1
leakspeed: 1m
`)
	set := NewSet([]*Scenario{s}, Options{})
	a := sshFail("192.0.2.1", 0)
	a.User = "root"
	b := sshFail("192.0.2.2", 0)
	b.User = "root"
	c := sshFail("192.0.2.3", 0)
	c.User = "admin"
	got := run(set, a, c, b)
	if len(got) != 1 || got[0].Group != "root" || got[0].Source != b.Source || got[0].Events != 2 {
		t.Fatalf("overflows = %+v", got)
	}
}

// Memory is bounded: a bucket not used lately makes room (CLOCK), so the
// most recent ones survive.
func TestMaxBucketsEvicts(t *testing.T) {
	set := NewSet([]*Scenario{mustParse(t, leakyYAML)}, Options{MaxBuckets: 10})
	for i := range 100 {
		run(set, sshFail(fmt.Sprintf("10.0.0.%d", i), 0))
	}
	st := set.Stats()
	if st.Buckets != 10 || st.Evicted != 90 {
		t.Fatalf("buckets %d evicted %d, want 10 and 90", st.Buckets, st.Evicted)
	}
	// The survivors are the 10 most recent: 10.0.0.99 still counts.
	got := run(set, sshFail("10.0.0.99", 0), sshFail("10.0.0.99", 0), sshFail("10.0.0.99", 0), sshFail("10.0.0.99", 0))
	if len(got) != 1 || got[0].Events != 5 {
		t.Fatalf("recent bucket lost its count: %+v", got)
	}
}

// Drained buckets are reclaimed as events flow, without eviction.
func TestDrainedBucketsReclaimed(t *testing.T) {
	set := NewSet([]*Scenario{mustParse(t, leakyYAML)}, Options{})
	for i := range 1000 {
		run(set, sshFail(fmt.Sprintf("10.0.%d.%d", i/256, i%256), 0))
	}
	for i := range 600 {
		run(set, sshFail("192.0.2.200", 2*time.Hour+time.Duration(i)*time.Minute))
	}
	if st := set.Stats(); st.Buckets != 1 || st.Evicted != 0 {
		t.Fatalf("buckets %d evicted %d, want 1 and 0", st.Buckets, st.Evicted)
	}
}

// A backlog read partition by partition delivers one attacker's lines
// after other sources' later lines: its bucket must still be there.
func TestOutOfOrderLinesKeepTheirBucket(t *testing.T) {
	set := NewSet([]*Scenario{mustParse(t, leakyYAML)}, Options{})
	var got []Overflow
	for i := range 5 {
		got = append(got, run(set, sshFail("192.0.2.1", time.Duration(i)*time.Second))...)
		for j := range 500 {
			// Other sources, ten minutes ahead, enough to pass the gc hand over every slot.
			run(set, sshFail(fmt.Sprintf("10.1.%d.%d", j/256, j%256), 10*time.Minute+time.Duration(i)*time.Second))
		}
	}
	if len(got) != 1 || got[0].Source != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("overflows %+v, want one for 192.0.2.1", got)
	}
}

func TestEventTypeIndex(t *testing.T) {
	ssh := mustParse(t, leakyYAML)
	anyType := mustParse(t, "name: test/any\ntype: trigger\nfilter: Status == 0 && Source != nil\n")
	set := NewSet([]*Scenario{ssh, anyType}, Options{})
	if got := len(set.byType[event.TypeSSHFailedAuth]); got != 2 {
		t.Errorf("ssh runners = %d, want 2", got)
	}
	got := run(set, &event.Event{Time: t0, Source: netip.MustParseAddr("192.0.2.1"), Type: event.TypeHTTPError})
	if len(got) != 1 || got[0].Scenario != anyType {
		t.Errorf("untyped scenario did not see an http_error event: %+v", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"name: a\ntype: leaky\nfilter: Status == 1\ncapacity: 0\nleakspeed: 1s\n", "test.yaml:4: capacity: 0, a leaky bucket needs at least 1"},
		{"name: a\ntype: leaky\nfilter: Status == 1\ncapacity: 2\nleakspeed: fast\n", "test.yaml:5: cannot unmarshal !!str `fast` into time.Duration"},
		{"name: a\ntype: leaky\nfilter: Status == 1\ncapacity: 2\nleakspeed: 1s\ncolour: red\n", "test.yaml:6: field colour not found in type scenario.Scenario"},
		{"name: a\ntype: bucket\nfilter: Status == 1\n", `test.yaml:2: type: "bucket" is not leaky, window or trigger`},
		{"name: a\ntype: trigger\nfilter: Statu == 1\n", "test.yaml:3: filter: unknown name Statu (1:1)"},
		{"name: a\ntype: trigger\nfilter: Status\n", "test.yaml:3: filter: expected bool, but got int"},
		{"name: a\ntype: trigger\nfilter: Path matches \"(\"\n", "test.yaml:3: filter: error parsing regexp: missing closing ): `(` (1:6)"},
		{"type: trigger\nfilter: Status == 1\n", "test.yaml:1: name: missing"},
		{"name: a\ntype: trigger\nfilter: Status == 1\ndistinct: Path\n", "test.yaml:4: distinct: not used by a trigger"},
		{"name: a\ntype: trigger\nfilter: Status == 1\ngroupby: Status\n", "test.yaml:4: groupby: expected string, but got int"},
		{"name: a\n  type: trigger\n", "test.yaml:2: mapping values are not allowed in this context"},
		{"", "test.yaml: empty document"},
	}
	for _, tt := range tests {
		_, err := Parse("test.yaml", []byte(tt.yaml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q:\n got %v\nwant %s", tt.yaml, err, tt.want)
		}
	}
}

func TestLoadFSDuplicate(t *testing.T) {
	fsys := fstest.MapFS{
		"a.yaml": {Data: []byte("name: x/y\ntype: trigger\nfilter: Status == 1\n")},
		"b.yml":  {Data: []byte("name: x/y\ntype: trigger\nfilter: Status == 2\n")},
		"c.txt":  {Data: []byte("ignored")},
	}
	_, err := LoadFS(fsys, ".")
	if err == nil || err.Error() != `b.yml: scenario "x/y" already defined in a.yaml` {
		t.Fatalf("err = %v", err)
	}
}

// filters covers every lowered node shape and a few left to the VM.
var filters = []string{
	`Type == "http_access" && !Static && Status < 400`,
	`Method == "POST" && Path startsWith "/wp-login.php" && Status in [200, 401, 403]`,
	`lower(Path) contains "/.%2e/" || lower(Path) contains "%2%65"`,
	`upper(UserAgent) contains "SQLMAP" || lower(UserAgent) endsWith "nikto"`,
	`lower(UserAgent) contains "Sqlmap"`,
	`Status >= 400 and Status <= 499 or 500 < Status`,
	`not (Type in ["ssh_failed_auth", "ssh_too_many_auth"]) || InvalidUser == true`,
	`Path matches "^/(admin|wp-admin)/" && Bytes > 100`,
	`Host != "" && User == "root"`,
	`"http_access" == Type && 404 == Status`,
	`len(Path) > 10 && Path contains "a"`,
	`Status in [301, 302] ? Static : Path endsWith ".php"`,
	`Time.Year() == 2026 && Source.Is4()`,
	`Static != false`,
}

var corpus = []event.Event{
	{Type: event.TypeHTTPAccess, Method: "POST", Path: "/wp-login.php", Status: 200, UserAgent: "Mozilla"},
	{Type: event.TypeHTTPAccess, Method: "GET", Path: "/cgi-bin/.%2E/x", Status: 400, UserAgent: "sqlmap/1.5"},
	{Type: event.TypeHTTPAccess, Path: "/app.js", Static: true, Status: 304, UserAgent: "Nikto"},
	{Type: event.TypeSSHFailedAuth, User: "root", Host: "h", InvalidUser: true},
	{Type: event.TypeHTTPAccess, Path: "/admin/İK", Status: 503, Bytes: 1000, UserAgent: "\u212aSQLMAP"},
}

func TestLoweredMatchesVM(t *testing.T) {
	for _, f := range filters {
		for i := range corpus {
			ev := corpus[i]
			ev.Time, ev.Source = t0, netip.MustParseAddr("192.0.2.1")
			compareFilter(t, f, &ev)
		}
	}
}

func compareFilter(t *testing.T, f string, ev *event.Event) {
	t.Helper()
	s, err := Parse("f.yaml", []byte(fmt.Sprintf("name: f\ntype: trigger\nfilter: %q\n", f)))
	if err != nil {
		t.Fatalf("%s: %v", f, err)
	}
	prog, err := expr.Compile(f, envOptions(expr.AsBool())...)
	if err != nil {
		t.Fatal(err)
	}
	want, err := expr.Run(prog, ev)
	if err != nil {
		want = false
	}
	if got := s.Match(ev); got != want {
		t.Fatalf("filter %s on %+v: lowered %v, vm %v", f, *ev, got, want)
	}
}

// FuzzFilterLowering checks the native lowering against the expr VM on
// arbitrary events.
func FuzzFilterLowering(f *testing.F) {
	f.Add("http_access", "POST", "/wp-login.php", "sqlmap", 200, false, uint8(0))
	f.Add("ssh_failed_auth", "", "/.%2E/", "\u212aNIKTO", 404, true, uint8(6))
	f.Fuzz(func(t *testing.T, typ, method, path, ua string, status int, static bool, which uint8) {
		ev := event.Event{Time: t0, Source: netip.MustParseAddr("2001:db8::1"), Type: typ, Method: method, Path: path,
			UserAgent: ua, Status: status, Static: static, User: ua, Host: method}
		compareFilter(t, filters[int(which)%len(filters)], &ev)
	})
}

func TestVMNodesCounted(t *testing.T) {
	s := mustParse(t, "name: v\ntype: trigger\nfilter: len(Path) > 3 && Status == 1\n")
	if s.vmNodes != 1 {
		t.Errorf("vm subtrees = %d, want 1", s.vmNodes)
	}
	if !strings.Contains(filters[0], "Static") {
		t.Fatal("filters table changed")
	}
}

// FuzzParse feeds arbitrary scenario files to the loader: it either
// rejects them with a "test.yaml" error or returns a scenario that runs.
func FuzzParse(f *testing.F) {
	f.Add([]byte(leakyYAML))
	f.Add([]byte("name: a\ntype: trigger\nfilter: lower(Path) contains \"x\" || Status in [1]\nblackhole: 1s\n"))
	f.Add([]byte("name: a\ntype: leaky\nfilter: true\ncapacity: 1\nleakspeed: 1ns\ndistinct: Path + User\ngroupby: Host\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("test.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "test.yaml") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		set := NewSet([]*Scenario{s}, Options{MaxBuckets: 4})
		for i := range 3 {
			run(set, &event.Event{Time: t0.Add(time.Duration(i)), Source: netip.MustParseAddr("192.0.2.1"), Type: event.TypeHTTPAccess, Path: "/x"})
		}
	})
}

// vmMatch evaluates filter f on ev with the expr VM alone.
func vmMatch(t *testing.T, f string, ev *event.Event) bool {
	t.Helper()
	prog, err := expr.Compile(f, envOptions(expr.AsBool())...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := expr.Run(prog, ev)
	if err != nil {
		return false
	}
	return out.(bool)
}

// setFilters builds one Set from every test filter, the shipped-style
// filters and a filter of 70 literals (more than one automaton holds), so
// their literals share automata as they do in production.
func setFilters(t testing.TB) (*Set, []string) {
	var many []string
	for i := range 70 {
		many = append(many, fmt.Sprintf("lower(UserAgent) contains \"tool%d\"", i))
	}
	fs := append(slices.Clone(filters),
		strings.Join(many, " || "),
		`lower(Path) contains "/.env" || lower(Path) contains "/.git/" || lower(Path) endsWith ".sql"`,
		`lower(Path) contains "${jndi:" || lower(UserAgent) contains "${jndi:" || Referer contains "${${"`,
		`Path contains "a" && Path contains "ab" && Path contains "b"`,
		`UserAgent contains "" && lower(UserAgent) startsWith "mozilla"`)
	var scs []*Scenario
	for i, f := range fs {
		s, err := Parse("f.yaml", []byte(fmt.Sprintf("name: f%d\ntype: trigger\nfilter: %q\n", i, f)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		scs = append(scs, s)
	}
	return NewSet(scs, Options{}), fs
}

func checkSet(t *testing.T, set *Set, fs []string, ev *event.Event) {
	t.Helper()
	set.st.reset(ev)
	for i, r := range set.all {
		if got, want := r.filter(set.st), vmMatch(t, fs[i], ev); got != want {
			t.Fatalf("filter %s on %+v: set %v, vm %v", fs[i], *ev, got, want)
		}
	}
}

func TestSetFiltersMatchVM(t *testing.T) {
	set, fs := setFilters(t)
	extra := []event.Event{
		{Type: event.TypeHTTPAccess, Path: "/x/.GIT/config", UserAgent: "TOOL69/1 ${JNDI:ldap}", Referer: "${${x}"},
		{Type: event.TypeHTTPAccess, Path: "/ab", UserAgent: "Mozilla tool7 " + strings.Repeat("x", 60)},
		{Type: event.TypeHTTPAccess, Path: "/dump.SQL", UserAgent: "Mozilla tool7 " + strings.Repeat("x", 60)},
		{Type: event.TypeHTTPAccess, Path: "/ÄB/${jndi:", UserAgent: "MOZİLLA tool64"},
	}
	for _, ev := range append(slices.Clone(corpus), extra...) {
		ev.Time, ev.Source = t0, netip.MustParseAddr("192.0.2.1")
		checkSet(t, set, fs, &ev)
	}
}

// FuzzSetFilters checks filters sharing automata in one Set against the VM.
func FuzzSetFilters(f *testing.F) {
	f.Add("/x/.git/config", "TOOL69 ${jndi:", "${${", 404)
	f.Add("/ab", "mozİlla tool1", "", 200)
	set, fs := setFilters(f)
	f.Fuzz(func(t *testing.T, path, ua, ref string, status int) {
		ev := event.Event{Time: t0, Source: netip.MustParseAddr("2001:db8::1"), Type: event.TypeHTTPAccess,
			Path: path, UserAgent: ua, Referer: ref, Status: status}
		checkSet(t, set, fs, &ev)
	})
}

// A bucket remembers at most MaxDistinct values, forgetting the oldest.
func TestDistinctRingBounded(t *testing.T) {
	var b bucket
	for i := range MaxDistinct + 3 {
		b.remember(uint64(i))
	}
	if len(b.distinct) != MaxDistinct {
		t.Fatalf("held %d values, want %d", len(b.distinct), MaxDistinct)
	}
	for i := range 3 {
		if b.seen(uint64(i)) {
			t.Errorf("oldest value %d still remembered", i)
		}
	}
	if !b.seen(3) || !b.seen(MaxDistinct+2) {
		t.Error("recent values forgotten")
	}
	b.resetDistinct()
	if b.seen(10) || cap(b.distinct) != MaxDistinct {
		t.Errorf("reset kept values or dropped the storage: len %d cap %d", len(b.distinct), cap(b.distinct))
	}
}

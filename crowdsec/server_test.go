package crowdsec

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// clock is a settable time source.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func dec(t *testing.T, op decisionfeed.Op, typ decisionfeed.Type, cidr string, dur time.Duration, origin, scenario string, now time.Time) decisionfeed.Decision {
	t.Helper()
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		t.Fatal(err)
	}
	d := decisionfeed.NewDecision(op, typ, p, dur, origin, now)
	d.Scenario = scenario
	if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	return d
}

// get performs a request against h and returns status and body.
func get(t *testing.T, h http.Handler, key, target string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Code, string(b)
}

func getStream(t *testing.T, h http.Handler, key, query string) Stream {
	t.Helper()
	code, body := get(t, h, key, "/v1/decisions/stream?"+query)
	if code != http.StatusOK {
		t.Fatalf("stream?%s: status %d: %s", query, code, body)
	}
	var st Stream
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("stream?%s: %v: %s", query, err, body)
	}
	if st.New == nil || st.Deleted == nil {
		t.Fatalf("stream?%s: want arrays for new and deleted, got %s", query, body)
	}
	return st
}

// summary renders decisions as "scope value type duration origin scenario" lines.
func summary(ds []Decision) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(strings.Join([]string{d.Scope, d.Value, d.Type, d.Duration, d.Origin, d.Scenario}, " ") + "\n")
	}
	return b.String()
}

func newTestServer(t *testing.T, c *clock) *Server {
	t.Helper()
	s, err := NewServer(ServerConfig{APIKeys: []string{"key-a", "key-b"}, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestServerStreamContract(t *testing.T) {
	c := &clock{now: t0}
	s := newTestServer(t, c)
	ctx := context.Background()
	if code, _ := get(t, s, "key-a", "/v1/decisions/stream?startup=true"); code != http.StatusServiceUnavailable {
		t.Fatalf("before the snapshot: status %d, want 503", code)
	}
	if err := s.Snapshot(ctx, []decisionfeed.Decision{
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32", 4*time.Hour, "engine", "crowdsecurity/ssh-bf", t0),
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "198.51.100.0/24", time.Hour, "cli", "manual/abuse", t0),
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "2001:db8::7/128", 30*time.Minute, "blocklist", "blocklist/firehol", t0),
	}); err != nil {
		t.Fatal(err)
	}
	c.now = t0.Add(time.Second)

	// startup=true: the full set; scopes default to Ip only.
	st := getStream(t, s, "key-a", "startup=true")
	want := "Ip 203.0.113.7 ban 3h59m59s engine crowdsecurity/ssh-bf\nIp 2001:db8::7 ban 29m59s blocklist blocklist/firehol\n"
	if got := summary(st.New); got != want || len(st.Deleted) != 0 {
		t.Fatalf("startup new:\n%swant\n%sdeleted %v", got, want, st.Deleted)
	}
	if st.New[0].ID <= 0 || st.New[0].Until != "2026-11-25T14:00:00Z" || st.New[0].UUID == "" {
		t.Fatalf("startup decision fields: %+v", st.New[0])
	}
	// Another key with both scopes: its own state.
	st = getStream(t, s, "key-b", "startup=true&scopes=ip,range")
	if len(st.New) != 3 || st.New[1].Scope != ScopeRange || st.New[1].Value != "198.51.100.0/24" {
		t.Fatalf("key-b startup with scopes ip,range: %s", summary(st.New))
	}
	// Nothing changed: empty deltas.
	st = getStream(t, s, "key-a", "startup=false")
	if len(st.New)+len(st.Deleted) != 0 {
		t.Fatalf("unchanged delta: new %s deleted %s", summary(st.New), summary(st.Deleted))
	}

	// An add, a delete, an expiry.
	c.now = t0.Add(10 * time.Minute)
	if err := s.Changes(ctx, []decisionfeed.Decision{
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "192.0.2.1/32", 2*time.Hour, "engine", "crowdsecurity/http-cve", c.now),
		dec(t, decisionfeed.OpDelete, decisionfeed.TypeBan, "203.0.113.7/32", 0, "cli", "", c.now),
	}); err != nil {
		t.Fatal(err)
	}
	c.now = t0.Add(40 * time.Minute) // 2001:db8::7 expired 10 minutes ago
	st = getStream(t, s, "key-a", "startup=false")
	if got, want := summary(st.New), "Ip 192.0.2.1 ban 1h30m0s engine crowdsecurity/http-cve\n"; got != want {
		t.Fatalf("delta new:\n%swant\n%s", got, want)
	}
	if got, want := summary(st.Deleted), "Ip 203.0.113.7 ban -30m0s engine crowdsecurity/ssh-bf\nIp 2001:db8::7 ban -10m0s blocklist blocklist/firehol\n"; got != want {
		t.Fatalf("delta deleted:\n%swant\n%s", got, want)
	}
	st = getStream(t, s, "key-a", "startup=false")
	if len(st.New)+len(st.Deleted) != 0 {
		t.Fatalf("second delta not empty: new %s deleted %s", summary(st.New), summary(st.Deleted))
	}
	// key-b has its own view: it gets the same changes, and the range kept.
	st = getStream(t, s, "key-b", "scopes=ip,range")
	if len(st.New) != 1 || len(st.Deleted) != 2 {
		t.Fatalf("key-b delta: new %s deleted %s", summary(st.New), summary(st.Deleted))
	}
	// A re-add of a key with a new decision is new again.
	if err := s.Changes(ctx, []decisionfeed.Decision{
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32", time.Hour, "cli", "manual", c.now),
	}); err != nil {
		t.Fatal(err)
	}
	st = getStream(t, s, "key-a", "startup=false")
	if got, want := summary(st.New), "Ip 203.0.113.7 ban 1h0m0s cli manual\n"; got != want || len(st.Deleted) != 0 {
		t.Fatalf("re-add: new\n%swant\n%sdeleted %s", got, want, summary(st.Deleted))
	}
}

func TestServerStreamFilters(t *testing.T) {
	c := &clock{now: t0}
	s := newTestServer(t, c)
	if err := s.Snapshot(context.Background(), []decisionfeed.Decision{
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32", time.Hour, "engine", "crowdsecurity/ssh-bf", t0),
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.8/32", time.Hour, "cli", "manual/abuse", t0),
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.0/24", time.Hour, "blocklist", "blocklist/drop", t0),
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ query, want string }{
		{"startup=true&scopes=range", "198.51.100.0/24"},
		{"startup=true&scopes=Ip,Range", "203.0.113.7 203.0.113.8 198.51.100.0/24"},
		{"startup=true&scopes=country", ""},
		{"startup=true&origins=cli,engine", "203.0.113.7 203.0.113.8"},
		{"startup=true&scenarios_containing=ssh,abuse", "203.0.113.7 203.0.113.8"},
		{"startup=true&scenarios_not_containing=ssh", "203.0.113.8"},
		{"startup=true&scopes=ip,range&origins=blocklist&scenarios_containing=drop", "198.51.100.0/24"},
	} {
		st := getStream(t, s, "key-a", tc.query)
		var got []string
		for _, d := range st.New {
			got = append(got, d.Value)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("stream?%s: %q, want %q", tc.query, strings.Join(got, " "), tc.want)
		}
	}
}

func TestServerAPIKey(t *testing.T) {
	s := newTestServer(t, &clock{now: t0})
	if err := s.Snapshot(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"", "wrong", "key-a "} {
		for _, target := range []string{"/v1/decisions/stream?startup=true", "/v1/decisions?ip=1.2.3.4"} {
			if code, body := get(t, s, key, target); code != http.StatusForbidden || !strings.Contains(body, `"message"`) {
				t.Errorf("key %q %s: %d %s, want 403 with a message", key, target, code, body)
			}
		}
	}
	if code, _ := get(t, s, "key-b", "/v1/decisions/stream?startup=maybe"); code != http.StatusBadRequest {
		t.Errorf("startup=maybe: status %d, want 400", code)
	}
	if _, err := NewServer(ServerConfig{}); err == nil {
		t.Error("NewServer without keys: no error")
	}
}

func TestServerQuery(t *testing.T) {
	c := &clock{now: t0}
	s := newTestServer(t, c)
	if err := s.Snapshot(context.Background(), []decisionfeed.Decision{
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32", time.Hour, "engine", "crowdsecurity/ssh-bf", t0),
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "198.51.100.0/24", time.Hour, "cli", "manual/abuse", t0),
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.128/25", time.Hour, "cli", "manual/abuse", t0),
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "2001:db8::/64", time.Minute, "cli", "v6", t0),
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ query, want string }{
		{"ip=203.0.113.7", "203.0.113.7"},
		{"ip=198.51.100.200", "198.51.100.0/24 198.51.100.128/25"},
		{"ip=198.51.100.200&type=captcha", "198.51.100.0/24"},
		{"ip=::ffff:198.51.100.5", "198.51.100.0/24"},
		{"ip=192.0.2.1", "null"},
		{"range=198.51.100.128/26", "198.51.100.0/24 198.51.100.128/25"},
		{"range=198.51.100.0/23&contains=false", "198.51.100.0/24 198.51.100.128/25"},
		{"scope=Ip&value=203.0.113.7", "203.0.113.7"},
		{"scope=range&value=203.0.113.7", "null"},
		{"ip=2001:db8::1", "2001:db8::/64"},
	} {
		code, body := get(t, s, "key-a", "/v1/decisions?"+tc.query)
		if code != http.StatusOK {
			t.Fatalf("decisions?%s: %d %s", tc.query, code, body)
		}
		got := strings.TrimSpace(body)
		if got != "null" {
			var ds []Decision
			if err := json.Unmarshal([]byte(body), &ds); err != nil {
				t.Fatalf("decisions?%s: %v: %s", tc.query, err, body)
			}
			var vs []string
			for _, d := range ds {
				vs = append(vs, d.Value)
			}
			got = strings.Join(vs, " ")
		}
		if got != tc.want {
			t.Errorf("decisions?%s: %q, want %q", tc.query, got, tc.want)
		}
	}
	c.now = t0.Add(2 * time.Minute)
	if _, body := get(t, s, "key-a", "/v1/decisions?ip=2001:db8::1"); strings.TrimSpace(body) != "null" {
		t.Errorf("expired decision still answered: %s", body)
	}
	if code, _ := get(t, s, "key-a", "/v1/decisions?ip=not-an-ip"); code != http.StatusBadRequest {
		t.Errorf("bad ip: status %d, want 400", code)
	}
}

func TestServerMetrics(t *testing.T) {
	s := newTestServer(t, &clock{now: t0})
	get(t, s, "key-a", "/v1/decisions/stream?startup=true") // 503: not loaded
	if err := s.Snapshot(context.Background(), []decisionfeed.Decision{
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32", time.Hour, "engine", "x", t0),
	}); err != nil {
		t.Fatal(err)
	}
	get(t, s, "key-a", "/v1/decisions/stream?startup=true")
	get(t, s, "key-a", "/v1/decisions/stream")
	get(t, s, "bad", "/v1/decisions?ip=1.2.3.4")
	get(t, s, "key-b", "/v1/nothing")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s)
	want := `# HELP portcullis_lapi_bouncers API keys that pulled the stream at least once.
# TYPE portcullis_lapi_bouncers gauge
portcullis_lapi_bouncers 1
# HELP portcullis_lapi_decisions Live decisions held (expired ones are dropped at the next feed change or stream call).
# TYPE portcullis_lapi_decisions gauge
portcullis_lapi_decisions 1
# HELP portcullis_lapi_requests_total LAPI requests answered, by endpoint (stream, decisions, other) and HTTP status.
# TYPE portcullis_lapi_requests_total counter
portcullis_lapi_requests_total{code="200",endpoint="stream"} 2
portcullis_lapi_requests_total{code="403",endpoint="decisions"} 1
portcullis_lapi_requests_total{code="404",endpoint="other"} 1
portcullis_lapi_requests_total{code="503",endpoint="stream"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestStale(t *testing.T) {
	full := []decisionfeed.Decision{
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32", time.Hour, Origin, "a", t0),
	}
	live := []decisionfeed.Decision{
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32", time.Hour, Origin, "a", t0),   // still on the LAPI
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.8/32", time.Hour, Origin, "b", t0),   // gone from it
		dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.0/24", time.Hour, "engine", "", t0), // not ours
	}
	got := Stale(full, live, t0)
	if len(got) != 1 || got[0].Op != decisionfeed.OpDelete || got[0].Value != "203.0.113.8" || got[0].Origin != Origin || got[0].Scenario != "b" {
		t.Fatalf("stale: %+v", got)
	}
	if err := got[0].Validate(decisionfeed.DefaultLimits()); err != nil {
		t.Fatal(err)
	}
}

package console

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
)

// recorder is a Publisher that keeps what it was given.
type recorder struct {
	mu sync.Mutex
	ds []decisionfeed.Decision
}

func (r *recorder) Publish(_ context.Context, ds ...decisionfeed.Decision) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ds = append(r.ds, ds...)
	return nil
}

func (r *recorder) published() []decisionfeed.Decision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]decisionfeed.Decision(nil), r.ds...)
}

var now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func newTestServer(t testing.TB) (*Server, *recorder) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(f, []byte("# users\nalice:admin:alice-pass-1\nbob:readonly:bob-pass-12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := LoadUsers(f)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	s, err := New(Config{Users: users, Publisher: rec, Registerer: prometheus.NewRegistry(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

func decision(value string, origin, scenario string, typ decisionfeed.Type) decisionfeed.Decision {
	p, err := parsePrefix(value)
	if err != nil {
		panic(err)
	}
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, typ, p, 4*time.Hour, origin, now.Add(-time.Minute))
	d.Scenario = scenario
	return d
}

// client is a logged-in session against the server's handler.
type client struct {
	t      testing.TB
	s      *Server
	cookie *http.Cookie
	csrf   string
}

func do(s *Server, req *http.Request) *httptest.ResponseRecorder {
	req.RemoteAddr = "192.0.2.1:5555"
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	return w
}

func loginAs(t testing.TB, s *Server, user, pw string) *client {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(url.Values{"user": {user}, "password": {pw}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := do(s, req)
	if w.Code != http.StatusSeeOther {
		t.Fatalf("login %s: %d %s", user, w.Code, w.Body)
	}
	c := &client{t: t, s: s, cookie: w.Result().Cookies()[0]}
	if !c.cookie.HttpOnly || c.cookie.SameSite != http.SameSiteStrictMode {
		t.Errorf("session cookie %+v: want HttpOnly and SameSite=Strict", c.cookie)
	}
	body := c.get("/decisions").Body.String()
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token on the page:\n%s", body)
	}
	c.csrf = m[1]
	return c
}

func (c *client) get(path string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.AddCookie(c.cookie)
	return do(c.s, req)
}

func (c *client) post(path string, form url.Values, origin string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	req.AddCookie(c.cookie)
	return do(c.s, req)
}

func TestWritesNeedAdminCSRFAndSameOrigin(t *testing.T) {
	s, rec := newTestServer(t)
	alice := loginAs(t, s, "alice", "alice-pass-1")
	bob := loginAs(t, s, "bob", "bob-pass-12")
	add := func(c *client, csrf string) url.Values {
		return url.Values{"csrf": {csrf}, "target": {"198.51.100.9"}, "duration": {"4h"}, "type": {"ban"}, "reason": {"abuse <b>"}}
	}
	for _, tc := range []struct {
		name   string
		c      *client
		form   url.Values
		origin string
		want   int
	}{
		{"no token", alice, add(alice, ""), "", http.StatusForbidden},
		{"wrong token", alice, add(alice, strings.Repeat("0", 64)), "", http.StatusForbidden},
		{"other session's token", alice, add(alice, bob.csrf), "", http.StatusForbidden},
		{"cross-site origin", alice, add(alice, alice.csrf), "http://evil.example", http.StatusForbidden},
		{"read-only user", bob, add(bob, bob.csrf), "", http.StatusForbidden},
	} {
		if w := tc.c.post("/decisions/add", tc.form, tc.origin); w.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, w.Code, tc.want)
		}
	}
	if n := len(rec.published()); n != 0 {
		t.Fatalf("%d decisions published by refused writes", n)
	}
	if w := alice.post("/decisions/add", add(alice, alice.csrf), "http://example.com"); w.Code != http.StatusSeeOther {
		t.Fatalf("admin add: %d %s", w.Code, w.Body)
	}
	ds := rec.published()
	if len(ds) != 1 || ds[0].Origin != "console" || ds[0].Reason != "console user alice: abuse <b>" || ds[0].Value != "198.51.100.9" || ds[0].Duration != "4h0m0s" {
		t.Fatalf("published %+v", ds)
	}
	// Delete needs the confirmation and a key that stands.
	if err := s.decisions.Snapshot(context.Background(), []decisionfeed.Decision{ds[0]}); err != nil {
		t.Fatal(err)
	}
	if w := alice.post("/decisions/delete", url.Values{"csrf": {alice.csrf}, "key": {ds[0].Key()}}, ""); w.Code != http.StatusBadRequest {
		t.Errorf("delete without confirmation: %d", w.Code)
	}
	if w := alice.post("/decisions/delete", url.Values{"csrf": {alice.csrf}, "key": {"ip:192.0.2.254"}, "confirm": {"yes"}}, ""); w.Code != http.StatusBadRequest {
		t.Errorf("delete of an unknown key: %d", w.Code)
	}
	if w := alice.post("/decisions/delete", url.Values{"csrf": {alice.csrf}, "key": {ds[0].Key()}, "confirm": {"yes"}}, ""); w.Code != http.StatusSeeOther {
		t.Fatalf("delete: %d %s", w.Code, w.Body)
	}
	ds = rec.published()
	if len(ds) != 2 || ds[1].Op != decisionfeed.OpDelete || ds[1].Key() != ds[0].Key() || ds[1].Origin != ds[0].Origin {
		t.Fatalf("delete published %+v", ds)
	}
	if v := testutil.ToFloat64(s.writes.WithLabelValues("refused_csrf")); v != 4 {
		t.Errorf("refused_csrf counted %v, want 4", v)
	}
}

func TestLoginFailuresAreCountedAndRateLimited(t *testing.T) {
	s, _ := newTestServer(t)
	codes := []int{}
	for range 7 {
		req := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader("user=alice&password=guess"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		codes = append(codes, do(s, req).Code)
	}
	want := []int{401, 401, 401, 401, 401, 429, 429}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Errorf("codes %v, want %v", codes, want)
	}
	if v := testutil.ToFloat64(s.loginFailures); v != 5 {
		t.Errorf("failures counted %v, want 5", v)
	}
	if v := testutil.ToFloat64(s.loginsLimited); v != 2 {
		t.Errorf("rate-limited counted %v, want 2", v)
	}
	// Pages and the event stream need a session.
	for _, p := range []string{"/", "/decisions", "/alerts", "/scenarios"} {
		if w := do(s, httptest.NewRequest(http.MethodGet, p, nil)); w.Code != http.StatusSeeOther {
			t.Errorf("GET %s without a session: %d, want a redirect to /login", p, w.Code)
		}
	}
	if w := do(s, httptest.NewRequest(http.MethodGet, "/events", nil)); w.Code != http.StatusUnauthorized {
		t.Errorf("GET /events without a session: %d", w.Code)
	}
}

func TestHostileInputIsEscapedAndBounded(t *testing.T) {
	s, _ := newTestServer(t)
	c := loginAs(t, s, "alice", "alice-pass-1")
	evil := `<script>alert("x")</script>`
	d := decision("203.0.113.5", "cli", evil, decisionfeed.TypeBan)
	d.Reason = evil
	if err := s.decisions.Snapshot(context.Background(), []decisionfeed.Decision{d}); err != nil {
		t.Fatal(err)
	}
	s.Alert(engine.Alert{V: 1, IP: "203.0.113.5", Scenario: evil, Country: "RU", Events: 3, FirstSeen: now, LastSeen: now})
	for _, p := range []string{"/", "/decisions", "/alerts", "/scenarios", "/alerts/0", "/decisions?scenario=" + url.QueryEscape(evil)} {
		w := c.get(p)
		if w.Code != http.StatusOK {
			t.Errorf("GET %s: %d", p, w.Code)
		}
		if strings.Contains(w.Body.String(), "<script>alert") {
			t.Errorf("GET %s: unescaped script in the page", p)
		}
		if !strings.Contains(w.Body.String(), "&lt;script&gt;") {
			t.Errorf("GET %s: the hostile text is not shown escaped", p)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", p, csp)
		}
	}
	for _, p := range []string{"/decisions?q=" + strings.Repeat("a", 300), "/decisions?q=1.2.3.999", "/decisions?type=nuke",
		"/alerts?since=-1h", "/alerts?ip=%00", "/alerts?country=" + strings.Repeat("X", 50)} {
		if w := c.get(p); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `class="error"`) {
			t.Errorf("GET %s: %d, want 400 with the error on the page", p, w.Code)
		}
	}
	for _, p := range []string{"/alerts/999", "/alerts/x", "/alerts/18446744073709551615"} {
		if w := c.get(p); w.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, w.Code)
		}
	}
	big := url.Values{"csrf": {c.csrf}, "target": {"192.0.2.1"}, "duration": {"4h"}, "reason": {strings.Repeat("r", 64<<10)}}
	if w := c.post("/decisions/add", big, ""); w.Code != http.StatusForbidden && w.Code != http.StatusBadRequest {
		t.Errorf("64 KiB form: %d", w.Code)
	}
}

func TestDecisionSearch(t *testing.T) {
	s, _ := newTestServer(t)
	ds := []decisionfeed.Decision{
		decision("203.0.113.7", "engine", "crowdsecurity/ssh-bf", decisionfeed.TypeBan),
		decision("198.51.100.0/24", "lists:firehol", "blocklist/firehol", decisionfeed.TypeBan),
		decision("2001:db8::/48", "cli", "", decisionfeed.TypeCaptcha),
	}
	expired := decision("192.0.2.9", "cli", "", decisionfeed.TypeBan)
	expired.Until = now.Add(-time.Second)
	if err := s.decisions.Snapshot(context.Background(), append(ds, expired)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		q    decisionQuery
		want string
	}{
		{decisionQuery{Prefix: netip.MustParsePrefix("198.51.100.20/32")}, "198.51.100.0/24"},
		{decisionQuery{Prefix: netip.MustParsePrefix("198.51.0.0/16")}, "198.51.100.0/24"},
		{decisionQuery{Prefix: netip.MustParsePrefix("2001:db8::1/128")}, "2001:db8::/48"},
		{decisionQuery{Origin: "engine"}, "203.0.113.7"},
		{decisionQuery{Scenario: "firehol"}, "198.51.100.0/24"},
		{decisionQuery{Type: decisionfeed.TypeCaptcha}, "2001:db8::/48"},
		{decisionQuery{Prefix: netip.MustParsePrefix("192.0.2.9/32")}, ""},
	} {
		tc.q.Limit = 10
		rows, total := s.decisions.search(tc.q)
		var got []string
		for _, r := range rows {
			got = append(got, r.Value)
		}
		if strings.Join(got, ",") != tc.want || total != len(rows) {
			t.Errorf("%+v: %v (total %d), want %q", tc.q, got, total, tc.want)
		}
	}
	del := ds[0]
	del.Op = decisionfeed.OpDelete
	if err := s.decisions.Changes(context.Background(), []decisionfeed.Decision{del}); err != nil {
		t.Fatal(err)
	}
	if _, total := s.decisions.search(decisionQuery{Limit: 10}); total != 2 {
		t.Errorf("after a delete %d stand, want 2", total)
	}
}

func TestLoadUsers(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		f := filepath.Join(dir, fmt.Sprint(len(body)))
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	if u, err := LoadUsers(write("a-single-token-line\n")); err != nil || u["admin"].role != RoleAdmin {
		t.Errorf("token file: %v %v", u, err)
	}
	for body, want := range map[string]string{
		"x:root:password1\n":                     "role",
		"x:admin:short\n":                        "shorter than 8",
		"x:admin:password1\nx:admin:password2\n": "given twice",
		"bad name:admin:password1\n":             "user name",
		"# nothing\n":                            "no users",
	} {
		_, err := LoadUsers(write(body))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "password1") {
			t.Errorf("%q: %v, want an error with %q and no password", body, err, want)
		}
	}
}

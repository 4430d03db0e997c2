package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

type fixture struct {
	srv   *server
	set   *prefixset.Set
	ready *atomic.Bool
	m     *metrics
	h     http.Handler
}

func newFixture(t testing.TB, mutate func(*Config)) *fixture {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Brokers = []string{"127.0.0.1:9092"}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	page, err := loadBanPage(cfg.BanTemplate)
	if err != nil {
		t.Fatal(err)
	}
	set := prefixset.New()
	var ready atomic.Bool
	ready.Store(true)
	m := newMetrics(prometheus.NewRegistry(), set)
	srv := newServer(set, &cfg, &ready, page, m, slog.New(slog.DiscardHandler))
	return &fixture{srv: srv, set: set, ready: &ready, m: m, h: srv.handler()}
}

func (f *fixture) add(t testing.TB, prefix string, r prefixset.Remedy, reason string, until time.Time) {
	t.Helper()
	err := f.set.ApplyRemedies(context.Background(), prefixset.Batch{Add: []prefixset.Entry{{
		Entry:  enforcer.Entry{Prefix: netip.MustParsePrefix(prefix), Until: until, Reason: reason, Origin: "engine"},
		Remedy: r,
	}}})
	if err != nil {
		t.Fatal(err)
	}
}

// do sends one request from peer with the given header lines ("Name: value").
func (f *fixture) do(path, peer string, headers ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.RemoteAddr = peer
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ": ")
		r.Header.Add(name, value)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func TestCheckVerdicts(t *testing.T) {
	f := newFixture(t, nil)
	hour := time.Now().Add(time.Hour)
	f.add(t, "203.0.113.7/32", prefixset.RemedyBan, "crowdsecurity/ssh-bf", hour)
	f.add(t, "198.51.100.0/24", prefixset.RemedyBan, "crowdsecurity/http-probing", hour)
	f.add(t, "192.0.2.0/24", prefixset.RemedyCaptcha, "crowdsecurity/http-crawl", hour)
	f.add(t, "2001:db8::/48", prefixset.RemedyBan, "v6", hour)
	tests := []struct {
		realIP   string
		status   int
		decision string
	}{
		{"203.0.113.7", 403, "ban; reason=crowdsecurity/ssh-bf; origin=engine"},
		{"203.0.113.8", 204, ""},
		{"198.51.100.99", 403, "ban; reason=crowdsecurity/http-probing; origin=engine"},
		{"192.0.2.44", 401, "captcha; reason=crowdsecurity/http-crawl; origin=engine"},
		{"2001:db8::abcd", 403, "ban; reason=v6; origin=engine"},
		{"2001:db8:1::1", 204, ""},
	}
	for _, tc := range tests {
		w := f.do("/check", "127.0.0.1:40000", "X-Real-IP: "+tc.realIP)
		if w.Code != tc.status || w.Header().Get(HeaderDecision) != tc.decision || w.Body.Len() != 0 {
			t.Errorf("%s: %d %q body %q, want %d %q and no body", tc.realIP, w.Code, w.Header().Get(HeaderDecision), w.Body, tc.status, tc.decision)
		}
	}
	if got := testutil.ToFloat64(f.m.ban); got != 3 {
		t.Errorf("ban checks = %v, want 3", got)
	}
	if got := testutil.ToFloat64(f.m.allow); got != 2 {
		t.Errorf("allow checks = %v, want 2", got)
	}
	if got := testutil.ToFloat64(f.m.captcha); got != 1 {
		t.Errorf("captcha checks = %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.m.bansServed.WithLabelValues("crowdsecurity/ssh-bf")); got != 1 {
		t.Errorf("bans served for ssh-bf = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(f.m.lookup); got != 1 {
		t.Errorf("lookup histogram series = %d, want 1", got)
	}
	// HEAD is answered like GET; other methods are refused.
	r := httptest.NewRequest(http.MethodPost, "/check", nil)
	r.RemoteAddr = "127.0.0.1:1"
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /check: %d, want 405", w.Code)
	}
}

func TestClientAddr(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.TrustedProxies = append(c.TrustedProxies, netip.MustParsePrefix("10.0.0.0/24"))
	})
	tests := []struct {
		name    string
		peer    string
		headers []string
		want    string
		bad     string // header label counted as unusable
	}{
		{"untrusted peer, no header", "192.0.2.1:5000", nil, "192.0.2.1", ""},
		{"untrusted peer ignores X-Real-IP", "192.0.2.1:5000", []string{"X-Real-IP: 203.0.113.7"}, "192.0.2.1", ""},
		{"untrusted peer ignores XFF", "192.0.2.1:5000", []string{"X-Forwarded-For: 203.0.113.7"}, "192.0.2.1", ""},
		{"untrusted v6 peer", "[2001:db8::5]:5000", []string{"X-Real-IP: 203.0.113.7"}, "2001:db8::5", ""},
		{"mapped trusted peer", "[::ffff:127.0.0.1]:5000", []string{"X-Real-IP: 203.0.113.7"}, "203.0.113.7", ""},
		{"trusted peer, no header", "127.0.0.1:5000", nil, "127.0.0.1", ""},
		{"X-Real-IP", "127.0.0.1:5000", []string{"X-Real-IP: 203.0.113.7"}, "203.0.113.7", ""},
		{"X-Real-IP with spaces", "127.0.0.1:5000", []string{"X-Real-IP:   203.0.113.7  "}, "203.0.113.7", ""},
		{"X-Real-IP with port", "127.0.0.1:5000", []string{"X-Real-IP: 203.0.113.7:443"}, "203.0.113.7", ""},
		{"X-Real-IP v6 with port", "[::1]:5000", []string{"X-Real-IP: [2001:db8::7]:443"}, "2001:db8::7", ""},
		{"X-Real-IP mapped", "127.0.0.1:5000", []string{"X-Real-IP: ::ffff:203.0.113.7"}, "203.0.113.7", ""},
		{"X-Real-IP wins over XFF", "127.0.0.1:5000", []string{"X-Real-IP: 203.0.113.7", "X-Forwarded-For: 198.51.100.1"}, "203.0.113.7", ""},
		{"X-Real-IP garbage", "127.0.0.1:5000", []string{"X-Real-IP: not-an-ip"}, "127.0.0.1", "x-real-ip"},
		{"X-Real-IP with zone", "127.0.0.1:5000", []string{"X-Real-IP: fe80::1%eth0"}, "127.0.0.1", "x-real-ip"},
		{"X-Real-IP list", "127.0.0.1:5000", []string{"X-Real-IP: 203.0.113.7, 198.51.100.1"}, "127.0.0.1", "x-real-ip"},
		{"X-Real-IP repeated", "127.0.0.1:5000", []string{"X-Real-IP: 203.0.113.7", "X-Real-IP: 198.51.100.1"}, "127.0.0.1", "x-real-ip"},
		{"XFF single", "127.0.0.1:5000", []string{"X-Forwarded-For: 203.0.113.7"}, "203.0.113.7", ""},
		{"XFF right-most untrusted", "127.0.0.1:5000", []string{"X-Forwarded-For: 198.51.100.1, 203.0.113.7"}, "203.0.113.7", ""},
		{"XFF skips trusted hops", "127.0.0.1:5000", []string{"X-Forwarded-For: 198.51.100.1, 203.0.113.7, 10.0.0.5, 127.0.0.1"}, "203.0.113.7", ""},
		{"XFF all trusted", "127.0.0.1:5000", []string{"X-Forwarded-For: 10.0.0.9, 10.0.0.5"}, "10.0.0.9", ""},
		{"XFF lines are one list", "127.0.0.1:5000", []string{"X-Forwarded-For: 198.51.100.1", "X-Forwarded-For: 203.0.113.7, 10.0.0.5"}, "203.0.113.7", ""},
		{"XFF later line all trusted", "127.0.0.1:5000", []string{"X-Forwarded-For: 198.51.100.1", "X-Forwarded-For: 10.0.0.5"}, "198.51.100.1", ""},
		{"XFF empty elements", "127.0.0.1:5000", []string{"X-Forwarded-For: 203.0.113.7, , "}, "203.0.113.7", ""},
		{"XFF only commas", "127.0.0.1:5000", []string{"X-Forwarded-For: , ,"}, "127.0.0.1", ""},
		{"XFF garbage hop", "127.0.0.1:5000", []string{"X-Forwarded-For: 203.0.113.7, bogus"}, "127.0.0.1", "x-forwarded-for"},
		// A garbage hop left of the client is never reached, so it is harmless.
		{"XFF garbage beyond the client", "127.0.0.1:5000", []string{"X-Forwarded-For: bogus, 203.0.113.7"}, "203.0.113.7", ""},
		{"XFF unknown", "127.0.0.1:5000", []string{"X-Forwarded-For: unknown"}, "127.0.0.1", "x-forwarded-for"},
		{"peer not an address", "@", nil, "invalid IP", "peer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := map[string]float64{}
			for _, l := range []string{"x-real-ip", "x-forwarded-for", "peer"} {
				before[l] = testutil.ToFloat64(f.m.badAddress.WithLabelValues(l))
			}
			r := httptest.NewRequest(http.MethodGet, "/check", nil)
			r.RemoteAddr = tc.peer
			for _, h := range tc.headers {
				name, value, _ := strings.Cut(h, ":")
				r.Header.Add(name, strings.TrimPrefix(value, " "))
			}
			if got := f.srv.clientAddr(r).String(); got != tc.want {
				t.Errorf("clientAddr = %s, want %s", got, tc.want)
			}
			for l, b := range before {
				want := b
				if l == tc.bad {
					want++
				}
				if got := testutil.ToFloat64(f.m.badAddress.WithLabelValues(l)); got != want {
					t.Errorf("client_address_invalid_total{header=%q} = %v, want %v", l, got, want)
				}
			}
		})
	}
}

func TestUntrustedHeadersCannotSpoof(t *testing.T) {
	// The bouncer trusts only some other proxy, so headers from 127.0.0.1
	// are the client's own words.
	f := newFixture(t, func(c *Config) { c.TrustedProxies = PrefixList{netip.MustParsePrefix("10.1.2.3/32")} })
	hour := time.Now().Add(time.Hour)
	f.add(t, "203.0.113.7/32", prefixset.RemedyBan, "x", hour)
	f.add(t, "127.0.0.2/32", prefixset.RemedyBan, "x", hour)
	// A clean client cannot get itself judged as a banned one ...
	if w := f.do("/check", "127.0.0.1:1", "X-Real-IP: 203.0.113.7", "X-Forwarded-For: 203.0.113.7"); w.Code != 204 {
		t.Errorf("spoofed ban: %d, want 204", w.Code)
	}
	// ... and a banned client cannot pose as a clean one.
	if w := f.do("/check", "127.0.0.2:1", "X-Real-IP: 192.0.2.1", "X-Forwarded-For: 192.0.2.1"); w.Code != 403 {
		t.Errorf("spoofed allow: %d, want 403", w.Code)
	}
	// The configured proxy is believed.
	if w := f.do("/check", "10.1.2.3:1", "X-Forwarded-For: 198.51.100.1, 203.0.113.7"); w.Code != 403 {
		t.Errorf("trusted proxy: %d, want 403", w.Code)
	}
}

func TestFailModes(t *testing.T) {
	for _, mode := range []FailMode{FailOpen, FailClosed} {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.FailMode = mode })
			f.ready.Store(false)
			f.add(t, "203.0.113.7/32", prefixset.RemedyBan, "x", time.Now().Add(time.Hour))
			want := map[FailMode]int{FailOpen: 204, FailClosed: 503}[mode]
			for _, ip := range []string{"203.0.113.7", "192.0.2.1"} {
				w := f.do("/check", "127.0.0.1:1", "X-Real-IP: "+ip)
				if w.Code != want || w.Header().Get(HeaderFailMode) != string(mode) || w.Body.Len() != 0 {
					t.Errorf("unready %s: %d %q %q, want %d", ip, w.Code, w.Header().Get(HeaderFailMode), w.Body, want)
				}
			}
			checkReady(t, f, 503, readinessBody{Ready: false, FailMode: mode, Prefixes: 1})
			f.ready.Store(true)
			checkReady(t, f, 200, readinessBody{Ready: true, FailMode: mode, Prefixes: 1})
			if w := f.do("/check", "127.0.0.1:1", "X-Real-IP: 203.0.113.7"); w.Code != 403 || w.Header().Get(HeaderFailMode) != "" {
				t.Errorf("ready: %d %q, want 403 without a fail-mode header", w.Code, w.Header().Get(HeaderFailMode))
			}
			c := map[FailMode]prometheus.Counter{FailOpen: f.m.unreadyOpen, FailClosed: f.m.unreadyClosed}[mode]
			if got := testutil.ToFloat64(c); got != 2 {
				t.Errorf("unready checks = %v, want 2", got)
			}
		})
	}
}

func checkReady(t *testing.T, f *fixture, status int, want readinessBody) {
	t.Helper()
	w := f.do("/ready", "127.0.0.1:1")
	var got readinessBody
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("/ready body %q: %v", w.Body, err)
	}
	if w.Code != status || got != want || w.Header().Get(HeaderFailMode) != string(want.FailMode) {
		t.Errorf("/ready = %d %+v, want %d %+v", w.Code, got, status, want)
	}
}

func TestBanPage(t *testing.T) {
	f := newFixture(t, nil)
	until := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	f.add(t, "203.0.113.7/32", prefixset.RemedyBan, "<script>alert(1)</script>", until)
	w := f.do("/ban", "127.0.0.1:1", "X-Real-IP: 203.0.113.7")
	body := w.Body.String()
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("/ban: %d %v", w.Code, w.Header())
	}
	for _, want := range []string{"Access denied", "Address 203.0.113.7", "reason &lt;script&gt;alert(1)&lt;/script&gt;", "until 2030-01-02 03:04 UTC"} {
		if !strings.Contains(body, want) {
			t.Errorf("ban page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>") {
		t.Error("ban page does not escape the scenario")
	}
	// No ban (any more): the page renders without the decision line.
	w = f.do("/ban", "127.0.0.1:1", "X-Real-IP: 192.0.2.1")
	if w.Code != 200 || strings.Contains(w.Body.String(), "Address") {
		t.Errorf("/ban for an allowed client: %d\n%s", w.Code, w.Body)
	}
}

func TestCustomBanTemplate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "ban.html")
	if err := os.WriteFile(good, []byte(`<p>{{.IP}} blocked for {{.Scenario}} ({{.Type}}, {{.Origin}})</p>`), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *Config) { c.BanTemplate = good })
	f.add(t, "203.0.113.0/24", prefixset.RemedyBan, "scan", time.Now().Add(time.Hour))
	if got := f.do("/ban", "127.0.0.1:1", "X-Real-IP: 203.0.113.9").Body.String(); got != "<p>203.0.113.9 blocked for scan (ban, engine)</p>" {
		t.Errorf("custom page = %q", got)
	}
	for name, src := range map[string]string{
		"syntax": `{{.IP`,
		"field":  `{{.Nope}}`,
	} {
		p := filepath.Join(dir, name+".html")
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := loadBanPage(p); err == nil || !strings.Contains(err.Error(), "ban template") {
			t.Errorf("%s: err = %v, want a ban template error", name, err)
		}
	}
	if _, err := loadBanPage(filepath.Join(dir, "missing.html")); err == nil {
		t.Error("missing template: no error")
	}
}

// TestMemoryBoundedByDecisions sends 200k checks from distinct client
// addresses, a third of them with unusable headers, and checks that the
// live heap does not grow with them: the bouncer keeps no per-client state.
func TestMemoryBoundedByDecisions(t *testing.T) {
	const n = 200_000
	f := newFixture(t, nil)
	f.add(t, "10.0.0.0/8", prefixset.RemedyBan, "x", time.Now().Add(time.Hour))
	r := httptest.NewRequest(http.MethodGet, "/check", nil)
	r.RemoteAddr = "127.0.0.1:1"
	w := &discardWriter{h: http.Header{}}
	send := func(i int) {
		ip := netip.AddrFrom4([4]byte{byte(11 + i>>16&0x3f), byte(i >> 8), byte(i), 1})
		r.Header = http.Header{}
		switch i % 3 {
		case 0:
			r.Header.Set("X-Real-Ip", ip.String())
		case 1:
			r.Header.Set("X-Forwarded-For", "garbage-"+ip.String())
		default:
			r.Header.Set("X-Real-Ip", ip.String()+"%zone")
		}
		clear(w.h)
		f.h.ServeHTTP(w, r)
	}
	for i := range 1000 { // warm up pools and metric children
		send(i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		send(i)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("live heap %d -> %d bytes after %d unique clients", before.HeapAlloc, after.HeapAlloc, n)
	// Per-client state would take at least tens of bytes per address (megabytes here).
	if growth > 1<<20 {
		t.Errorf("live heap grew by %d bytes over %d unique clients", growth, n)
	}
	if got := testutil.ToFloat64(f.m.badAddress.WithLabelValues("x-forwarded-for")) + testutil.ToFloat64(f.m.badAddress.WithLabelValues("x-real-ip")); got < 2*n/3 {
		t.Errorf("unusable headers counted %v, want at least %d", got, 2*n/3)
	}
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

var _ io.Writer = (*discardWriter)(nil)

func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "203.0.113.7:80", "[2001:db8::1]:443", "a, b, c", ", ,", "fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3.4, 127.0.0.1", "\x00\xff", strings.Repeat("1.1.1.1,", 50)} {
		f.Add(s, s)
	}
	fx := newFixture(f, nil)
	f.Fuzz(func(t *testing.T, realIP, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/check", nil)
		r.RemoteAddr = "127.0.0.1:9"
		if realIP != "" {
			r.Header.Set("X-Real-Ip", realIP)
		}
		if xff != "" {
			r.Header.Set("X-Forwarded-For", xff)
		}
		got := fx.srv.clientAddr(r)
		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("clientAddr(%q, %q) = %v", realIP, xff, got)
		}
		// The answer is the peer or an address written in a header.
		written := map[netip.Addr]bool{netip.MustParseAddr("127.0.0.1"): true}
		for _, hop := range append(strings.Split(xff, ","), realIP) {
			if a, ok := parseHop(hop); ok {
				written[a] = true
			}
		}
		if !written[got] {
			t.Fatalf("clientAddr(%q, %q) = %v, neither the peer nor written in a header", realIP, xff, got)
		}
	})
}

// TestCheckAllocatesNothing checks that answering /check allocates
// nothing once a kind of decision has been seen, for every verdict, over
// TCP and over a unix socket (whose peer is nginx itself).
func TestCheckAllocatesNothing(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, unixPeer := range []bool{false, true} {
		f := newFixture(t, nil)
		f.srv.unixPeer = unixPeer
		f.add(t, "198.51.100.7/32", prefixset.RemedyBan, "ban-reason", time.Now().Add(time.Hour))
		f.add(t, "192.0.2.0/24", prefixset.RemedyCaptcha, "captcha-reason", time.Now().Add(time.Hour))
		for ip, want := range map[string]int{"198.51.100.7": 403, "192.0.2.9": 401, "203.0.113.1": 204} {
			r := httptest.NewRequest(http.MethodGet, "/check", nil)
			r.RemoteAddr = "127.0.0.1:40000"
			if unixPeer {
				r.RemoteAddr = "@"
			}
			r.Header["X-Real-Ip"] = []string{ip}
			w := &statusWriter{h: http.Header{}}
			f.h.ServeHTTP(w, r) // first sight of the kind fills the cache
			if w.status != want {
				t.Fatalf("unix %v, %s: status %d, want %d", unixPeer, ip, w.status, want)
			}
			allocs := testing.AllocsPerRun(200, func() {
				clear(w.h)
				f.h.ServeHTTP(w, r)
			})
			if allocs != 0 {
				t.Errorf("unix %v, %s (%d): %v allocations per check, want 0", unixPeer, ip, want, allocs)
			}
		}
	}
}

package parse

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/event"
)

var ref = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestLineEvents(t *testing.T) {
	tests := []struct {
		name string
		typ  string
		line string
		want event.Event
	}{
		{"nginx combined", "nginx",
			`185.220.101.5 - - [25/Nov/2026:10:00:05 +0000] "GET /index.php?id=1 HTTP/1.1" 200 1234 "https://example.com/" "Mozilla/5.0 (X11)"`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("185.220.101.5"), Type: event.TypeHTTPAccess, Parser: "nginx",
				Method: "GET", Path: "/index.php?id=1", Proto: "HTTP/1.1", Status: 200, Bytes: 1234,
				Referer: "https://example.com/", UserAgent: "Mozilla/5.0 (X11)"}},
		{"nginx ipv6, offset, dash fields, static", "nginx",
			`2001:db8::7 - alice [25/Nov/2026:12:00:05 +0200] "GET /static/app.CSS?v=3 HTTP/2.0" 304 - "-" "-"`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("2001:db8::7"), Type: event.TypeHTTPAccess, Parser: "nginx",
				Method: "GET", Path: "/static/app.CSS?v=3", Proto: "HTTP/2.0", Status: 304, Static: true}},
		{"nginx negative offset", "nginx",
			`10.0.0.1 - - [25/Nov/2026:05:00:05 -0500] "HEAD / HTTP/1.0" 200 0 "-" "curl/8.5.0"`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("10.0.0.1"), Type: event.TypeHTTPAccess, Parser: "nginx",
				Method: "HEAD", Path: "/", Proto: "HTTP/1.0", Status: 200, UserAgent: "curl/8.5.0"}},
		{"apache vhost_combined", "apache",
			`www.example.org:443 192.0.2.9 - - [25/Nov/2026:10:00:05 +0000] "GET /x HTTP/1.1" 404 12 "-" "curl/8"`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("192.0.2.9"), Type: event.TypeHTTPAccess, Parser: "apache",
				Method: "GET", Path: "/x", Proto: "HTTP/1.1", Status: 404, Bytes: 12, UserAgent: "curl/8"}},
		{"nginx server name first, IPv6 client", "nginx",
			`shop.example 2001:db8::9 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("2001:db8::9"), Type: event.TypeHTTPAccess, Parser: "nginx",
				Method: "GET", Path: "/", Proto: "HTTP/1.1", Status: 200, Bytes: 1}},
		{"apache escapes", "apache",
			`192.0.2.9 - - [25/Nov/2026:10:00:05 +0000] "GET /a\"b HTTP/1.1" 404 12 "-" "say \"hi\" \\o/"`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("192.0.2.9"), Type: event.TypeHTTPAccess, Parser: "apache",
				Method: "GET", Path: `/a"b`, Proto: "HTTP/1.1", Status: 404, Bytes: 12, UserAgent: `say "hi" \o/`}},
		{"nginx hex escapes and garbage request", "nginx",
			`198.51.100.3 - - [25/Nov/2026:10:00:05 +0000] "\x16\x03\x01\x00\xA5" 400 157 "-" "-"`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("198.51.100.3"), Type: event.TypeHTTPAccess, Parser: "nginx",
				Path: "\x16\x03\x01\x00\xa5", Status: 400, Bytes: 157}},
		{"common log format", "apache",
			`::ffff:192.0.2.1 - frank [10/Oct/2026:13:55:36 -0700] "POST /wp-login.php HTTP/1.0" 200 2326`,
			event.Event{Time: ts("2026-10-10T20:55:36Z"), Source: ip("192.0.2.1"), Type: event.TypeHTTPAccess, Parser: "apache",
				Method: "POST", Path: "/wp-login.php", Proto: "HTTP/1.0", Status: 200, Bytes: 2326}},
		{"extra nginx fields after ua", "nginx",
			`203.0.113.4 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 5 "-" "ua" "1.1.1.1" rt=0.001`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("203.0.113.4"), Type: event.TypeHTTPAccess, Parser: "nginx",
				Method: "GET", Path: "/", Proto: "HTTP/1.1", Status: 200, Bytes: 5, UserAgent: "ua"}},
		{"nginx error log", "nginx",
			`2026/11/25 10:00:05 [error] 1234#1234: *5 open() "/usr/share/nginx/html/.env" failed (2: No such file or directory), client: 203.0.113.9, server: _, request: "GET /.env HTTP/1.1", host: "example.com"`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("203.0.113.9"), Type: event.TypeHTTPError, Parser: "nginx",
				Method: "GET", Path: "/.env", Proto: "HTTP/1.1",
				Message: `open() "/usr/share/nginx/html/.env" failed (2: No such file or directory)`}},
		{"sshd failed password", "syslog",
			`Nov 25 10:00:05 web-1 sshd[4242]: Failed password for root from 185.220.101.5 port 52114 ssh2`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("185.220.101.5"), Type: event.TypeSSHFailedAuth, Parser: "sshd",
				Host: "web-1", User: "root", Message: "Failed password for root from 185.220.101.5 port 52114 ssh2"}},
		{"sshd failed password invalid user with spaces", "sshd",
			`Nov  5 10:00:05 web-1 sshd[4242]: Failed password for invalid user oracle db from 2001:db8::1 port 52114 ssh2`,
			event.Event{Time: ts("2026-11-05T10:00:05Z"), Source: ip("2001:db8::1"), Type: event.TypeSSHFailedAuth, Parser: "sshd",
				Host: "web-1", User: "oracle db", InvalidUser: true,
				Message: "Failed password for invalid user oracle db from 2001:db8::1 port 52114 ssh2"}},
		{"sshd invalid user", "sshd",
			`Nov 25 10:00:05 web-1 sshd[4242]: Invalid user admin from 45.33.32.156 port 40000`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("45.33.32.156"), Type: event.TypeSSHInvalidUser, Parser: "sshd",
				Host: "web-1", User: "admin", InvalidUser: true, Message: "Invalid user admin from 45.33.32.156 port 40000"}},
		{"sshd preauth close", "sshd",
			`Nov 25 10:00:05 web-1 sshd[4242]: Connection closed by invalid user admin 45.33.32.156 port 40000 [preauth]`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("45.33.32.156"), Type: event.TypeSSHPreauthClose, Parser: "sshd",
				Host: "web-1", User: "admin", InvalidUser: true, Message: "Connection closed by invalid user admin 45.33.32.156 port 40000 [preauth]"}},
		{"sshd preauth close bare address", "sshd",
			`Nov 25 10:00:05 web-1 sshd-session[4242]: Connection reset by 45.33.32.156 port 40000 [preauth]`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("45.33.32.156"), Type: event.TypeSSHPreauthClose, Parser: "sshd",
				Host: "web-1", Message: "Connection reset by 45.33.32.156 port 40000 [preauth]"}},
		{"sshd too many failures", "sshd",
			`Nov 25 10:00:05 web-1 sshd[4242]: Disconnecting authenticating user root 45.33.32.156 port 40000: Too many authentication failures [preauth]`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("45.33.32.156"), Type: event.TypeSSHTooManyAuth, Parser: "sshd",
				Host: "web-1", User: "root", Message: "Disconnecting authenticating user root 45.33.32.156 port 40000: Too many authentication failures [preauth]"}},
		{"sshd max auth attempts", "sshd",
			`Nov 25 10:00:05 web-1 sshd[4242]: error: maximum authentication attempts exceeded for invalid user pi from 45.33.32.156 port 40000 ssh2 [preauth]`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("45.33.32.156"), Type: event.TypeSSHTooManyAuth, Parser: "sshd",
				Host: "web-1", User: "pi", InvalidUser: true, Message: "error: maximum authentication attempts exceeded for invalid user pi from 45.33.32.156 port 40000 ssh2 [preauth]"}},
		{"journal short-iso", "sshd",
			`2026-11-25T11:00:05+0100 web-2 sshd[99]: Failed publickey for git from 192.0.2.44 port 1 ssh2: RSA SHA256:abc`,
			event.Event{Time: ts("2026-11-25T10:00:05Z"), Source: ip("192.0.2.44"), Type: event.TypeSSHFailedAuth, Parser: "sshd",
				Host: "web-2", User: "git", Message: "Failed publickey for git from 192.0.2.44 port 1 ssh2: RSA SHA256:abc"}},
		{"journal short-precise", "sshd",
			`Nov 25 10:00:05.250000 web-1 sshd[4242]: Invalid user x from 192.0.2.7 port 5`,
			event.Event{Time: ts("2026-11-25T10:00:05.25Z"), Source: ip("192.0.2.7"), Type: event.TypeSSHInvalidUser, Parser: "sshd",
				Host: "web-1", User: "x", InvalidUser: true, Message: "Invalid user x from 192.0.2.7 port 5"}},
		{"rfc5424 with structured data", "syslog",
			`<38>1 2026-11-25T10:00:05.250Z web-3 sshd 77 - [meta seq="1\]x"][o k="v"] Failed password for root from 192.0.2.5 port 2 ssh2`,
			event.Event{Time: ts("2026-11-25T10:00:05.25Z"), Source: ip("192.0.2.5"), Type: event.TypeSSHFailedAuth, Parser: "sshd",
				Host: "web-3", User: "root", Message: "Failed password for root from 192.0.2.5 port 2 ssh2"}},
		{"rfc3164 with priority, nginx over syslog", "syslog",
			`<190>Nov 25 10:00:05 edge nginx: 192.0.2.8 - - [25/Nov/2026:10:00:04 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`,
			event.Event{Time: ts("2026-11-25T10:00:04Z"), Source: ip("192.0.2.8"), Type: event.TypeHTTPAccess, Parser: "nginx",
				Host: "edge", Method: "GET", Path: "/", Proto: "HTTP/1.1", Status: 200, Bytes: 1}},
		{"bare sshd message takes the transport time", "sshd",
			`Failed password for root from 192.0.2.6 port 2 ssh2`,
			event.Event{Time: ts("2026-11-25T09:59:00Z"), Source: ip("192.0.2.6"), Type: event.TypeSSHFailedAuth, Parser: "sshd",
				Host: "from-transport", User: "root", Message: "Failed password for root from 192.0.2.6 port 2 ssh2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{Reference: ref})
			l := acquire.Line{Text: tt.line, Type: tt.typ, Source: "test", Time: ts("2026-11-25T09:59:00Z")}
			if tt.name == "bare sshd message takes the transport time" {
				l.Host = "from-transport"
			}
			got, err := p.Line(l)
			if err != nil {
				t.Fatalf("Line: %v", err)
			}
			if d := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
				t.Errorf("event (-want +got):\n%s", d)
			}
		})
	}
}

func TestLineNoEvent(t *testing.T) {
	lines := []struct{ typ, line string }{
		{"sshd", `Nov 25 10:00:05 web-1 sshd[1]: Accepted publickey for deploy from 192.0.2.1 port 5 ssh2: ED25519 SHA256:x`},
		{"sshd", `Nov 25 10:00:05 web-1 CRON[2]: pam_unix(cron:session): session opened for user root`},
		{"sshd", `Nov 25 10:00:05 web-1 sshd[1]: Connection closed by 192.0.2.1 port 5`},
		{"sshd", `Nov 25 10:00:05 web-1 sshd[1]: Disconnecting: Too many authentication failures for root [preauth]`},
		{"nginx", `2026/11/25 10:00:05 [notice] 1#1: signal process started`},
	}
	for _, l := range lines {
		p := New(Config{Reference: ref})
		_, err := p.Line(acquire.Line{Text: l.line, Type: l.typ})
		if !errors.Is(err, ErrNoEvent) {
			t.Errorf("%q: err = %v, want ErrNoEvent", l.line, err)
		}
	}
}

func TestLineMalformed(t *testing.T) {
	tests := []struct{ typ, line, format, reason string }{
		{"nginx", ``, "nginx", "client address: missing"},
		{"nginx", `999.1.1.1 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1`, "nginx", "client address: not an IP address"},
		{"nginx", `1.1.1.1 - - [25/Nov/2026:10:00:05 +0000 "GET / HTTP/1.1" 200 1`, "nginx", "time: not [dd/Mon/yyyy:hh:mm:ss +zzzz]"},
		{"nginx", `1.1.1.1 - - [32/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1`, "nginx", "time: not [dd/Mon/yyyy:hh:mm:ss +zzzz]"},
		{"nginx", `1.1.1.1 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1 200 1`, "nginx", "request: unterminated quote"},
		{"nginx", `1.1.1.1 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 2x0 1`, "nginx", "status: not a 3-digit code"},
		{"nginx", `1.1.1.1 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1k`, "nginx", "bytes: not a number"},
		{"nginx", `1.1.1.1 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1 "ref`, "nginx", "referer: unterminated quote"},
		{"nginx", `2026/11/25 10:00:05 [error] 1#1: *1 x, client: nope, server: _`, "nginx_error", "client: not an IP address"},
		{"sshd", `just words`, "syslog", "header: no RFC 3164, ISO or RFC 5424 timestamp"},
		{"sshd", `Nov 25 10:00:05 web-1 sshd[1]: Failed password for root from 300.1.1.1 port 5 ssh2`, "sshd", "source: not an IP address"},
		{"sshd", `Nov 25 25:00:05 web-1 sshd[1]: Failed password for root from 1.1.1.1 port 5 ssh2`, "syslog", "time: not Mmm dd hh:mm:ss"},
		{"sshd", `<999>Nov 25 10:00:05 web-1 sshd[1]: x`, "syslog", "priority: not <0-191>"},
		{"sshd", `Nov 25 10:00:05.x web-1 sshd[1]: x`, "syslog", "time: bad fraction of a second"},
		{"nginx-json", `{}`, "unknown", `unknown log type "nginx-json"`},
	}
	for _, tt := range tests {
		p := New(Config{Reference: ref})
		_, err := p.Line(acquire.Line{Text: tt.line, Type: tt.typ, Source: "/var/log/x.log"})
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("%q: err = %v, want *Error", tt.line, err)
			continue
		}
		if pe.Format != tt.format || pe.Reason != tt.reason || pe.Source != "/var/log/x.log" {
			t.Errorf("%q: got %s/%q from %s, want %s/%q", tt.line, pe.Format, pe.Reason, pe.Source, tt.format, tt.reason)
		}
		var stats FormatStats
		for _, s := range p.Stats() {
			if s.Format == tt.format {
				stats = s
			}
		}
		if stats.Malformed != 1 {
			t.Errorf("%q: %s malformed count = %d, want 1", tt.line, tt.format, stats.Malformed)
		}
	}
}

// A December line read in January belongs to the previous year; a line
// from earlier the same day to this one.
func TestSyslogYearInference(t *testing.T) {
	tests := []struct {
		ref  time.Time
		line string
		want time.Time
	}{
		{time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), "Dec 31 23:59:59 h sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2",
			time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC)},
		{time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC), "Jan  1 00:00:01 h sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2",
			time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC)},
		{time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), "Nov 26 00:00:01 h sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2",
			time.Date(2026, 11, 26, 0, 0, 1, 0, time.UTC)},
		{time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC), "Feb 29 10:00:00 h sshd[1]: Failed password for root from 192.0.2.1 port 1 ssh2",
			time.Date(2028, 2, 29, 10, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		p := New(Config{Reference: tt.ref})
		ev, err := p.Line(acquire.Line{Text: tt.line, Type: "syslog"})
		if err != nil {
			t.Fatal(err)
		}
		if !ev.Time.Equal(tt.want) {
			t.Errorf("ref %s, %q: time %s, want %s", tt.ref, tt.line[:15], ev.Time, tt.want)
		}
	}
}

func TestStatsCount(t *testing.T) {
	p := New(Config{Reference: ref})
	for _, l := range []string{
		`1.1.1.1 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`,
		`1.1.1.1 - - [25/Nov/2026:10:00:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`,
		`bad`,
	} {
		_, _ = p.Line(acquire.Line{Text: l, Type: "nginx"}) // the counts are under test, and "bad" fails on purpose
	}
	got := p.Stats()[0]
	want := FormatStats{Format: "nginx", Events: 2, Malformed: 1}
	if got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
}

// A well-formed access line costs no allocation.
func TestAccessZeroAlloc(t *testing.T) {
	p := New(Config{Reference: ref})
	l := acquire.Line{Text: `2001:db8::7 - - [25/Nov/2026:10:00:05 +0000] "GET /wp-admin/x.php HTTP/1.1" 200 1234 "https://example.com/" "Mozilla/5.0"`, Type: "nginx"}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := p.Line(l); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("allocs per line = %v, want 0", allocs)
	}
	s := acquire.Line{Text: `Nov 25 10:00:05 web-1 sshd[4242]: Failed password for invalid user admin from 185.220.101.5 port 52114 ssh2`, Type: "sshd"}
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := p.Line(s); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("sshd allocs per line = %v, want 0", allocs)
	}
}

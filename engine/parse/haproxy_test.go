package parse

import (
	"errors"
	"testing"

	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/event"
)

const (
	haproxyLine   = `Nov 25 10:00:05 lb-1 haproxy[14389]: 203.0.113.7:33317 [25/Nov/2026:10:00:04.655] http-in~ static/srv1 10/0/30/69/109 404 2750 - - ---- 1/1/1/1/0 0/0 {example.org|curl/8.5} {} "GET /wp-login.php?x=1 HTTP/1.1"`
	haproxyBareV6 = `2001:db8::7:4444 [25/Nov/2026:10:00:06.001] fe be/s1 0/0/1/2/3 -1 0 - - CD-- 5/5/0/0/0 0/0 "POST /api HTTP/2.0"`
)

func TestHAProxy(t *testing.T) {
	p := New(Config{Reference: ts("2026-11-25T12:00:00Z")})
	ev, err := p.Line(acquire.Line{Text: haproxyLine, Type: "haproxy"})
	if err != nil {
		t.Fatal(err)
	}
	want := event.Event{Time: ts("2026-11-25T10:00:04Z"), Source: ip("203.0.113.7"), Type: event.TypeHTTPAccess, Parser: "haproxy",
		Host: "lb-1", Method: "GET", Path: "/wp-login.php?x=1", Proto: "HTTP/1.1", Status: 404, Bytes: 2750}
	if ev != want {
		t.Fatalf("got  %+v\nwant %+v", ev, want)
	}
	// The same line in an auth.log/syslog feed.
	if ev, err := p.Line(acquire.Line{Text: haproxyLine, Type: "syslog"}); err != nil || ev.Parser != "haproxy" || ev.Status != 404 {
		t.Fatalf("syslog feed: %+v %v", ev, err)
	}
	ev, err = p.Line(acquire.Line{Text: haproxyBareV6, Type: "haproxy"})
	if err != nil || ev.Source != ip("2001:db8::7") || ev.Status != 0 || ev.Method != "POST" || ev.Proto != "HTTP/2.0" {
		t.Fatalf("bare IPv6, status -1: %+v %v", ev, err)
	}
	if _, err := p.Line(acquire.Line{Text: "Nov 25 10:00:05 lb-1 haproxy[1]: Proxy http-in started.", Type: "haproxy"}); err == nil {
		t.Error("a HAProxy start-up message became an event")
	}
	for l, reason := range map[string]string{
		`x:1 [25/Nov/2026:10:00:06.001] fe be/s1 0/0/1/2/3 200 0 - - ---- 0/0/0/0/0 0/0 "GET / HTTP/1.1"`:          "client address: not an IP address",
		`192.0.2.1:1 [25/Nov/2026] fe be/s1 0/0/1/2/3 200 0 - - ---- 0/0/0/0/0 0/0 "GET / HTTP/1.1"`:               "accept date: not [dd/Mon/yyyy:hh:mm:ss.mmm]",
		`192.0.2.1:1 [25/Nov/2026:10:00:06.001] fe be/s1 0/0/1/2/3 2000 0 - - ---- 0/0/0/0/0 0/0 "GET / HTTP/1.1"`: "status: not a 3-digit code",
		`192.0.2.1:1 [25/Nov/2026:10:00:06.001] fe be/s1 0/0/1/2/3 200 x - - ---- 0/0/0/0/0 0/0 "GET / HTTP/1.1"`:  "bytes: not a number",
		`192.0.2.1:1 [25/Nov/2026:10:00:06.001] fe be/s1 0/0/1/2/3 200 0 - - ---- 0/0/0/0/0 0/0 GET / HTTP/1.1`:    "request: not quoted",
	} {
		_, err := p.Line(acquire.Line{Text: l, Type: "haproxy", Source: "h"})
		var pe *Error
		if !errors.As(err, &pe) || pe.Reason != reason {
			t.Errorf("%s: %v, want %s", l, err, reason)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = p.Line(acquire.Line{Text: haproxyLine, Type: "haproxy"}) }); n != 0 {
		t.Errorf("%v allocations per line, want 0", n)
	}
}

func FuzzHAProxy(f *testing.F) {
	f.Add(haproxyLine)
	f.Add(haproxyBareV6)
	p := New(Config{})
	f.Fuzz(func(t *testing.T, s string) {
		ev, err := p.Line(acquire.Line{Text: s, Type: "haproxy"})
		if err == nil && (!ev.Source.IsValid() || ev.Type != event.TypeHTTPAccess) {
			t.Fatalf("accepted a bad event: %+v", ev)
		}
	})
}

func BenchmarkHAProxy(b *testing.B) {
	p := New(Config{Reference: ts("2026-11-25T12:00:00Z")})
	l := acquire.Line{Text: haproxyLine, Type: "haproxy"}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = p.Line(l)
	}
}

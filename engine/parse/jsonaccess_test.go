package parse

import (
	"errors"
	"testing"

	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/event"
)

// Lines written from Traefik's and Caddy's documented JSON access-log
// fields, with fields of theirs the parser ignores.
const (
	traefikJSON = `{"ClientAddr":"203.0.113.7:51234","ClientHost":"203.0.113.7","ClientPort":"51234","ClientUsername":"-","DownstreamContentSize":512,"DownstreamStatus":401,"Duration":1200000,"OriginStatus":401,"RequestAddr":"shop.example","RequestHost":"shop.example","RequestMethod":"POST","RequestPath":"/login?next=/","RequestProtocol":"HTTP/2.0","RouterName":"shop@docker","StartUTC":"2026-11-25T10:00:05.123456789Z","entryPointName":"websecure","level":"info","msg":"","request_User-Agent":"curl/8.5.0","time":"2026-11-25T10:00:05Z"}`
	caddyJSON   = `{"level":"info","ts":1795600805.5,"logger":"http.log.access.log0","msg":"handled request","request":{"remote_ip":"10.0.0.2","remote_port":"40000","client_ip":"2001:db8::66","proto":"HTTP/1.1","method":"GET","host":"shop.example","uri":"/static/app.js","headers":{"User-Agent":["Mozilla/5.0"],"Referer":["https://shop.example/"]},"tls":{"resumed":false}},"bytes_read":0,"user_id":"","duration":0.0012,"size":2048,"status":200,"resp_headers":{"Server":["Caddy"]}}`
)

func TestTraefikCaddy(t *testing.T) {
	p := New(Config{})
	ev, err := p.Line(acquire.Line{Text: traefikJSON, Type: "traefik"})
	if err != nil {
		t.Fatal(err)
	}
	want := event.Event{Time: ts("2026-11-25T10:00:05.123456789Z"), Source: ip("203.0.113.7"), Type: event.TypeHTTPAccess,
		Parser: "traefik", Method: "POST", Path: "/login?next=/", Proto: "HTTP/2.0", Status: 401, Bytes: 512, UserAgent: "curl/8.5.0"}
	if ev != want {
		t.Fatalf("traefik:\n got  %+v\nwant %+v", ev, want)
	}
	ev, err = p.Line(acquire.Line{Text: caddyJSON, Type: "caddy"})
	if err != nil {
		t.Fatal(err)
	}
	want = event.Event{Time: ts("2026-11-25T10:00:05.5Z"), Source: ip("2001:db8::66"), Type: event.TypeHTTPAccess,
		Parser: "caddy", Method: "GET", Path: "/static/app.js", Proto: "HTTP/1.1", Status: 200, Bytes: 2048,
		UserAgent: "Mozilla/5.0", Referer: "https://shop.example/", Static: true}
	if ev != want {
		t.Fatalf("caddy:\n got  %+v\nwant %+v", ev, want)
	}
	if _, err := p.Line(acquire.Line{Text: `{"level":"info","ts":1795600805.5,"logger":"tls","msg":"cert renewed"}`, Type: "caddy"}); !errors.Is(err, ErrNoEvent) {
		t.Errorf("caddy non-access entry: %v", err)
	}
	for _, c := range []struct{ typ, line, reason string }{
		{"traefik", `not json`, "traefik: not a JSON object"},
		{"traefik", `{"ClientHost":"x","StartUTC":"2026-11-25T10:00:05Z"}`, "traefik: ClientHost: not an IP address"},
		{"traefik", `{"ClientHost":"192.0.2.1","StartUTC":"now"}`, "traefik: StartUTC: not an RFC 3339 time"},
		{"traefik", `{"ClientHost":"192.0.2.1","StartUTC":"2026-11-25T10:00:05Z","DownstreamStatus":0}`, "traefik: DownstreamStatus: not an HTTP status"},
		{"caddy", `{"logger":"http.log.access","ts":1,"status":200}`, "caddy: access entry without request"},
		{"caddy", `{"ts":1795600805,"status":200,"request":{"client_ip":"nope","method":"GET","uri":"/"}}`, "caddy: client_ip: not an IP address"},
		{"caddy", `{"ts":"x"}`, "caddy: not a JSON object"},
		{"caddy", `{"status":200,"request":{"client_ip":"192.0.2.1","method":"GET","uri":"/"}}`, "caddy: ts: not seconds since the epoch"},
	} {
		_, err := p.Line(acquire.Line{Text: c.line, Type: c.typ, Source: "s"})
		var pe *Error
		if !errors.As(err, &pe) || pe.Reason != c.reason {
			t.Errorf("%s %s: %v, want %s", c.typ, c.line, err, c.reason)
		}
	}
}

func FuzzTraefikCaddy(f *testing.F) {
	f.Add("traefik", traefikJSON)
	f.Add("caddy", caddyJSON)
	p := New(Config{})
	f.Fuzz(func(t *testing.T, typ, s string) {
		if typ != "traefik" {
			typ = "caddy"
		}
		ev, err := p.Line(acquire.Line{Text: s, Type: typ})
		if err == nil && (!ev.Source.IsValid() || ev.Status < 100 || ev.Status > 599) {
			t.Fatalf("accepted a bad event: %+v", ev)
		}
	})
}

func BenchmarkTraefikCaddy(b *testing.B) {
	p := New(Config{})
	for _, c := range []struct{ typ, line string }{{"traefik", traefikJSON}, {"caddy", caddyJSON}} {
		b.Run(c.typ, func(b *testing.B) {
			l := acquire.Line{Text: c.line, Type: c.typ}
			b.ReportAllocs()
			for b.Loop() {
				_, _ = p.Line(l)
			}
		})
	}
}

package parse

import (
	"errors"
	"testing"

	"github.com/portcullis-ips/portcullis/engine/acquire"
)

// checkLine parses line as typ and checks the invariants every outcome
// must keep: no panic, an event has a source and a type, an error is
// ErrNoEvent or an *Error naming format and reason.
func checkLine(t *testing.T, typ, line string) {
	p := New(Config{Reference: ref})
	ev, err := p.Line(acquire.Line{Text: line, Type: typ, Source: "fuzz"})
	switch {
	case err == nil:
		if !ev.Source.IsValid() || ev.Type == "" || ev.Parser == "" {
			t.Fatalf("%q: event without source, type or parser: %+v", line, ev)
		}
		if ev.Source.Zone() != "" || ev.Source.Is4In6() {
			t.Fatalf("%q: source %s not canonical", line, ev.Source)
		}
		if ev.Status < 0 || ev.Status > 599 || ev.Bytes < 0 {
			t.Fatalf("%q: status %d bytes %d", line, ev.Status, ev.Bytes)
		}
		// The event survives the re-keying encoding.
		b, err := ev.MarshalBinary()
		if err != nil {
			t.Fatalf("%q: encode: %v", line, err)
		}
		var back = ev
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatalf("%q: decode: %v", line, err)
		}
	case errors.Is(err, ErrNoEvent):
	default:
		var pe *Error
		if !errors.As(err, &pe) || pe.Reason == "" || pe.Format == "" || pe.Source != "fuzz" {
			t.Fatalf("%q: error %v is not a complete *Error", line, err)
		}
	}
}

func FuzzNginx(f *testing.F) {
	f.Add(`185.220.101.5 - - [25/Nov/2026:10:00:05 +0000] "GET /index.php HTTP/1.1" 200 1234 "-" "Mozilla/5.0"`)
	f.Add(`2001:db8::7 - - [25/Nov/2026:12:00:05 +0200] "GET /a\"b HTTP/2.0" 304 - "-" "\x22x\\"`)
	f.Add(`::ffff:192.0.2.1 - frank [10/Oct/2026:13:55:36 -0700] "POST /wp-login.php HTTP/1.0" 200 2326`)
	f.Add(`www.example.org:443 192.0.2.9 - - [25/Nov/2026:10:00:05 +0000] "GET /x HTTP/1.1" 404 12 "-" "curl/8"`)
	f.Fuzz(func(t *testing.T, line string) { checkLine(t, "nginx", line) })
}

func FuzzNginxError(f *testing.F) {
	f.Add(`2026/11/25 10:00:05 [error] 1234#1234: *5 open() "/x" failed (2: No such file), client: 203.0.113.9, server: _, request: "GET /.env HTTP/1.1", host: "h"`)
	f.Add(`2026/11/25 10:00:05 [notice] 1#1: signal process started`)
	f.Fuzz(func(t *testing.T, line string) { checkLine(t, "nginx", line) })
}

func FuzzSSHD(f *testing.F) {
	f.Add(`Nov 25 10:00:05 web-1 sshd[4242]: Failed password for invalid user a b from 185.220.101.5 port 52114 ssh2`)
	f.Add(`Nov 25 10:00:05 web-1 sshd[4242]: Connection closed by authenticating user root 2001:db8::1 port 40000 [preauth]`)
	f.Add(`Nov 25 10:00:05 web-1 sshd[4242]: Disconnecting invalid user x 45.33.32.156 port 40000: Too many authentication failures [preauth]`)
	f.Add(`error: maximum authentication attempts exceeded for root from 1.2.3.4 port 1 ssh2 [preauth]`)
	f.Add(`Invalid user  from 1.2.3.4`)
	f.Fuzz(func(t *testing.T, line string) { checkLine(t, "sshd", line) })
}

func FuzzSyslog(f *testing.F) {
	f.Add(`<38>1 2026-11-25T10:00:05.250Z web-3 sshd 77 - [meta seq="1\]x"] Failed password for root from 192.0.2.5 port 2 ssh2`)
	f.Add(`<190>Nov 25 10:00:05 edge nginx: 192.0.2.8 - - [25/Nov/2026:10:00:04 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`)
	f.Add(`2026-11-25T11:00:05.123456+01:00 web-2 sshd[99]: Invalid user x from 192.0.2.44 port 1`)
	f.Fuzz(func(t *testing.T, line string) { checkLine(t, "syslog", line) })
}

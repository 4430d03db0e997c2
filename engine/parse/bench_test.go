package parse

import (
	"errors"
	"testing"

	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

var benchLines = []struct{ name, typ, line string }{
	{"nginx_combined", "nginx", `185.220.101.5 - - [25/Nov/2026:10:00:05 +0000] "GET /blog/post-42?ref=home HTTP/1.1" 200 5123 "https://www.google.com/" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"`},
	{"nginx_ipv6", "nginx", `2001:db8:64:12::7a1 - - [25/Nov/2026:10:00:05 +0000] "GET /static/app.js HTTP/2.0" 304 0 "https://example.com/" "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15"`},
	{"nginx_error", "nginx", `2026/11/25 10:00:05 [error] 1234#1234: *5 open() "/usr/share/nginx/html/.env" failed (2: No such file or directory), client: 203.0.113.9, server: _, request: "GET /.env HTTP/1.1", host: "example.com"`},
	{"sshd_rfc3164", "sshd", `Nov 25 10:00:05 web-1 sshd[4242]: Failed password for invalid user admin from 185.220.101.5 port 52114 ssh2`},
	{"sshd_noise", "sshd", `Nov 25 10:00:05 web-1 CRON[4243]: pam_unix(cron:session): session opened for user root(uid=0) by root(uid=0)`},
	{"syslog_rfc5424", "syslog", `<38>1 2026-11-25T10:00:05.250Z web-3 sshd 77 - - Failed password for root from 192.0.2.5 port 2 ssh2`},
}

// BenchmarkParse reports, per format, lines/s (wall), lines per CPU-second
// (per core, robust to other tenants of a shared machine) and allocations
// per line.
func BenchmarkParse(b *testing.B) {
	for _, bl := range benchLines {
		b.Run(bl.name, func(b *testing.B) {
			p := New(Config{Reference: ref})
			l := acquire.Line{Text: bl.line, Type: bl.typ, Source: "bench"}
			b.ReportAllocs()
			b.SetBytes(int64(len(bl.line)))
			cpu0 := testenv.ProcessCPU(b).Nanoseconds()
			for b.Loop() {
				if _, err := p.Line(l); err != nil && !errors.Is(err, ErrNoEvent) {
					b.Fatal(err)
				}
			}
			cpu := testenv.ProcessCPU(b).Nanoseconds() - cpu0
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lines/s")
			b.ReportMetric(float64(b.N)/(float64(cpu)/1e9), "lines/cpu-s")
		})
	}
}

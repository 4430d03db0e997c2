package parse

import (
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// isErrorLogStart tells an nginx error-log line ("2026/11/25 10:00:05 [")
// from an access-log line, which starts with an address.
func isErrorLogStart(s string) bool {
	return len(s) >= 21 && s[4] == '/' && s[7] == '/' && s[10] == ' ' && s[13] == ':' && s[19] == ' ' && s[20] == '['
}

// nginxError parses an nginx error-log line:
//
//	2026/11/25 10:00:05 [error] 1234#1234: *5 open() "/x" failed (2: ...), client: 1.2.3.4, server: _, request: "GET /x HTTP/1.1", host: "h"
//
// Lines without a client (start-up notices) carry no event.
func (p *Parser) nginxError(s string, ev *event.Event) string {
	ev.Type = event.TypeHTTPError
	if len(s) < 21 {
		return "time: truncated"
	}
	ts := s[:19]
	if ts == p.errTS {
		ev.Time = p.errTime
	} else {
		y, ok1 := num(ts[0:4])
		mo, ok2 := num(ts[5:7])
		d, ok3 := num(ts[8:10])
		hh, ok4 := num(ts[11:13])
		mm, ok5 := num(ts[14:16])
		ss, ok6 := num(ts[17:19])
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || ts[16] != ':' || mo < 1 || mo > 12 || !validClock(d, hh, mm, ss) {
			return "time: not yyyy/mm/dd hh:mm:ss"
		}
		t := time.Date(y, time.Month(mo), d, hh, mm, ss, 0, p.loc).UTC()
		p.errTS, p.errTime = ts, t
		ev.Time = t
	}
	s = s[20:]
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return "level: unterminated"
	}
	s = s[end+1:]
	// Skip " PID#TID: " and the optional "*CONN " connection number.
	if i := strings.Index(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > 0 && s[0] == '*' {
		if i := strings.IndexByte(s, ' '); i >= 0 {
			s = s[i+1:]
		}
	}
	ci := strings.Index(s, ", client: ")
	if ci < 0 {
		return noEvent
	}
	ev.Message = s[:ci]
	rest := s[ci+len(", client: "):]
	j := strings.IndexByte(rest, ',')
	if j < 0 {
		j = len(rest)
	}
	a, ok := parseAddr(rest[:j])
	if !ok {
		return "client: not an IP address"
	}
	ev.Source = a
	if ri := strings.Index(rest, `, request: "`); ri >= 0 {
		req, _, ok := quoted(rest[ri+len(`, request: `):])
		if !ok {
			return "request: unterminated quote"
		}
		splitRequest(req, ev)
	}
	return ""
}

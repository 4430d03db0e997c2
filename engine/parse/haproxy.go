package parse

import (
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// haproxy parses HAProxy's HTTP log format (option httplog), the message
// of a "haproxy[PID]:" syslog line:
//
//	IP:PORT [06/Feb/2026:12:14:14.655] FRONTEND BACKEND/SERVER Tq/Tw/Tc/Tr/Tt STATUS BYTES
//	REQCOOKIE RESCOOKIE TERM ACT/FE/BE/SRV/RETRIES SRVQ/BEQ [{HDRS}] [{HDRS}] "METHOD URI PROTO"
//
// The accept date has no zone: it is taken in the parser's location. A
// status of -1 (no response) gives Status 0. Captured headers are skipped.
func (p *Parser) haproxy(s string, ev *event.Event) string {
	ev.Type = event.TypeHTTPAccess
	ev.Parser = "haproxy"
	i := strings.IndexByte(s, ' ')
	if i <= 0 {
		return "client address: missing"
	}
	hp := s[:i]
	c := strings.LastIndexByte(hp, ':')
	if c <= 0 {
		return "client address: no port"
	}
	host := hp[:c]
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	a, ok := parseAddr(host)
	if !ok {
		return "client address: not an IP address"
	}
	ev.Source = a
	s = s[i+1:]
	// [dd/Mon/yyyy:hh:mm:ss.mmm]
	end := strings.IndexByte(s, ']')
	if len(s) < 22 || s[0] != '[' || end < 21 || end > 30 {
		return "accept date: not [dd/Mon/yyyy:hh:mm:ss.mmm]"
	}
	ts := s[1:21]
	if ts == p.haproxyTS {
		ev.Time = p.haproxyTime
	} else {
		t, err := time.ParseInLocation("02/Jan/2006:15:04:05", ts, p.loc)
		if err != nil {
			return "accept date: not [dd/Mon/yyyy:hh:mm:ss.mmm]"
		}
		p.haproxyTS, p.haproxyTime = ts, t.UTC()
		ev.Time = p.haproxyTime
	}
	s = strings.TrimPrefix(s[end+1:], " ")
	// Frontend, backend/server, timers.
	var tok string
	for range 3 {
		if _, s, ok = field(s); !ok {
			return "frontend/backend/timers: truncated"
		}
	}
	if tok, s, ok = field(s); !ok {
		return "status: missing"
	}
	switch {
	case tok == "-1":
		ev.Status = 0
	case len(tok) == 3 && tok[0] >= '1' && tok[0] <= '5' && isDigit(tok[1]) && isDigit(tok[2]):
		ev.Status = int(tok[0]-'0')*100 + int(tok[1]-'0')*10 + int(tok[2]-'0')
	default:
		return "status: not a 3-digit code"
	}
	if tok, s, ok = field(s); !ok {
		return "bytes: missing"
	}
	if len(tok) == 0 || len(tok) > 18 {
		return "bytes: not a number"
	}
	var n int64
	for k := 0; k < len(tok); k++ {
		if !isDigit(tok[k]) {
			return "bytes: not a number"
		}
		n = n*10 + int64(tok[k]-'0')
	}
	ev.Bytes = n
	// Cookies, termination state, connection counts, queues.
	for range 5 {
		if _, s, ok = field(s); !ok {
			return "counters: truncated"
		}
	}
	// Captured headers, up to two {...} blocks.
	for range 2 {
		if !strings.HasPrefix(s, "{") {
			break
		}
		j := strings.IndexByte(s, '}')
		if j < 0 {
			return "captured headers: unterminated"
		}
		s = strings.TrimPrefix(s[j+1:], " ")
	}
	if !strings.HasPrefix(s, `"`) {
		return "request: not quoted"
	}
	req, _, ok := quoted(s)
	if !ok {
		// HAProxy truncates long request lines without closing the quote.
		req = s[1:]
	}
	splitRequest(req, ev)
	return ""
}

// field returns the space-separated token at the start of s and the rest
// after one space.
func field(s string) (string, string, bool) {
	i := strings.IndexByte(s, ' ')
	if i <= 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

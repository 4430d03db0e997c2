package parse

import (
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// access parses the nginx/Apache combined or common log format:
//
//	IP IDENT USER [25/Nov/2026:10:00:05 +0000] "GET /p HTTP/1.1" 200 123 "ref" "ua" ...
//
// Fields after the user agent (nginx log_format extensions) are ignored.
// Apache's vhost_combined (and nginx formats that start with the server
// name) put a virtual host, with an optional :port, first; it is skipped.
func (p *Parser) access(s string, ev *event.Event) string {
	ev.Type = event.TypeHTTPAccess
	i := strings.IndexByte(s, ' ')
	if i <= 0 {
		return "client address: missing"
	}
	a, ok := parseAddr(s[:i])
	if !ok && isVhost(s[:i]) {
		if j := strings.IndexByte(s[i+1:], ' '); j > 0 {
			if a, ok = parseAddr(s[i+1 : i+1+j]); ok {
				s = s[i+1:]
				i = j
			}
		}
	}
	if !ok {
		return "client address: not an IP address"
	}
	ev.Source = a
	s = s[i+1:]
	// ident and user: tokens without spaces; the user may be quoted-free "-".
	for range 2 {
		i = strings.IndexByte(s, ' ')
		if i < 0 {
			return "ident/user: truncated"
		}
		s = s[i+1:]
	}
	if len(s) < 28 || s[0] != '[' || s[27] != ']' {
		return "time: not [dd/Mon/yyyy:hh:mm:ss +zzzz]"
	}
	ts := s[1:27]
	if ts == p.nginxTS {
		ev.Time = p.nginxTime
	} else {
		t, ok := parseNginxTime(ts)
		if !ok {
			return "time: not [dd/Mon/yyyy:hh:mm:ss +zzzz]"
		}
		p.nginxTS, p.nginxTime = ts, t
		ev.Time = t
	}
	s = s[28:]
	if len(s) < 2 || s[0] != ' ' || s[1] != '"' {
		return "request: not quoted"
	}
	req, rest, ok := quoted(s[1:])
	if !ok {
		return "request: unterminated quote"
	}
	splitRequest(req, ev)
	s = rest
	if len(s) < 5 || s[0] != ' ' {
		return "status: missing"
	}
	st := s[1:4]
	if st[0] < '1' || st[0] > '5' || !isDigit(st[1]) || !isDigit(st[2]) {
		return "status: not a 3-digit code"
	}
	ev.Status = int(st[0]-'0')*100 + int(st[1]-'0')*10 + int(st[2]-'0')
	s = s[4:]
	if len(s) < 2 || s[0] != ' ' {
		return "bytes: missing"
	}
	s = s[1:]
	i = strings.IndexByte(s, ' ')
	if i < 0 {
		i = len(s)
	}
	b := s[:i]
	s = s[i:]
	if b != "-" {
		if len(b) == 0 || len(b) > 18 {
			return "bytes: not a number"
		}
		var n int64
		for j := 0; j < len(b); j++ {
			if !isDigit(b[j]) {
				return "bytes: not a number"
			}
			n = n*10 + int64(b[j]-'0')
		}
		ev.Bytes = n
	}
	if s == "" {
		return "" // common log format ends here
	}
	if len(s) < 2 || s[1] != '"' {
		return "referer: not quoted"
	}
	ref, rest, ok := quoted(s[1:])
	if !ok {
		return "referer: unterminated quote"
	}
	if ref != "-" {
		ev.Referer = ref
	}
	s = rest
	if len(s) < 2 || s[0] != ' ' || s[1] != '"' {
		return "user agent: not quoted"
	}
	ua, _, ok := quoted(s[1:])
	if !ok {
		return "user agent: unterminated quote"
	}
	if ua != "-" {
		ev.UserAgent = ua
	}
	return ""
}

// splitRequest splits "METHOD TARGET PROTO". A request line that is not of
// that shape (garbage sent to the port, "-") leaves Method and Path empty
// and keeps the raw text as Path only when it has no spaces to split on.
func splitRequest(req string, ev *event.Event) {
	if req == "-" || req == "" {
		return
	}
	i := strings.IndexByte(req, ' ')
	if i < 0 {
		ev.Path = req
		return
	}
	ev.Method = req[:i]
	rest := req[i+1:]
	if j := strings.LastIndexByte(rest, ' '); j >= 0 && strings.HasPrefix(rest[j+1:], "HTTP/") {
		ev.Path, ev.Proto = rest[:j], rest[j+1:]
	} else {
		ev.Path = rest
	}
	ev.Static = isStatic(ev.Path)
}

// quoted reads a double-quoted field at the start of s (s[0] == '"') and
// returns its content, the text after the closing quote, and whether the
// field was terminated. Backslash escapes (\" \\ Apache, \xHH nginx) are
// decoded; only then does the field cost an allocation.
func quoted(s string) (string, string, bool) {
	body := s[1:]
	i := strings.IndexByte(body, '"')
	if i < 0 {
		return "", "", false
	}
	if strings.IndexByte(body[:i], '\\') < 0 {
		return body[:i], body[i+1:], true // the common case: no escapes
	}
	for j := 0; j < len(body); j++ {
		switch body[j] {
		case '\\':
			j++ // skip the escaped byte
		case '"':
			return unescape(body[:j]), body[j+1:], true
		}
	}
	return "", "", false
}

func unescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		switch n := s[i]; n {
		case 'x':
			if i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
				b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
				i += 2
			} else {
				b.WriteString(`\x`)
			}
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		default:
			b.WriteByte(n)
		}
	}
	return b.String()
}

// isVhost accepts a host name with an optional :port (letters, digits,
// '-', '.', '_', ':'), at most 260 bytes.
func isVhost(s string) bool {
	if s == "" || len(s) > 260 {
		return false
	}
	for k := 0; k < len(s); k++ {
		c := s[k]
		if !isDigit(c) && (c|0x20 < 'a' || c|0x20 > 'z') && c != '-' && c != '.' && c != '_' && c != ':' {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'f')
}

func unhex(c byte) byte {
	if isDigit(c) {
		return c - '0'
	}
	return c | 0x20 - 'a' + 10
}

// parseAddr parses an IPv4 or IPv6 client address; v4-mapped v6 addresses
// are unmapped and zones dropped so one client has one key.
func parseAddr(s string) (netip.Addr, bool) {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func parseMonth(s string) (time.Month, bool) {
	for i, m := range months {
		if s == m {
			return time.Month(i + 1), true
		}
	}
	return 0, false
}

// num parses a fixed-width decimal field.
func num(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, len(s) > 0
}

// parseNginxTime parses "25/Nov/2026:10:00:05 +0000" into UTC.
func parseNginxTime(s string) (time.Time, bool) {
	if len(s) != 26 || s[2] != '/' || s[6] != '/' || s[11] != ':' || s[14] != ':' || s[17] != ':' || s[20] != ' ' {
		return time.Time{}, false
	}
	d, ok1 := num(s[0:2])
	mon, ok2 := parseMonth(s[3:6])
	y, ok3 := num(s[7:11])
	hh, ok4 := num(s[12:14])
	mm, ok5 := num(s[15:17])
	ss, ok6 := num(s[18:20])
	oh, ok7 := num(s[22:24])
	om, ok8 := num(s[24:26])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || !ok7 || !ok8 || (s[21] != '+' && s[21] != '-') {
		return time.Time{}, false
	}
	if !validClock(d, hh, mm, ss) || oh > 23 || om > 59 {
		return time.Time{}, false
	}
	off := time.Duration(oh)*time.Hour + time.Duration(om)*time.Minute
	if s[21] == '-' {
		off = -off
	}
	return time.Date(y, mon, d, hh, mm, ss, 0, time.UTC).Add(-off), true
}

func validClock(d, hh, mm, ss int) bool {
	return d >= 1 && d <= 31 && hh <= 23 && mm <= 59 && ss <= 60
}

// isStatic reports whether a request target names a static asset, judged
// by the extension of its path (query and fragment ignored).
func isStatic(p string) bool {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	dot := strings.LastIndexByte(p, '.')
	if dot < 0 || strings.IndexByte(p[dot:], '/') >= 0 {
		return false
	}
	ext := p[dot+1:]
	if len(ext) > 5 {
		return false
	}
	var buf [5]byte
	for i := 0; i < len(ext); i++ {
		buf[i] = lower(ext[i])
	}
	switch string(buf[:len(ext)]) {
	case "js", "css", "png", "jpg", "jpeg", "gif", "ico", "svg", "webp", "avif", "bmp",
		"woff", "woff2", "ttf", "otf", "eot", "map", "mp4", "webm", "mp3", "ogg", "wav":
		return true
	}
	return false
}

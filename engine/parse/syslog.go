package parse

import (
	"strings"
	"time"
)

// header is a parsed syslog header.
type header struct {
	time    time.Time
	host    string
	program string
	msg     string
}

// syslogHeader parses the three header forms found in files and on the
// wire: RFC 3164 ("<PRI>Nov 25 10:00:05 host prog[pid]: msg", PRI
// optional), the ISO form of rsyslog and journalctl -o short-iso
// ("2026-11-25T10:00:05.123+00:00 host prog[pid]: msg") and RFC 5424
// ("<PRI>1 2026-11-25T10:00:05Z host app procid msgid [sd] msg").
func (p *Parser) syslogHeader(s string) (header, string) {
	var h header
	if len(s) > 0 && s[0] == '<' {
		end := strings.IndexByte(s, '>')
		if end < 2 || end > 4 {
			return h, "priority: not <0-191>"
		}
		pri, ok := num(s[1:end])
		if !ok || pri > 191 {
			return h, "priority: not <0-191>"
		}
		s = s[end+1:]
		if len(s) > 2 && s[0] == '1' && s[1] == ' ' {
			return p.rfc5424(s[2:])
		}
	}
	var rest string
	if len(s) >= 16 && s[3] == ' ' && s[6] == ' ' && (s[15] == ' ' || s[15] == '.') {
		ts := s[:15]
		if ts == p.syslogTS {
			h.time = p.syslogTime
		} else {
			t, ok := p.rfc3164Time(ts)
			if !ok {
				return h, "time: not Mmm dd hh:mm:ss"
			}
			p.syslogTS, p.syslogTime = ts, t
			h.time = t
		}
		rest = s[16:]
		if s[15] == '.' {
			// journalctl -o short-precise: "Nov 25 10:00:05.123456 host ..."
			i := 16
			for i < len(s) && isDigit(s[i]) {
				i++
			}
			if i == 16 || i >= len(s) || s[i] != ' ' {
				return h, "time: bad fraction of a second"
			}
			h.time = h.time.Add(fraction(s[16:i]))
			rest = s[i+1:]
		}
	} else if len(s) >= 20 && s[4] == '-' && s[10] == 'T' {
		sp := strings.IndexByte(s, ' ')
		if sp < 0 {
			return h, "header: truncated after time"
		}
		t, ok := parseRFC3339(s[:sp])
		if !ok {
			return h, "time: not RFC 3339"
		}
		h.time = t
		rest = s[sp+1:]
	} else {
		return h, "header: no RFC 3164, ISO or RFC 5424 timestamp"
	}
	sp := strings.IndexByte(rest, ' ')
	if sp <= 0 {
		return h, "header: no host name"
	}
	h.host = rest[:sp]
	rest = rest[sp+1:]
	// TAG: program[pid]: or program:
	colon := strings.IndexByte(rest, ':')
	if colon <= 0 {
		return h, "header: no program tag"
	}
	tag := rest[:colon]
	if i := strings.IndexByte(tag, '['); i > 0 {
		tag = tag[:i]
	}
	if strings.IndexByte(tag, ' ') >= 0 {
		return h, "header: program tag contains a space"
	}
	h.program = tag
	h.msg = strings.TrimPrefix(rest[colon+1:], " ")
	return h, ""
}

// rfc5424 parses the part after "<PRI>1 ".
func (p *Parser) rfc5424(s string) (header, string) {
	var h header
	var f [5]string // timestamp host app procid msgid
	for i := range f {
		sp := strings.IndexByte(s, ' ')
		if sp <= 0 {
			return h, "rfc5424: header truncated"
		}
		f[i], s = s[:sp], s[sp+1:]
	}
	if f[0] != "-" {
		t, ok := parseRFC3339(f[0])
		if !ok {
			return h, "rfc5424: time: not RFC 3339"
		}
		h.time = t
	}
	if f[1] != "-" {
		h.host = f[1]
	}
	if f[2] != "-" {
		h.program = f[2]
	}
	// Structured data: "-" or one or more [id k="v" ...] with \] escapes.
	switch {
	case strings.HasPrefix(s, "-"):
		s = s[1:]
	case strings.HasPrefix(s, "["):
		i := 0
		for i < len(s) && s[i] == '[' {
			j := i + 1
			inQuote := false
			for ; j < len(s); j++ {
				c := s[j]
				if c == '\\' {
					j++
					continue
				}
				if c == '"' {
					inQuote = !inQuote
				} else if c == ']' && !inQuote {
					break
				}
			}
			if j >= len(s) {
				return h, "rfc5424: structured data unterminated"
			}
			i = j + 1
		}
		s = s[i:]
	default:
		return h, "rfc5424: structured data missing"
	}
	s = strings.TrimPrefix(s, " ")
	h.msg = strings.TrimPrefix(s, "\xef\xbb\xbf")
	return h, ""
}

// rfc3164Time parses "Nov 25 10:00:05" (day may be space-padded) and
// gives it the year that puts it at most a week after the reference time,
// so a December line read in January lands in the previous year.
func (p *Parser) rfc3164Time(s string) (time.Time, bool) {
	mon, ok := parseMonth(s[0:3])
	if !ok || s[9] != ':' || s[12] != ':' {
		return time.Time{}, false
	}
	ds := s[4:6]
	if ds[0] == ' ' {
		ds = ds[1:]
	}
	d, ok1 := num(ds)
	hh, ok2 := num(s[7:9])
	mm, ok3 := num(s[10:12])
	ss, ok4 := num(s[13:15])
	if !ok1 || !ok2 || !ok3 || !ok4 || !validClock(d, hh, mm, ss) {
		return time.Time{}, false
	}
	ref := p.ref
	if ref.IsZero() {
		ref = time.Now()
	}
	ref = ref.In(p.loc)
	t := time.Date(ref.Year(), mon, d, hh, mm, ss, 0, p.loc)
	if t.After(ref.Add(7 * 24 * time.Hour)) {
		t = time.Date(ref.Year()-1, mon, d, hh, mm, ss, 0, p.loc)
	}
	return t.UTC(), true
}

// parseRFC3339 parses YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|+HHMM) into UTC
// without allocating.
func parseRFC3339(s string) (time.Time, bool) {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	y, ok1 := num(s[0:4])
	mo, ok2 := num(s[5:7])
	d, ok3 := num(s[8:10])
	hh, ok4 := num(s[11:13])
	mm, ok5 := num(s[14:16])
	ss, ok6 := num(s[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || mo < 1 || mo > 12 || !validClock(d, hh, mm, ss) {
		return time.Time{}, false
	}
	s = s[19:]
	nsec := 0
	if s[0] == '.' {
		i := 1
		scale := 100000000
		for ; i < len(s) && isDigit(s[i]); i++ {
			if scale > 0 {
				nsec += int(s[i]-'0') * scale
				scale /= 10
			}
		}
		if i == 1 {
			return time.Time{}, false
		}
		s = s[i:]
	}
	var off time.Duration
	switch {
	case s == "Z" || s == "z":
	case len(s) == 6 && (s[0] == '+' || s[0] == '-') && s[3] == ':':
		oh, ok1 := num(s[1:3])
		om, ok2 := num(s[4:6])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		off = time.Duration(oh)*time.Hour + time.Duration(om)*time.Minute
	case len(s) == 5 && (s[0] == '+' || s[0] == '-'):
		oh, ok1 := num(s[1:3])
		om, ok2 := num(s[3:5])
		if !ok1 || !ok2 || oh > 23 || om > 59 {
			return time.Time{}, false
		}
		off = time.Duration(oh)*time.Hour + time.Duration(om)*time.Minute
	default:
		return time.Time{}, false
	}
	if len(s) > 0 && s[0] == '-' {
		off = -off
	}
	return time.Date(y, time.Month(mo), d, hh, mm, ss, nsec, time.UTC).Add(-off), true
}

// fraction converts the digits after a decimal point to a duration.
func fraction(digits string) time.Duration {
	var d time.Duration
	scale := time.Duration(100_000_000)
	for i := 0; i < len(digits) && scale > 0; i++ {
		d += time.Duration(digits[i]-'0') * scale
		scale /= 10
	}
	return d
}

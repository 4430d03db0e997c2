package acquire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SyslogMessage is one syslog message as ParseSyslog reads it.
type SyslogMessage struct {
	// Priority is facility*8 + severity.
	Priority int
	// Stamp is the timestamp as the line will carry it: RFC 3164's
	// "Jan _2 15:04:05" as sent, or RFC 3339 for RFC 5424 and for senders
	// that put an RFC 3339 time in an RFC 3164 header.
	Stamp string
	// Time is the timestamp when it names a full date (RFC 3339); zero for
	// RFC 3164 stamps, which have no year or zone.
	Time time.Time
	// Host is the HOSTNAME field; empty when the sender left it out.
	Host string
	// Content is "TAG: MESSAGE": RFC 3164's content as sent, or RFC 5424's
	// APP-NAME[PROCID]: MSG.
	Content string
}

// Line returns the message in auth.log form: "STAMP HOST CONTENT".
func (m *SyslogMessage) Line() string {
	return m.Stamp + " " + m.Host + " " + m.Content
}

// ParseSyslog reads one syslog message: "<PRI>" followed by an RFC 5424
// header ("1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD") or an RFC 3164
// header ("Mmm dd hh:mm:ss HOSTNAME"). A message without a timestamp gets
// now, as RFC 3164 asks of a relay.
func ParseSyslog(b []byte, now time.Time) (SyslogMessage, error) {
	var m SyslogMessage
	pri, rest, err := parsePRI(b)
	if err != nil {
		return m, err
	}
	m.Priority = pri
	if bytes.HasPrefix(rest, []byte("1 ")) {
		return parse5424(m, rest[2:], now)
	}
	return parse3164(m, rest, now)
}

func parsePRI(b []byte) (int, []byte, error) {
	if len(b) < 3 || b[0] != '<' {
		return 0, nil, errors.New("no <PRI>")
	}
	n, i := 0, 1
	for ; i < len(b) && i <= 4 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int(b[i]-'0')
	}
	if i == 1 || i > 4 || i >= len(b) || b[i] != '>' {
		return 0, nil, errors.New("bad <PRI>")
	}
	if n > 191 {
		return 0, nil, fmt.Errorf("priority %d above 191", n)
	}
	return n, b[i+1:], nil
}

// field cuts the next space-delimited field.
func field(b []byte) ([]byte, []byte) {
	if i := bytes.IndexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

func printableToken(name string, b []byte, max int) (string, error) {
	if len(b) == 0 {
		return "", fmt.Errorf("%s: empty", name)
	}
	if len(b) > max {
		return "", fmt.Errorf("%s: longer than %d bytes", name, max)
	}
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return "", fmt.Errorf("%s: byte %q is not printable ASCII", name, c)
		}
	}
	return string(b), nil
}

func parse5424(m SyslogMessage, b []byte, now time.Time) (SyslogMessage, error) {
	ts, b := field(b)
	if string(ts) == "-" {
		m.Time = now.UTC()
		m.Stamp = m.Time.Format(time.RFC3339Nano)
	} else {
		t, err := time.Parse(time.RFC3339Nano, string(ts))
		if err != nil {
			return m, fmt.Errorf("rfc5424 timestamp %q: not RFC 3339", truncate(string(ts), 40))
		}
		m.Time, m.Stamp = t.UTC(), string(ts)
	}
	var host, app, procid, msgid []byte
	host, b = field(b)
	app, b = field(b)
	procid, b = field(b)
	msgid, b = field(b)
	if len(msgid) == 0 {
		return m, errors.New("rfc5424 header: too few fields")
	}
	var err error
	if string(host) != "-" {
		if m.Host, err = printableToken("rfc5424 hostname", host, 255); err != nil {
			return m, err
		}
	}
	tag := ""
	if string(app) != "-" {
		if tag, err = printableToken("rfc5424 app-name", app, 48); err != nil {
			return m, err
		}
	}
	if string(procid) != "-" {
		p, err := printableToken("rfc5424 procid", procid, 128)
		if err != nil {
			return m, err
		}
		tag += "[" + p + "]"
	}
	if _, err := printableToken("rfc5424 msgid", msgid, 32); err != nil {
		return m, err
	}
	b, err = skipSD(b)
	if err != nil {
		return m, err
	}
	b = bytes.TrimPrefix(b, []byte("\xEF\xBB\xBF")) // the UTF-8 BOM RFC 5424 allows
	m.Content = string(b)
	if tag != "" {
		m.Content = tag + ": " + m.Content
	}
	return m, nil
}

// skipSD skips RFC 5424 STRUCTURED-DATA: "-" or one or more [ID PARAM="V"...]
// elements, where V may contain \" \\ and \].
func skipSD(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("rfc5424 structured data: missing")
	}
	if b[0] == '-' {
		if len(b) > 1 && b[1] != ' ' {
			return nil, errors.New("rfc5424 structured data: junk after -")
		}
		return trimOne(b[1:]), nil
	}
	for len(b) > 0 && b[0] == '[' {
		inQuote := false
		i := 1
		for ; i < len(b); i++ {
			c := b[i]
			if inQuote {
				switch c {
				case '\\':
					i++
				case '"':
					inQuote = false
				}
				continue
			}
			if c == ']' {
				break
			}
			inQuote = c == '"'
		}
		if i >= len(b) {
			return nil, errors.New("rfc5424 structured data: unterminated element")
		}
		b = b[i+1:]
	}
	if len(b) > 0 && b[0] != ' ' {
		return nil, errors.New("rfc5424 structured data: no space before message")
	}
	return trimOne(b), nil
}

func trimOne(b []byte) []byte {
	if len(b) > 0 && b[0] == ' ' {
		return b[1:]
	}
	return b
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// stamp3164 reports whether b starts with "Mmm dd hh:mm:ss" (day padded with
// a space or, as some senders do, a zero).
func stamp3164(b []byte) bool {
	if len(b) < 15 || (len(b) > 15 && b[15] != ' ') {
		return false
	}
	ok := false
	for _, mo := range months {
		if string(b[:3]) == mo {
			ok = true
			break
		}
	}
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	return ok && b[3] == ' ' && (b[4] == ' ' || digit(b[4])) && digit(b[5]) && b[6] == ' ' &&
		digit(b[7]) && digit(b[8]) && b[9] == ':' && digit(b[10]) && digit(b[11]) && b[12] == ':' &&
		digit(b[13]) && digit(b[14])
}

func parse3164(m SyslogMessage, b []byte, now time.Time) (SyslogMessage, error) {
	switch {
	case stamp3164(b):
		m.Stamp = string(b[:15])
		b = trimOne(b[15:])
	default:
		ts, rest := field(b)
		if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil && len(ts) >= 20 {
			m.Time, m.Stamp, b = t.UTC(), string(ts), rest
		} else {
			m.Stamp = now.Format(time.Stamp)
		}
	}
	// HOSTNAME, unless the sender left it out and the next word is the tag
	// ("sshd[42]:" or "sshd:").
	tok, rest := field(b)
	if len(tok) > 0 && rest != nil && tok[len(tok)-1] != ':' && !bytes.ContainsAny(tok, "[]") {
		h, err := printableToken("rfc3164 hostname", tok, 255)
		if err != nil {
			return m, err
		}
		m.Host, b = h, rest
	}
	if len(b) == 0 {
		return m, errors.New("rfc3164: no message")
	}
	m.Content = strings.TrimRight(string(b), " ")
	return m, nil
}

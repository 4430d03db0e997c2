// Package parse turns raw log lines into events: nginx and Apache access logs
// (combined and common), the nginx error log, and sshd messages in auth.log,
// journal and RFC 3164/5424 syslog form. The parsers are hand-written byte
// scanners; a well-formed line costs no allocation.
package parse

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/event"
)

// ErrNoEvent is returned, unwrapped, for a well-formed line that carries
// nothing the scenarios look at (a successful ssh login, a cron message).
// It is not a parse error.
var ErrNoEvent = errors.New("line carries no event")

// Error is a malformed line: the format that was tried, where the line came
// from and why it was rejected.
type Error struct {
	Format string // nginx, nginx_error, syslog, sshd
	Source string // acquire.Line.Source
	Reason string
}

// Error words the error as "parse FORMAT line from SOURCE: REASON".
func (e *Error) Error() string {
	return fmt.Sprintf("parse %s line from %s: %s", e.Format, e.Source, e.Reason)
}

// Formats the parser counts lines under, in Stats order.
const (
	FormatNginx      = "nginx"
	FormatNginxError = "nginx_error"
	FormatSyslog     = "syslog"
	FormatSSHD       = "sshd"
	FormatSuricata   = "suricata"
	FormatHAProxy    = "haproxy"
	FormatTraefik    = "traefik"
	FormatCaddy      = "caddy"
	FormatUnknown    = "unknown"
)

var formatNames = [...]string{FormatNginx, FormatNginxError, FormatSyslog, FormatSSHD, FormatSuricata, FormatHAProxy,
	FormatTraefik, FormatCaddy, FormatUnknown}

const (
	fNginx = iota
	fNginxError
	fSyslog
	fSSHD
	fSuricata
	fHAProxy
	fTraefik
	fCaddy
	fUnknown
	nFormats
)

// Config tunes a Parser. The zero value is usable.
type Config struct {
	// Reference places year-less syslog timestamps: the year is the one
	// that puts the line no later than a week after Reference. Replays set
	// it to the file's modification time; zero means the clock at each line.
	Reference time.Time
	// Location is the zone of timestamps that carry no offset (RFC 3164
	// syslog, the nginx error log); nil means UTC.
	Location *time.Location
}

// FormatStats counts what one format saw.
type FormatStats struct {
	Format    string
	Events    uint64 // lines that produced an event
	NoEvent   uint64 // well-formed lines without an event
	Malformed uint64 // lines rejected with an *Error
}

type counters struct {
	events, noEvent, malformed atomic.Uint64
}

// Parser parses lines by their acquis type label. One Parser is used by one
// goroutine at a time; Stats may be read concurrently.
type Parser struct {
	ref   time.Time
	loc   *time.Location
	stats [nFormats]counters

	// Timestamp caches: consecutive lines mostly share their second.
	nginxTS   string
	nginxTime time.Time
	// haproxyTS caches the last HAProxy accept date (second precision).
	haproxyTS   string
	haproxyTime time.Time
	syslogTS    string
	syslogTime  time.Time
	errTS       string
	errTime     time.Time
}

// New returns a parser with the given configuration.
func New(cfg Config) *Parser {
	loc := cfg.Location
	if loc == nil {
		loc = time.UTC
	}
	return &Parser{ref: cfg.Reference, loc: loc}
}

// Stats returns the per-format counters.
func (p *Parser) Stats() []FormatStats {
	out := make([]FormatStats, nFormats)
	for i := range out {
		out[i] = FormatStats{
			Format:    formatNames[i],
			Events:    p.stats[i].events.Load(),
			NoEvent:   p.stats[i].noEvent.Load(),
			Malformed: p.stats[i].malformed.Load(),
		}
	}
	return out
}

// Line parses one raw line by its type label: nginx (access or error log,
// told apart by their first bytes), apache, syslog, sshd or auth. The
// event's Host is the line's own host name when it has one, else l.Host.
// It returns ErrNoEvent for a well-formed line of no interest and an *Error
// for a malformed one.
func (p *Parser) Line(l acquire.Line) (event.Event, error) {
	var ev event.Event
	var f int
	var reason string
	switch l.Type {
	case "nginx", "apache", "apache2", "httpd":
		if isErrorLogStart(l.Text) {
			f = fNginxError
			reason = p.nginxError(l.Text, &ev)
		} else {
			f = fNginx
			reason = p.access(l.Text, &ev)
		}
		ev.Parser = "nginx"
		if l.Type != "nginx" {
			ev.Parser = "apache"
		}
	case "haproxy":
		// Syslog-framed (the usual way HAProxy logs) or the bare message.
		f = fSyslog
		var inner int
		inner, reason = p.syslog(l, &ev)
		if inner >= 0 {
			f = inner
		} else if reason != noEvent {
			ev = event.Event{}
			f, reason = fHAProxy, p.haproxy(l.Text, &ev)
		}
	case "syslog", "sshd", "auth", "journal":
		f = fSyslog
		var inner int
		inner, reason = p.syslog(l, &ev)
		if inner >= 0 {
			f = inner
		}
	case "traefik":
		f, reason = fTraefik, traefik(l.Text, &ev)
	case "caddy":
		f, reason = fCaddy, caddy(l.Text, &ev)
	case "suricata", "eve":
		f = fSuricata
		reason = suricata(l.Text, &ev)
		ev.Parser = "suricata"
	default:
		p.stats[fUnknown].malformed.Add(1)
		return ev, &Error{Format: FormatUnknown, Source: l.Source, Reason: fmt.Sprintf("unknown log type %q", l.Type)}
	}
	switch reason {
	case "":
		if ev.Host == "" {
			ev.Host = l.Host
		}
		p.stats[f].events.Add(1)
		return ev, nil
	case noEvent:
		p.stats[f].noEvent.Add(1)
		return ev, ErrNoEvent
	}
	p.stats[f].malformed.Add(1)
	return event.Event{}, &Error{Format: formatNames[f], Source: l.Source, Reason: reason}
}

// noEvent is the internal reason for a well-formed line without an event.
const noEvent = "\x00no event"

// syslog parses a syslog-framed line and dispatches its message on the
// program name. It returns the format index of the inner parser that
// decided the outcome (-1 for the header itself).
func (p *Parser) syslog(l acquire.Line, ev *event.Event) (int, string) {
	h, reason := p.syslogHeader(l.Text)
	if reason != "" {
		// Bare sshd messages (journald MESSAGE fields, some Kafka
		// producers) carry no header; take their time from the transport.
		if isSSHDMessage(l.Text) {
			ev.Time = l.Time.UTC()
			ev.Parser = "sshd"
			return fSSHD, sshdMessage(l.Text, ev)
		}
		return -1, reason
	}
	ev.Time = h.time
	ev.Host = h.host
	switch h.program {
	case "sshd", "sshd-session":
		ev.Parser = "sshd"
		return fSSHD, sshdMessage(h.msg, ev)
	case "haproxy":
		return fHAProxy, p.haproxy(h.msg, ev)
	case "nginx":
		ev.Parser = "nginx"
		if isErrorLogStart(h.msg) {
			return fNginxError, p.nginxError(h.msg, ev)
		}
		return fNginx, p.access(h.msg, ev)
	}
	return -1, noEvent
}

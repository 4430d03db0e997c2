package parse

import (
	"strings"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// sshd message prefixes, each with the parse that follows it.
const (
	preFailed       = "Failed "
	preInvalid      = "Invalid user "
	preClosed       = "Connection closed by "
	preReset        = "Connection reset by "
	preDisconnected = "Disconnected from "
	preDisconnCmd   = "Disconnecting "
	preMaxAuth      = "error: maximum authentication attempts exceeded for "
	preMaxAuthOld   = "maximum authentication attempts exceeded for "
)

// isSSHDMessage reports whether s starts like an sshd message this package
// understands, for lines that arrive without a syslog header.
func isSSHDMessage(s string) bool {
	for _, p := range [...]string{preFailed, preInvalid, preClosed, preReset, preDisconnected, preDisconnCmd, preMaxAuth, preMaxAuthOld} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// sshdMessage parses the sshd messages that mark an attack:
//
//	Failed password for [invalid user] USER from IP port N ssh2
//	Invalid user USER from IP [port N]
//	Connection closed by [invalid user USER |authenticating user USER ]IP port N [preauth]
//	Disconnecting [invalid user USER |authenticating user USER ]IP port N: Too many authentication failures [preauth]
//	error: maximum authentication attempts exceeded for [invalid user] USER from IP port N ssh2 [preauth]
//
// User names are taken between fixed words counted from the right, since
// attackers try names that contain spaces.
func sshdMessage(s string, ev *event.Event) string {
	ev.Message = s
	switch {
	case strings.HasPrefix(s, preFailed):
		// "Failed METHOD for ..." where METHOD is password, publickey, none,
		// keyboard-interactive/pam, hostbased.
		rest := s[len(preFailed):]
		i := strings.Index(rest, " for ")
		if i <= 0 {
			return "failed auth: no \"for\""
		}
		ev.Type = event.TypeSSHFailedAuth
		return userFromIP(rest[i+len(" for "):], ev)
	case strings.HasPrefix(s, preInvalid):
		ev.Type = event.TypeSSHInvalidUser
		ev.InvalidUser = true
		return userFromIP(s[len(preInvalid):], ev)
	case strings.HasPrefix(s, preMaxAuth), strings.HasPrefix(s, preMaxAuthOld):
		rest := strings.TrimPrefix(s, "error: ")[len(preMaxAuthOld):]
		ev.Type = event.TypeSSHTooManyAuth
		return userFromIP(rest, ev)
	case strings.HasPrefix(s, preClosed), strings.HasPrefix(s, preReset), strings.HasPrefix(s, preDisconnected):
		if !strings.HasSuffix(s, " [preauth]") {
			return noEvent // a session that had authenticated
		}
		rest := s[strings.Index(s, " by ")+len(" by "):]
		if strings.HasPrefix(s, preDisconnected) {
			rest = s[len(preDisconnected):]
		}
		ev.Type = event.TypeSSHPreauthClose
		return userIPPort(strings.TrimSuffix(rest, " [preauth]"), ev)
	case strings.HasPrefix(s, preDisconnCmd):
		rest := s[len(preDisconnCmd):]
		i := strings.Index(rest, ": Too many authentication failures")
		if i < 0 {
			return noEvent
		}
		if strings.HasPrefix(rest, ":") {
			return noEvent // old form without the address: nothing to attribute
		}
		ev.Type = event.TypeSSHTooManyAuth
		return userIPPort(rest[:i], ev)
	}
	return noEvent
}

// userFromIP parses "[invalid user ]USER from IP[ port N[ ssh2][ [preauth]]]".
func userFromIP(s string, ev *event.Event) string {
	if strings.HasPrefix(s, "invalid user ") {
		ev.InvalidUser = true
		s = s[len("invalid user "):]
	}
	i := lastIndex(s, " from ")
	if i < 0 {
		return "no \"from\" address"
	}
	ev.User = s[:i]
	rest := s[i+len(" from "):]
	j := strings.IndexByte(rest, ' ')
	if j < 0 {
		j = len(rest)
	}
	a, ok := parseAddr(rest[:j])
	if !ok {
		return "source: not an IP address"
	}
	ev.Source = a
	return ""
}

// userIPPort parses "[invalid user USER |authenticating user USER |user USER ]IP port N".
func userIPPort(s string, ev *event.Event) string {
	i := lastIndex(s, " port ")
	if i < 0 {
		return "no \"port\" after the address"
	}
	s = s[:i]
	j := strings.LastIndexByte(s, ' ')
	a, ok := parseAddr(s[j+1:])
	if !ok {
		return "source: not an IP address"
	}
	ev.Source = a
	if j < 0 {
		return ""
	}
	who := s[:j]
	switch {
	case strings.HasPrefix(who, "invalid user "):
		ev.InvalidUser = true
		ev.User = who[len("invalid user "):]
	case strings.HasPrefix(who, "authenticating user "):
		ev.User = who[len("authenticating user "):]
	case strings.HasPrefix(who, "user "):
		ev.User = who[len("user "):]
	default:
		return "unexpected words before the address"
	}
	return ""
}

// lastIndex is strings.LastIndex by repeated forward search, which is
// vectorised and several times faster on these short lines.
func lastIndex(s, sep string) int {
	last := -1
	for off := 0; ; {
		i := strings.Index(s[off:], sep)
		if i < 0 {
			return last
		}
		last = off + i
		off = last + 1
	}
}

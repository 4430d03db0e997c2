// Package event defines the parsed form of a log line that the detection
// engine's scenarios look at, and its compact binary encoding used to re-key
// events through the internal portcullis-events topic.
package event

import (
	"net/netip"
	"time"
)

// Event types, the value of Event.Type. Scenario filters select on them.
const (
	// TypeHTTPAccess is one request from an nginx or Apache access log.
	TypeHTTPAccess = "http_access"
	// TypeHTTPError is an nginx error-log line naming a client.
	TypeHTTPError = "http_error"
	// TypeSSHFailedAuth is one failed sshd authentication attempt
	// ("Failed password for [invalid user] X from IP port N ssh2").
	TypeSSHFailedAuth = "ssh_failed_auth"
	// TypeSSHInvalidUser is sshd's "Invalid user X from IP".
	TypeSSHInvalidUser = "ssh_invalid_user"
	// TypeSSHPreauthClose is a connection closed or reset before
	// authentication ("Connection closed by [invalid user X] IP port N [preauth]").
	TypeSSHPreauthClose = "ssh_preauth_close"
	// TypeSSHTooManyAuth is sshd giving up on a client: "Too many
	// authentication failures" or "maximum authentication attempts exceeded".
	TypeSSHTooManyAuth = "ssh_too_many_auth"
	// TypeSuricataAlert is a Suricata eve.json "alert" record. Its fields
	// reuse the Event's: Status is alert.severity (1 the highest), Bytes
	// alert.signature_id, Message alert.signature, Path alert.category,
	// Method alert.action (allowed, blocked), Proto the transport protocol.
	TypeSuricataAlert = "suricata_alert"
)

// Event is one parsed log line. String fields usually share memory with the
// raw line they were parsed from; an Event is a value and is cheap to copy.
// Scenario filters see the exported fields under the same names.
type Event struct {
	// Time is the time written in the log line (UTC).
	Time time.Time
	// Source is the client address the line is about.
	Source netip.Addr
	// Type is one of the Type* constants.
	Type string
	// Parser names the parser that produced the event: nginx, apache, sshd.
	Parser string
	// Host is the host that wrote the line (syslog hostname or transport).
	Host string

	// Method, Path and Proto are the HTTP request line; Path is the request
	// target as sent (with query string).
	Method string
	Path   string
	Proto  string
	// Status is the HTTP status code.
	Status int
	// Bytes is the response body size; 0 when the log says "-".
	Bytes int64
	// UserAgent and Referer are the quoted fields of the combined format;
	// empty when the log says "-".
	UserAgent string
	Referer   string
	// Static reports that Path names a static asset (image, style sheet,
	// script, font, ...) judged by its extension.
	Static bool

	// User is the account name an sshd line names.
	User string
	// InvalidUser reports that sshd said the account does not exist.
	InvalidUser bool

	// Message is the free text of lines without structure of their own: the
	// nginx error-log message or the sshd message.
	Message string
}

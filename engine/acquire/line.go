// Package acquire reads raw log lines from where servers put them: files
// (followed across rotation), the Kafka server-logs topic and syslog, and
// hands them to the engine with the labels an acquis.yaml gives them.
package acquire

import "time"

// Line is one raw log line and where it came from.
type Line struct {
	// Text is the log line without its trailing newline.
	Text string
	// Type is the acquis.yaml label "type": nginx, apache, syslog, sshd.
	Type string
	// Source names the origin: a file path, "kafka:TOPIC/PARTITION", "syslog:udp:ADDR".
	Source string
	// Host is the sending host when the transport says (Filebeat host.name,
	// the seed producer's "source", the syslog hostname); empty otherwise.
	Host string
	// Time is the transport's timestamp when it has one (Filebeat
	// @timestamp); zero otherwise. Parsers prefer the time in the line.
	Time time.Time
}

package parse

import (
	"encoding/json"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// eveAlert is the part of a Suricata eve.json record an alert event uses
// (Suricata's documented EVE format); other fields are ignored.
type eveAlert struct {
	Timestamp string `json:"timestamp"`
	EventType string `json:"event_type"`
	SrcIP     string `json:"src_ip"`
	Proto     string `json:"proto"`
	Alert     *struct {
		Action      string `json:"action"`
		SignatureID int64  `json:"signature_id"`
		Signature   string `json:"signature"`
		Category    string `json:"category"`
		Severity    int    `json:"severity"`
	} `json:"alert"`
}

// eveTime is Suricata's timestamp layout (numeric zone without a colon);
// RFC 3339 is accepted too.
const eveTime = "2006-01-02T15:04:05.999999-0700"

// suricata parses one eve.json line. Records other than alerts (flow,
// dns, http, stats, ...) are skipped before any JSON decoding: the
// event_type value is found by a byte search.
func suricata(s string, ev *event.Event) string {
	t, ok := eveEventType(s)
	if !ok {
		return "eve: no event_type"
	}
	if t != "alert" {
		return noEvent
	}
	var r eveAlert
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return "eve: not a JSON object"
	}
	if r.Alert == nil {
		return "eve: alert record without alert"
	}
	a, err := netip.ParseAddr(r.SrcIP)
	if err != nil {
		return "eve: src_ip: not an IP address"
	}
	at, err := time.Parse(eveTime, r.Timestamp)
	if err != nil {
		if at, err = time.Parse(time.RFC3339Nano, r.Timestamp); err != nil {
			return "eve: timestamp: not a Suricata or RFC 3339 time"
		}
	}
	if r.Alert.Severity < 1 || r.Alert.Severity > 255 {
		return "eve: alert.severity: out of range"
	}
	*ev = event.Event{Time: at.UTC(), Source: a.Unmap(), Type: event.TypeSuricataAlert, Status: r.Alert.Severity,
		Bytes: r.Alert.SignatureID, Message: r.Alert.Signature, Path: r.Alert.Category, Method: r.Alert.Action, Proto: r.Proto}
	return ""
}

// eveEventType finds the string value of the top-level "event_type" key
// without decoding the record (the key is unique in EVE records).
func eveEventType(s string) (string, bool) {
	i := strings.Index(s, `"event_type"`)
	if i < 0 {
		return "", false
	}
	rest := strings.TrimLeft(s[i+len(`"event_type"`):], " \t")
	if !strings.HasPrefix(rest, ":") {
		return "", false
	}
	rest = strings.TrimLeft(rest[1:], " \t")
	if !strings.HasPrefix(rest, `"`) {
		return "", false
	}
	end := strings.IndexByte(rest[1:], '"')
	if end < 0 {
		return "", false
	}
	return rest[1 : 1+end], true
}

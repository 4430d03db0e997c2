package parse

import (
	"errors"
	"testing"

	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/event"
)

// Records written from Suricata's documented EVE format (Suricata itself
// is not in Debian 12's main archive, so no real sensor wrote these).
const (
	eveAlertV4 = `{"timestamp":"2026-11-25T12:00:05.123456+0200","flow_id":1234567,"in_iface":"eth0","event_type":"alert","src_ip":"203.0.113.7","src_port":51234,"dest_ip":"198.51.100.10","dest_port":22,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":2001219,"rev":20,"signature":"ET SCAN Potential SSH Scan","category":"Attempted Information Leak","severity":2},"flow":{"pkts_toserver":1},"extra":{"x":[1,2]}}`
	eveAlertV6 = `{"timestamp": "2026-11-25T10:00:06.5Z", "event_type": "alert", "src_ip": "2001:db8::66", "src_port": 443, "dest_ip": "2001:db8::1", "proto": "UDP", "alert": {"action": "blocked", "signature_id": 9, "signature": "X", "category": "Y", "severity": 1}}`
	eveFlow    = `{"timestamp":"2026-11-25T10:00:05.000000+0000","event_type":"flow","src_ip":"203.0.113.7","dest_ip":"198.51.100.10","proto":"TCP","flow":{"pkts_toserver":3}}`
	eveStats   = `{"timestamp":"2026-11-25T10:00:05.000000+0000","event_type":"stats","stats":{"uptime":10}}`
)

func TestSuricata(t *testing.T) {
	p := New(Config{})
	ev, err := p.Line(acquire.Line{Text: eveAlertV4, Type: "suricata", Source: "eve.json"})
	if err != nil {
		t.Fatal(err)
	}
	want := event.Event{Time: ts("2026-11-25T10:00:05.123456Z"), Source: ip("203.0.113.7"), Type: event.TypeSuricataAlert,
		Parser: "suricata", Status: 2, Bytes: 2001219, Message: "ET SCAN Potential SSH Scan", Path: "Attempted Information Leak",
		Method: "allowed", Proto: "TCP"}
	if ev != want {
		t.Fatalf("got  %+v\nwant %+v", ev, want)
	}
	ev, err = p.Line(acquire.Line{Text: eveAlertV6, Type: "suricata"})
	if err != nil || ev.Source != ip("2001:db8::66") || ev.Status != 1 || ev.Method != "blocked" {
		t.Fatalf("IPv6 alert: %+v %v", ev, err)
	}
	for _, l := range []string{eveFlow, eveStats, `{"event_type":"dns","dns":{}}`} {
		if _, err := p.Line(acquire.Line{Text: l, Type: "suricata"}); !errors.Is(err, ErrNoEvent) {
			t.Errorf("%s: %v, want ErrNoEvent", l, err)
		}
	}
	for l, reason := range map[string]string{
		`not json`: "eve: no event_type",
		`{"event_type":"alert","src_ip":"x","timestamp":"2026-11-25T10:00:05Z","alert":{"severity":1}}`:         "eve: src_ip: not an IP address",
		`{"event_type":"alert","src_ip":"192.0.2.1","timestamp":"yesterday","alert":{"severity":1}}`:            "eve: timestamp: not a Suricata or RFC 3339 time",
		`{"event_type":"alert","src_ip":"192.0.2.1","timestamp":"2026-11-25T10:00:05Z"}`:                        "eve: alert record without alert",
		`{"event_type":"alert","src_ip":"192.0.2.1","timestamp":"2026-11-25T10:00:05Z","alert":{"severity":0}}`: "eve: alert.severity: out of range",
		`{"event_type":"alert",`: "eve: not a JSON object",
	} {
		_, err := p.Line(acquire.Line{Text: l, Type: "suricata", Source: "eve.json"})
		var pe *Error
		if !errors.As(err, &pe) || pe.Reason != reason || pe.Format != FormatSuricata {
			t.Errorf("%s: %v, want %s", l, err, reason)
		}
	}
}

func BenchmarkSuricataSkip(b *testing.B) {
	p := New(Config{})
	l := acquire.Line{Text: eveFlow, Type: "suricata"}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = p.Line(l)
	}
}

func FuzzSuricata(f *testing.F) {
	for _, s := range []string{eveAlertV4, eveAlertV6, eveFlow, eveStats} {
		f.Add(s)
	}
	p := New(Config{})
	f.Fuzz(func(t *testing.T, s string) {
		ev, err := p.Line(acquire.Line{Text: s, Type: "suricata"})
		if err == nil && (ev.Type != event.TypeSuricataAlert || !ev.Source.IsValid() || ev.Status < 1) {
			t.Fatalf("accepted a bad event: %+v", ev)
		}
	})
}

package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/engine"
)

func TestAlertsList(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 2)
	now := time.Now().UTC().Truncate(time.Second)
	alert := func(ip, scenario, country string, ago time.Duration, dec *engine.AlertDecision) kafka.Message {
		a := engine.Alert{V: 1, IP: ip, Scenario: scenario, Country: country, Events: 6,
			FirstSeen: now.Add(-ago - time.Minute), LastSeen: now.Add(-ago), Decision: dec}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return kafka.Message{Key: []byte(ip), Value: b}
	}
	ban4h := &engine.AlertDecision{Type: "ban", Duration: "4h0m0s"}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx,
		alert("185.220.101.5", "crowdsecurity/ssh-bf", "DE", 3*time.Hour, ban4h),
		alert("203.0.113.7", "crowdsecurity/http-bad-user-agent", "", 30*time.Minute, ban4h),
		alert("2001:db8::7", "crowdsecurity/ssh-bf", "FR", 10*time.Minute, nil),
		kafka.Message{Key: []byte("x"), Value: []byte(`{"v":1,"ip":"not-an-ip","scenario":"s"}`)},
		kafka.Message{Key: []byte("y"), Value: []byte(`garbage`)},
	); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	common := []string{"--brokers", strings.Join(brokers, ","), "--topic", topic}
	out, err := portcullis(t, append([]string{"alerts", "list"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"=== Alerts ===",
		"TIME                  IP             COUNTRY  SCENARIO                           DECISION",
		now.Add(-3*time.Hour).Format(time.RFC3339) + "  185.220.101.5  DE       crowdsecurity/ssh-bf               ban 4h0m0s",
		now.Add(-30*time.Minute).Format(time.RFC3339) + "  203.0.113.7    -        crowdsecurity/http-bad-user-agent  ban 4h0m0s",
		now.Add(-10*time.Minute).Format(time.RFC3339) + "  2001:db8::7    FR       crowdsecurity/ssh-bf               -",
		"(2 messages on " + topic + " were not alerts and were skipped)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("alerts list:\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
	for _, tc := range []struct {
		filters []string
		want    string
	}{
		{[]string{"--since", "1h"}, "203.0.113.7 2001:db8::7"},
		{[]string{"--scenario", "crowdsecurity/ssh-bf"}, "185.220.101.5 2001:db8::7"},
		{[]string{"--ip", "203.0.113.7"}, "203.0.113.7"},
		{[]string{"--ip", "2001:db8::7", "--since", "5m"}, ""},
	} {
		out, err := portcullis(t, append(append([]string{"alerts", "list", "-o", "json"}, tc.filters...), common...)...)
		if err != nil {
			t.Fatal(err)
		}
		var as []engine.Alert
		if err := json.Unmarshal([]byte(out), &as); err != nil {
			t.Fatalf("%v: %v\n%s", tc.filters, err, out)
		}
		var ips []string
		for _, a := range as {
			ips = append(ips, a.IP)
		}
		if got := strings.Join(ips, " "); got != tc.want {
			t.Errorf("alerts list %v: %q, want %q", tc.filters, got, tc.want)
		}
	}
	if _, err := portcullis(t, append([]string{"alerts", "list", "--topic", "no-such-topic-" + topic}, common[:2]...)...); err == nil {
		t.Error("missing topic: no error")
	}
}

// FuzzDecodeAlert: any message is either an error or an alert with a valid
// address and a scenario.
func FuzzDecodeAlert(f *testing.F) {
	f.Add([]byte(`{"v":1,"ip":"185.220.101.5","scenario":"crowdsecurity/ssh-bf","country":"RU","events":6,"first_seen":"2026-11-25T10:00:00Z","last_seen":"2026-11-25T10:00:05Z","decision":{"type":"ban","duration":"4h0m0s"},"simulated":false}`))
	f.Add([]byte(`{"v":2,"ip":"1.2.3.4","scenario":"s"}`))
	f.Add([]byte(`{"v":1,"ip":"::ffff:1.2.3.4","scenario":"s","decision":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := engine.DecodeAlert(b)
		if err != nil {
			return
		}
		if a.Scenario == "" || a.V != engine.AlertVersion {
			t.Fatalf("accepted %q as %+v", b, a)
		}
	})
}

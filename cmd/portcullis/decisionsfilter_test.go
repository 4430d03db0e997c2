package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// listValues runs "decisions list -o json" with filters and returns the
// values listed, in order.
func listValues(t *testing.T, common []string, filters ...string) string {
	t.Helper()
	out, err := portcullis(t, append(append([]string{"decisions", "list", "-o", "json"}, filters...), common...)...)
	if err != nil {
		t.Fatalf("list %v: %v", filters, err)
	}
	var ds []decisionfeed.Decision
	if err := json.Unmarshal([]byte(out), &ds); err != nil {
		t.Fatalf("list %v: %v\n%s", filters, err, out)
	}
	var vs []string
	for _, d := range ds {
		vs = append(vs, d.Value)
	}
	return strings.Join(vs, " ")
}

func TestDecisionsFiltersAndDeletes(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	common := []string{"--brokers", strings.Join(brokers, ","), "--topic", topic, "--log-level", "warn"}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	now := time.Now()
	mk := func(p string, typ decisionfeed.Type, origin, scenario string) decisionfeed.Decision {
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, typ, netip.MustParsePrefix(p), time.Hour, origin, now)
		d.Scenario = scenario
		return d
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pub.Publish(ctx,
		mk("203.0.113.7/32", decisionfeed.TypeBan, "engine", "crowdsecurity/ssh-bf"),
		mk("203.0.113.0/24", decisionfeed.TypeCaptcha, "blocklist", "blocklist/drop"),
		mk("203.0.0.0/16", decisionfeed.TypeBan, "blocklist", "blocklist/drop"),
		mk("198.51.100.9/32", decisionfeed.TypeBan, "crowdsec", "crowdsecurity/http-cve"),
		mk("2001:db8::/64", decisionfeed.TypeBan, "cli", "manual"),
	); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		filters []string
		want    string
	}{
		{nil, "198.51.100.9 203.0.113.7 2001:db8::/64 203.0.0.0/16 203.0.113.0/24"},
		{[]string{"--ip", "203.0.113.7"}, "203.0.113.7 203.0.0.0/16 203.0.113.0/24"},
		{[]string{"--ip", "203.0.5.1"}, "203.0.0.0/16"},
		{[]string{"--ip", "2001:db8::1"}, "2001:db8::/64"},
		{[]string{"--ip", "192.0.2.1"}, ""},
		{[]string{"--scenario", "blocklist/drop"}, "203.0.0.0/16 203.0.113.0/24"},
		{[]string{"--origin", "crowdsec"}, "198.51.100.9"},
		{[]string{"--type", "captcha"}, "203.0.113.0/24"},
		{[]string{"--ip", "203.0.113.7", "--type", "ban", "--origin", "blocklist"}, "203.0.0.0/16"},
	} {
		if got := listValues(t, common, tc.filters...); got != tc.want {
			t.Errorf("list %v: %q, want %q", tc.filters, got, tc.want)
		}
	}
	if _, err := portcullis(t, append([]string{"decisions", "list", "--ip", "203.0.113.0/24"}, common...)...); err == nil {
		t.Error("list --ip with a range: no error")
	}

	out, err := portcullis(t, append([]string{"decisions", "delete", "--scenario", "blocklist/drop", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	var dels []decisionfeed.Decision
	if err := json.Unmarshal([]byte(out), &dels); err != nil || len(dels) != 2 || dels[0].Op != decisionfeed.OpDelete ||
		dels[0].Value != "203.0.0.0/16" || dels[1].Value != "203.0.113.0/24" {
		t.Fatalf("delete --scenario: %v\n%s", err, out)
	}
	if got, want := listValues(t, common), "198.51.100.9 203.0.113.7 2001:db8::/64"; got != want {
		t.Fatalf("after delete --scenario: %q, want %q", got, want)
	}
	if _, err := portcullis(t, append([]string{"decisions", "delete", "--scenario", "x", "--all"}, common...)...); err == nil {
		t.Error("delete --scenario with --all: no error")
	}
	out, err = portcullis(t, append([]string{"decisions", "delete", "--all"}, common...)...)
	if err != nil || !strings.HasSuffix(out, "3 decisions deleted\n") {
		t.Fatalf("delete --all: %v\n%s", err, out)
	}
	if got := listValues(t, common); got != "" {
		t.Fatalf("after delete --all: %q", got)
	}
}

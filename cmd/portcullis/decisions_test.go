package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/segmentio/kafka-go"
)

// portcullis runs the command line args and returns its stdout. The
// bound is generous: a 100k-line blocklist import under -race on a busy
// CI machine has needed more than a minute.
func portcullis(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	err := run(ctx, args, &out)
	return out.String(), err
}

func TestDecisionsAddDeleteList(t *testing.T) {
	brokers := strings.Join(feedtest.Brokers(t), ",")
	topic := feedtest.CompactedTopic(t, 3)
	common := []string{"--brokers", brokers, "--topic", topic, "--log-level", "warn"}
	for _, args := range [][]string{
		{"add", "--ip", "203.0.113.7", "--duration", "4h", "--reason", "manual ban"},
		{"add", "--range", "198.51.100.77/24", "--duration", "1h", "--type", "captcha", "--scenario", "manual/abuse"},
		{"add", "--ip", "2001:db8::7", "--duration", "30m"},
		{"delete", "--ip", "2001:db8::7"},
	} {
		out, err := portcullis(t, append(append([]string{"decisions"}, args...), common...)...)
		if err != nil {
			t.Fatalf("decisions %v: %v", args, err)
		}
		verb := map[string]string{"add": "added ", "delete": "deleted "}[args[0]]
		if !strings.HasPrefix(out, verb) {
			t.Fatalf("decisions %v printed %q", args, out)
		}
	}
	out, err := portcullis(t, append([]string{"decisions", "list", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	var live []decisionfeed.Standing
	if err := json.Unmarshal([]byte(out), &live); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	var got []string
	for _, s := range live {
		d := s.Decision
		if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
			t.Fatalf("listed decision %+v: %v", d, err)
		}
		got = append(got, strings.Join([]string{d.Key(), string(d.Type), d.Duration, d.Origin, d.Reason, d.Scenario, strconv.FormatBool(s.Enforced)}, " "))
	}
	want := []string{
		"ip:203.0.113.7@cli ban 4h0m0s cli manual ban  true",
		"range:198.51.100.0/24@cli captcha 1h0m0s cli  manual/abuse true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("list -o json:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	out, err = portcullis(t, append([]string{"decisions", "list"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "VALUE") ||
		!strings.HasPrefix(lines[1], "203.0.113.7 ") || !strings.Contains(lines[1], "manual ban") ||
		!strings.HasPrefix(lines[2], "198.51.100.0/24 ") || !strings.Contains(lines[2], "captcha") {
		t.Fatalf("list:\n%s", out)
	}
}

func TestDecisionsListEmptyAndUnreachable(t *testing.T) {
	brokers := strings.Join(feedtest.Brokers(t), ",")
	topic := feedtest.CompactedTopic(t, 3)
	out, err := portcullis(t, "decisions", "list", "--brokers", brokers, "--topic", topic, "-o", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty list -o json: %q %v", out, err)
	}
	out, err = portcullis(t, "decisions", "list", "--brokers", brokers, "--topic", topic)
	if err != nil || !strings.Contains(out, "(no live decisions)") {
		t.Fatalf("empty list: %q %v", out, err)
	}
	_, err = portcullis(t, "decisions", "list", "--brokers", "127.0.0.1:1", "--timeout", "300ms", "--log-level", "error")
	if err == nil || !strings.Contains(err.Error(), "not rebuilt in time") {
		t.Fatalf("list without a broker: %v", err)
	}
}

func TestDecisionsUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"decisions"}, "want add, delete, list or prune"},
		{[]string{"decisions", "ban"}, `unknown subcommand "ban"`},
		{[]string{"decisions", "add", "--duration", "1h"}, "give --ip or --range"},
		{[]string{"decisions", "add", "--ip", "192.0.2.1", "--range", "192.0.2.0/24"}, "not both"},
		{[]string{"decisions", "add", "--ip", "192.0.2.300"}, `--ip "192.0.2.300"`},
		{[]string{"decisions", "add", "--range", "192.0.2.0"}, `--range "192.0.2.0"`},
		{[]string{"decisions", "add", "--range", "0.0.0.0/0"}, "broader than /8"},
		{[]string{"decisions", "add", "--ip", "192.0.2.1", "--duration", "-1h"}, "--duration must be positive"},
		{[]string{"decisions", "add", "--ip", "192.0.2.1", "--type", "drop"}, `unknown decision type "drop"`},
		{[]string{"decisions", "add", "--ip", "192.0.2.1", "--reason", "a\x07b"}, "reason: contains control"},
		{[]string{"decisions", "add", "--ip", "0.0.0.0"}, "unspecified address"},
		{[]string{"decisions", "add", "--ip", "127.0.0.1"}, "127.0.0.1/32 covers loopback (127.0.0.0/8), which no bouncer bans"},
		{[]string{"decisions", "add", "--ip", "::1"}, "::1/128 covers loopback (::1/128)"},
		{[]string{"decisions", "add", "--ip", "::ffff:127.1.2.3"}, "127.1.2.3/32 covers loopback"},
		{[]string{"decisions", "add", "--range", "127.16.0.0/12"}, "127.16.0.0/12 covers loopback"},
		{[]string{"decisions", "add", "--range", "126.0.0.0/7"}, "broader than /8"},
		{[]string{"decisions", "delete", "--duration", "1h", "--ip", "192.0.2.1"}, "flag provided but not defined: -duration"},
		{[]string{"decisions", "list", "-o", "yaml"}, `-o "yaml": want table or json`},
		{[]string{"decisions", "list", "extra"}, `unexpected argument "extra"`},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
	} {
		_, err := portcullis(t, c.args...)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want a usage error containing %q", c.args, err, c.want)
		}
	}
}

func TestHelpIsAManualPage(t *testing.T) {
	for _, args := range [][]string{
		{"decisions", "add", "--help"}, {"decisions", "delete", "--help"}, {"decisions", "list", "--help"}, {"broker", "--help"},
	} {
		var help bytes.Buffer
		helpOut = &help
		_, err := portcullis(t, args...)
		helpOut = os.Stdout
		out := help.String()
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v: error %v, want flag.ErrHelp", args, err)
		}
		for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXAMPLES", "-brokers", "portcullis " + args[0]} {
			if !strings.Contains(out, section) {
				t.Errorf("%v --help lacks %q:\n%s", args, section, out)
			}
		}
	}
	out, err := portcullis(t, "--help")
	if err != nil || !strings.Contains(out, "decisions") || !strings.Contains(out, "broker") {
		t.Fatalf("portcullis --help: %v\n%s", err, out)
	}
}

func TestPrintTable(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	ds := []decisionfeed.Standing{
		{Decision: decisionfeed.Decision{Value: "203.0.113.7", Type: "ban", Scenario: "crowdsecurity/ssh-bf", Origin: "engine", Until: now.Add(4 * time.Hour)}, Enforced: true},
		{Decision: decisionfeed.Decision{Value: "2001:db8::/48", Type: "captcha", Reason: "manual", Origin: "cli", Until: now.Add(90*time.Second + 400*time.Millisecond)}, Enforced: true},
		{Decision: decisionfeed.Decision{Value: "192.0.2.1", Type: "throttle", Scenario: "s", Reason: "r", Origin: "blocklist", Until: now.Add(time.Minute)}},
		{Decision: decisionfeed.Decision{Value: "192.0.2.1", Type: "ban", Origin: "cli", Until: now.Add(time.Minute)}, Enforced: true},
	}
	var b bytes.Buffer
	if err := printTable(&b, ds, now); err != nil {
		t.Fatal(err)
	}
	want := `VALUE          TYPE      SCENARIO/REASON       ORIGIN     EXPIRES IN  ENFORCED
203.0.113.7    ban       crowdsecurity/ssh-bf  engine     4h0m0s      yes
2001:db8::/48  captcha   manual                cli        1m30s       yes
192.0.2.1      throttle  s: r                  blocklist  1m0s        -
192.0.2.1      ban       -                     cli        1m0s        yes
`
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestOperatorDeleteAcrossOrigins puts decisions of several producers
// (and a schema v1 legacy key) on one address, and checks that
// "decisions delete --ip" withdraws all of them while "--origin" narrows
// it, and that "decisions list" shows each standing decision and marks
// the enforced one.
func TestOperatorDeleteAcrossOrigins(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	common := []string{"--brokers", strings.Join(brokers, ","), "--topic", topic, "--log-level", "warn"}
	now := time.Now()
	engine := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("192.0.2.77/32"), 8*time.Hour, "engine", now)
	list := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, netip.MustParsePrefix("192.0.2.77/32"), 24*time.Hour, "lists:drop", now)
	legacy := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("192.0.2.77/32"), time.Hour, "crowdsec", now)
	legacy.Legacy = true
	other := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("192.0.2.78/32"), time.Hour, "engine", now)
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	if err := pub.Publish(context.Background(), engine, list, legacy, other); err != nil {
		t.Fatal(err)
	}
	if _, err := portcullis(t, append([]string{"decisions", "add", "--ip", "192.0.2.77", "--duration", "2h"}, common...)...); err != nil {
		t.Fatal(err)
	}
	list77 := func() string {
		t.Helper()
		out, err := portcullis(t, append([]string{"decisions", "list", "--ip", "192.0.2.77", "-o", "json"}, common...)...)
		if err != nil {
			t.Fatal(err)
		}
		var ss []decisionfeed.Standing
		if err := json.Unmarshal([]byte(out), &ss); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var got []string
		for _, s := range ss {
			got = append(got, fmt.Sprintf("%s/%s/%v", s.Origin, s.Type, s.Enforced))
		}
		return strings.Join(got, " ")
	}
	// Sorted by key: the legacy key has no origin suffix and comes first.
	if got, want := list77(), "crowdsec/ban/false cli/ban/false engine/ban/true lists:drop/captcha/false"; got != want {
		t.Fatalf("list: %s\nwant %s", got, want)
	}
	out, err := portcullis(t, append([]string{"decisions", "delete", "--ip", "192.0.2.77", "--origin", "engine"}, common...)...)
	if err != nil || !strings.Contains(out, "1 decisions deleted") {
		t.Fatalf("delete --origin engine: %v\n%s", err, out)
	}
	if got, want := list77(), "crowdsec/ban/false cli/ban/true lists:drop/captcha/false"; got != want {
		t.Fatalf("after delete --origin engine: %s\nwant %s", got, want)
	}
	out, err = portcullis(t, append([]string{"decisions", "delete", "--ip", "192.0.2.77"}, common...)...)
	if err != nil || !strings.Contains(out, "3 decisions deleted") {
		t.Fatalf("delete --ip: %v\n%s", err, out)
	}
	if got := list77(); got != "" {
		t.Fatalf("after delete --ip: %s standing, want none", got)
	}
	out, err = portcullis(t, append([]string{"decisions", "list", "-o", "json"}, common...)...)
	if err != nil || !strings.Contains(out, `"value": "192.0.2.78"`) {
		t.Fatalf("the other address went too: %v\n%s", err, out)
	}
}

// TestDecisionsAddRetriesWhileBrokerDown starts "decisions add" with the
// broker down and brings it up a second later: the add waits for it,
// within --timeout, instead of failing at once.
func TestDecisionsAddRetriesWhileBrokerDown(t *testing.T) {
	if feedtest.External() {
		t.Skip("needs a broker this test can stop and start; runs on the embedded broker")
	}
	bp := feedtest.StartBrokerProcess(t) // creates the default topics
	bp.Kill()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := portcullis(t, "decisions", "add", "--ip", "192.0.2.9", "--duration", "1h", "--timeout", "20s",
			"--brokers", bp.Addr(), "--log-level", "error")
		done <- err
	}()
	time.Sleep(time.Second)
	select {
	case err := <-done:
		t.Fatalf("add returned after %s with the broker down: %v", time.Since(start), err)
	default:
	}
	bp.Start()
	if err := <-done; err != nil {
		t.Fatalf("add after the broker came back: %v", err)
	}
	out, err := portcullis(t, "decisions", "list", "--ip", "192.0.2.9", "--brokers", bp.Addr(), "--log-level", "error")
	if err != nil || !strings.Contains(out, "192.0.2.9") {
		t.Fatalf("list: %v\n%s", err, out)
	}
}

// TestRetryable: a broker that is away is waited for; a refusal of the
// credential or an invalid decision is reported at once.
func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("publish: %w", io.ErrUnexpectedEOF), true},
		{fmt.Errorf("publish 1 decisions: %w", kafka.WriteErrors{kafka.TopicAuthorizationFailed}), false},
		{fmt.Errorf("publish: %w", kafka.SASLAuthenticationFailed), false},
		{fmt.Errorf("publish: %w", decisionfeed.ErrInvalid), false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

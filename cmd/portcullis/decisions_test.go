package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// portcullis runs the command line args and returns its stdout.
func portcullis(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
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
	var live []decisionfeed.Decision
	if err := json.Unmarshal([]byte(out), &live); err != nil {
		t.Fatalf("list -o json: %v\n%s", err, out)
	}
	var got []string
	for _, d := range live {
		if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
			t.Fatalf("listed decision %+v: %v", d, err)
		}
		got = append(got, strings.Join([]string{d.Key(), string(d.Type), d.Duration, d.Origin, d.Reason, d.Scenario}, " "))
	}
	want := []string{
		"ip:203.0.113.7 ban 4h0m0s cli manual ban ",
		"range:198.51.100.0/24 captcha 1h0m0s cli  manual/abuse",
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
	ds := []decisionfeed.Decision{
		{Value: "203.0.113.7", Type: "ban", Scenario: "crowdsecurity/ssh-bf", Origin: "engine", Until: now.Add(4 * time.Hour)},
		{Value: "2001:db8::/48", Type: "captcha", Reason: "manual", Origin: "cli", Until: now.Add(90*time.Second + 400*time.Millisecond)},
		{Value: "192.0.2.1", Type: "throttle", Scenario: "s", Reason: "r", Origin: "blocklist", Until: now.Add(time.Minute)},
		{Value: "192.0.2.2", Type: "ban", Origin: "cli", Until: now.Add(time.Minute)},
	}
	var b bytes.Buffer
	if err := printTable(&b, ds, now); err != nil {
		t.Fatal(err)
	}
	want := `VALUE          TYPE      SCENARIO/REASON       ORIGIN     EXPIRES IN
203.0.113.7    ban       crowdsecurity/ssh-bf  engine     4h0m0s
2001:db8::/48  captcha   manual                cli        1m30s
192.0.2.1      throttle  s: r                  blocklist  1m0s
192.0.2.2      ban       -                     cli        1m0s
`
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

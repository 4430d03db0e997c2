package main

import (
	"strings"
	"testing"

	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

func TestDecisionsPrune(t *testing.T) {
	brokers := strings.Join(feedtest.Brokers(t), ",")
	topic := feedtest.CompactedTopic(t, 3)
	common := []string{"--brokers", brokers, "--topic", topic, "--log-level", "warn"}
	for _, args := range [][]string{
		{"add", "--ip", "203.0.113.7", "--duration", "4h"},
		{"add", "--ip", "203.0.113.8", "--duration", "4h"},
		{"delete", "--ip", "203.0.113.8"},
		{"add", "--ip", "203.0.113.9", "--duration", "4h"},
		{"delete", "--ip", "203.0.113.9"},
	} {
		if _, err := portcullis(t, append(append([]string{"decisions"}, args...), common...)...); err != nil {
			t.Fatalf("decisions %v: %v", args, err)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--dry-run", "-o", "json"}, `{"dry_run":true,"records":5,"live":1,"expired":0,"deleted":2,"invalid":0,"republished":0}`},
		{[]string{"-o", "json"}, `{"dry_run":false,"records":5,"live":1,"expired":0,"deleted":2,"invalid":0,"republished":0}`},
		{[]string{"-o", "json"}, `{"dry_run":false,"records":7,"live":1,"expired":0,"deleted":0,"invalid":0,"republished":0}`},
	} {
		out, err := portcullis(t, append(append([]string{"decisions", "prune"}, c.args...), common...)...)
		if err != nil {
			t.Fatalf("decisions prune %v: %v", c.args, err)
		}
		if strings.TrimSpace(out) != c.want {
			t.Fatalf("decisions prune %v printed\n%s\nwant\n%s", c.args, out, c.want)
		}
	}
	out, err := portcullis(t, append([]string{"decisions", "prune"}, common...)...)
	if err != nil || !strings.HasPrefix(out, "read 7 records in ") || !strings.Contains(out, "1 live, tombstoned 0 expired and 0 deleted") {
		t.Fatalf("decisions prune printed %q (err %v)", out, err)
	}
	list, err := portcullis(t, append([]string{"decisions", "list"}, common...)...)
	if err != nil || !strings.Contains(list, "203.0.113.7") || strings.Contains(list, "203.0.113.8") {
		t.Fatalf("decisions list after prune: %q (err %v)", list, err)
	}
}

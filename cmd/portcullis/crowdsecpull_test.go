package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis-ips/portcullis/crowdsec"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// A CLI ban on X survives a crowdsec-pull (re)start whose startup poll
// lists X under "deleted", as CrowdSec 1.4.6 lists every decision it ever
// deleted; the pull's own decision that CrowdSec no longer has goes.
func TestCrowdsecPullIgnoresForeignDeletes(t *testing.T) {
	brokers := strings.Join(feedtest.Brokers(t), ",")
	topic := feedtest.CompactedTopic(t, 3)
	common := []string{"--brokers", brokers, "--topic", topic, "--log-level", "warn"}
	if _, err := portcullis(t, append([]string{"decisions", "add", "--ip", "192.0.2.77", "--duration", "24h"}, common...)...); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		agents []string
	)
	lapi := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, r.Header.Get("User-Agent"))
		mu.Unlock()
		st := crowdsec.Stream{New: []crowdsec.Decision{
			{ID: 40, Origin: "cscli", Type: "ban", Scope: "Ip", Value: "198.51.100.40", Duration: "3h", Scenario: "manual"},
		}, Deleted: []crowdsec.Decision{
			{ID: 7, Origin: "cscli", Type: "ban", Scope: "Ip", Value: "192.0.2.77", Duration: "-20h", Scenario: "manual"},
		}}
		_ = json.NewEncoder(w).Encode(st) // the client reads or fails
	}))
	defer lapi.Close()
	pull := append([]string{"crowdsec-pull", "--once", "--lapi-url", lapi.URL, "--api-key", "k"}, common...)
	for range 2 { // a first start, then a restart
		if _, err := portcullis(t, pull...); err != nil {
			t.Fatal(err)
		}
	}
	out, err := portcullis(t, append([]string{"decisions", "list", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	var live []decisionfeed.Decision
	if err := json.Unmarshal([]byte(out), &live); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range live {
		got = append(got, d.Value+" "+d.Origin)
	}
	if want := "192.0.2.77 cli|198.51.100.40 crowdsec:cscli"; strings.Join(got, "|") != want {
		t.Fatalf("live after crowdsec-pull: %q, want %q", strings.Join(got, "|"), want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(agents) != 2 || !strings.HasPrefix(agents[0], "portcullis-crowdsec-pull/") {
		t.Fatalf("User-Agents %q, want portcullis-crowdsec-pull/<version>", agents)
	}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/crowdsec"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// TestLAPIAndPullCommands: "portcullis lapi" serves a decision added with
// "decisions add"; "crowdsec-pull --once" against it republishes the
// decision on another topic with origin crowdsec.
func TestLAPIAndPullCommands(t *testing.T) {
	brokers := strings.Join(feedtest.Brokers(t), ",")
	topic := feedtest.CompactedTopic(t, 3)
	mirror := feedtest.CompactedTopic(t, 3)
	if _, err := portcullis(t, "decisions", "add", "--ip", "203.0.113.7", "--duration", "2h", "--scenario", "manual/test",
		"--brokers", brokers, "--topic", topic); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"lapi", "--listen", addr, "--api-key", "k1,k2", "--brokers", brokers, "--topic", topic, "--log-level", "warn"}, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("lapi: %v", err)
		}
	}()
	get := func(key, path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Header.Set("X-Api-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	var body string
	for {
		var code int
		if code, body = get("k1", "/v1/decisions/stream?startup=true"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lapi not ready: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var st crowdsec.Stream
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.New) != 1 || st.New[0].Value != "203.0.113.7" ||
		st.New[0].Scope != "Ip" || st.New[0].Origin != "cli" || st.New[0].Scenario != "manual/test" || !strings.HasPrefix(st.New[0].Duration, "1h59m") {
		t.Fatalf("stream: %v %s", err, body)
	}
	if code, _ := get("nope", "/v1/decisions?ip=203.0.113.7"); code != http.StatusForbidden {
		t.Fatalf("wrong key: %d, want 403", code)
	}

	// A crowdsec decision the LAPI no longer has: the startup poll deletes it.
	if _, err := portcullis(t, "decisions", "add", "--ip", "192.0.2.99", "--duration", "1h", "--brokers", brokers, "--topic", mirror); err != nil {
		t.Fatal(err)
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: feedtest.Brokers(t), Topic: mirror})
	if err != nil {
		t.Fatal(err)
	}
	stale := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("192.0.2.100/32"), time.Hour, crowdsec.Origin, time.Now())
	if err := pub.Publish(ctx, stale); err != nil {
		t.Fatal(err)
	}
	_ = pub.Close()
	out, err := portcullis(t, "crowdsec-pull", "--once", "--lapi-url", "http://"+addr, "--api-key", "k2", "--brokers", brokers, "--topic", mirror)
	if err != nil || out != "published 2 decisions from http://"+addr+"\n" {
		t.Fatalf("crowdsec-pull --once: %v %q", err, out)
	}
	out, err = portcullis(t, "decisions", "list", "-o", "json", "--brokers", brokers, "--topic", mirror)
	if err != nil {
		t.Fatal(err)
	}
	var mirrored []decisionfeed.Decision
	if err := json.Unmarshal([]byte(out), &mirrored); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range mirrored {
		got = append(got, d.Value+" "+d.Origin+" "+d.Scenario)
	}
	if want := "192.0.2.99 cli |203.0.113.7 crowdsec:cli manual/test"; strings.Join(got, "|") != want {
		t.Fatalf("mirrored decisions: %q, want %q", strings.Join(got, "|"), want)
	}
	if _, err := portcullis(t, "crowdsec-pull", "--once", "--lapi-url", "http://"+addr, "--api-key", "bad", "--brokers", brokers, "--topic", mirror); err == nil ||
		!strings.Contains(err.Error(), "403") {
		t.Fatalf("crowdsec-pull with a wrong key: %v", err)
	}
}

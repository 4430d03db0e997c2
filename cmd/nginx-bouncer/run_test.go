package main

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/internal/bouncertest"
)

// TestRunFollowsFeed runs the daemon against an embedded broker: it
// becomes ready on the snapshot and answers from the decisions that follow.
func TestRunFollowsFeed(t *testing.T) {
	brokers, topic, pub := bouncertest.Feed(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "test", time.Now())
	if err := pub.Publish(ctx, before); err != nil {
		t.Fatal(err)
	}

	listen, metricsAddr := bouncertest.FreeAddr(t), bouncertest.FreeAddr(t)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--listen", listen, "--metrics-listen", metricsAddr, "--brokers", brokers[0],
			"--topic", topic, "--group", "-", "--fail-mode", "closed", "--log-level", "error"}, io.Discard)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	client := &http.Client{Timeout: 2 * time.Second}
	status := func(path, ip string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+listen+path, nil)
		if ip != "" {
			req.Header.Set("X-Real-IP", ip)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	waitFor := func(what, path, ip string, want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := status(path, ip)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GET %s for %s = %d, want %d", what, path, ip, got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("snapshot", "/ready", "", 200)
	if got := status("/check", "203.0.113.9"); got != 403 {
		t.Errorf("range from the snapshot: %d, want 403", got)
	}
	ban := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, netip.MustParsePrefix("2001:db8::7/128"), time.Hour, "test", time.Now())
	if err := pub.Publish(ctx, ban); err != nil {
		t.Fatal(err)
	}
	waitFor("captcha add", "/check", "2001:db8::7", 401)
	// Every check so far was answered exactly once with a ban or a captcha.
	resp, err := client.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{
		`portcullis_nginx_bouncer_checks_total{verdict="ban"} 1`,
		`portcullis_nginx_bouncer_checks_total{verdict="captcha"} 1`,
		`portcullis_nginx_bouncer_bans_served_total{scenario="test"} 1`,
		`portcullis_feed_ready 1`,
		`portcullis_feed_lag 0`,
		`portcullis_nginx_bouncer_prefixes 2`,
	} {
		if !containsLine(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}

	del := decisionfeed.NewDecision(decisionfeed.OpDelete, decisionfeed.TypeBan, netip.MustParsePrefix("203.0.113.0/24"), 0, "test", time.Now())
	if err := pub.Publish(ctx, del); err != nil {
		t.Fatal(err)
	}
	waitFor("delete", "/check", "203.0.113.9", 204)
}

func containsLine(text, line string) bool {
	return slices.Contains(strings.Split(text, "\n"), line)
}

// TestRunRefusesProtectedBans: the office (--whitelist), loopback and the
// host's own address are answered 204 although banned on the feed, and the
// refusals are counted as in every bouncer.
func TestRunRefusesProtectedBans(t *testing.T) {
	brokers, topic, pub := bouncertest.Feed(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host := ""
	addrs, err := policy.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.Is4() && !a.IsLoopback() {
			host = a.String()
			break
		}
	}
	banned := []string{"203.0.113.5", "198.51.100.7", "127.0.0.1", "::1"}
	if host != "" {
		banned = append(banned, host)
	}
	for _, ip := range banned {
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix(ip+"/"+bits(ip)), time.Hour, "cli", time.Now())
		if err := pub.Publish(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	listen, metricsAddr := bouncertest.FreeAddr(t), bouncertest.FreeAddr(t)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--listen", listen, "--metrics-listen", metricsAddr, "--brokers", brokers[0],
			"--topic", topic, "--group", "-", "--whitelist", "198.51.100.0/24", "--log-level", "error"}, io.Discard)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	client := &http.Client{Timeout: 2 * time.Second}
	check := func(ip string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+listen+"/check", nil)
		req.Header.Set("X-Real-IP", ip)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(15 * time.Second)
	for check("203.0.113.5") != 403 {
		if time.Now().After(deadline) {
			t.Fatal("the unprotected ban is never enforced")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, ip := range banned[1:] {
		if got := check(ip); got != 204 {
			t.Errorf("protected %s: %d, want 204", ip, got)
		}
	}
	resp, err := client.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	want := []string{
		`portcullis_nginx_bouncer_refused_total{reason="whitelist"} 1`,
		`portcullis_nginx_bouncer_refused_total{reason="loopback"} 2`,
	}
	if host != "" {
		want = append(want, `portcullis_nginx_bouncer_refused_total{reason="host_address"} 1`)
	}
	for _, w := range want {
		if !containsLine(string(body), w) {
			t.Errorf("metrics lack %q", w)
		}
	}
}

func bits(ip string) string {
	if strings.Contains(ip, ":") {
		return "128"
	}
	return "32"
}

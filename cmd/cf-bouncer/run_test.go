package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/enforcer/cloudflare/cffake"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/bouncertest"
	"github.com/portcullis-ips/portcullis/internal/syncbuf"
	"github.com/segmentio/kafka-go"
)

const (
	token   = "cf-secret-token-9d81c0"
	account = "0123456789abcdef0123456789abcdef"
	zone    = "fedcba9876543210fedcba9876543210"
)

// fastConfig is a config file with short API backoffs, so tests do not
// wait on the production defaults.
func fastConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cf-bouncer.yaml")
	const y = "retry_min: 1ms\nretry_max: 5ms\npoll_min: 1ms\npoll_max: 5ms\nsnapshot_timeout: 30s\n"
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// feed starts a broker and a topic and publishes ds.
func decision(op decisionfeed.Op, typ decisionfeed.Type, p string) decisionfeed.Decision {
	d := decisionfeed.NewDecision(op, typ, netip.MustParsePrefix(p), 4*time.Hour, "test", time.Now())
	d.Scenario = "test/scenario"
	return d
}

func TestOnceSyncsTheSnapshot(t *testing.T) {
	fake := cffake.New(token, account, zone)
	defer fake.Close()
	brokers, topic, _ := bouncertest.Feed(t,
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32"),
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.0/24"),
		decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "192.0.2.9/32"),
		decision(decisionfeed.OpDelete, decisionfeed.TypeBan, "192.0.2.9/32"),
		decision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "2001:db8:1:2::5/128"),
		decision(decisionfeed.OpAdd, decisionfeed.TypeThrottle, "192.0.2.50/32"),
	)
	t.Setenv("CLOUDFLARE_API_TOKEN", token)
	var stdout bytes.Buffer
	var stderr syncbuf.Buffer
	err := run(context.Background(), []string{"--once", "--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic,
		"--group", "-", "--account-id", account, "--zone-id", zone, "--api-base", fake.URL, "--log-level", "debug"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	// 2 list reads, 2 list creates, 1 entrypoint read (404) and 1 PUT,
	// one bulk add and one poll per list.
	want := "items=3 adds=3 deletes=0 left_out=0 refused=0 unsupported=0 rule_changes=1 api_calls=10 api_writes=5\n"
	if stdout.String() != want {
		t.Fatalf("stdout = %q, want %q", stdout.String(), want)
	}
	if got := fake.Items(account, "portcullis_ban"); !slices.Equal(got, []string{"198.51.100.0/24", "203.0.113.7"}) {
		t.Fatalf("ban list = %v", got)
	}
	if got := fake.Items(account, "portcullis_captcha"); !slices.Equal(got, []string{"2001:db8:1:2::/64"}) {
		t.Fatalf("captcha list = %v", got)
	}
	if strings.Contains(stderr.String(), token) || strings.Contains(stdout.String(), token) {
		t.Fatalf("the token appears in the output:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "msg=synced") {
		t.Fatalf("no sync log line:\n%s", stderr.String())
	}

	// A second cron run adopts the lists and rules: it reads (lists, the
	// items of both, the zone's rules) and writes nothing.
	fake.ResetCalls()
	stdout.Reset()
	err = run(context.Background(), []string{"--once", "--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic,
		"--group", "-", "--account-id", account, "--zone-id", zone, "--api-base", fake.URL}, &stdout, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want = "items=3 adds=0 deletes=0 left_out=0 refused=0 unsupported=0 rule_changes=0 api_calls=4 api_writes=0\n"
	if stdout.String() != want || fake.Writes() != 0 {
		t.Fatalf("second run: stdout = %q, want %q; calls %v", stdout.String(), want, fake.Calls())
	}
}

func TestDryRunPrintsThePlanAndWritesNothing(t *testing.T) {
	fake := cffake.New(token, account, zone)
	defer fake.Close()
	fake.SetRules(zone, `{"id":"r1","action":"log","expression":"true","ref":"mine"}`)
	brokers, topic, _ := bouncertest.Feed(t, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32"))
	tf := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CLOUDFLARE_API_TOKEN", "")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--dry-run", "--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic,
		"--group", "-", "--account-id", account, "--zone-id", zone, "--api-base", fake.URL, "--token-file", tf}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	want := "list portcullis_ban (block): create; +1 -0 -> 1 items\n" +
		"  + 203.0.113.7 (portcullis test/scenario)\n" +
		"zone " + zone + ": create rule portcullis_ban (block)\n" +
		"budget 10000 items; left out 0; refused 0; unsupported 0\n"
	if stdout.String() != want {
		t.Fatalf("stdout =\n%s\nwant\n%s", stdout.String(), want)
	}
	if fake.Writes() != 0 {
		t.Fatalf("dry run wrote: %v", fake.Calls())
	}
}

func TestOnceFailsWithOneLineError(t *testing.T) {
	fake := cffake.New(token, account, zone)
	defer fake.Close()
	brokers, topic, _ := bouncertest.Feed(t, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32"))
	const bad = "not-the-token-4411"
	t.Setenv("CLOUDFLARE_API_TOKEN", bad)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--once", "--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic,
		"--group", "-", "--account-id", account, "--zone-id", zone, "--api-base", fake.URL, "--log-level", "debug"}, &stdout, &stderr)
	want := "reconcile 1 bans: cloudflare sync of 1 items: read lists of account " + account + ": HTTP 403: Authentication error (code 10000) - check the API token: it must be valid and allowed to edit account filter lists and zone WAF"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	if strings.Contains(stderr.String(), bad) || stdout.Len() != 0 {
		t.Fatalf("stdout %q; stderr:\n%s", stdout.String(), stderr.String())
	}
}

func TestDaemonFollowsTheFeed(t *testing.T) {
	fake := cffake.New(token, account, zone)
	defer fake.Close()
	brokers, topic, pub := bouncertest.Feed(t, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32"))
	t.Setenv("CLOUDFLARE_API_TOKEN", token)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	metricsAddr := bouncertest.FreeAddr(t)
	var stderr syncbuf.Buffer
	done := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() {
		done <- run(runCtx, []string{"--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic, "--group", "-",
			"--account-id", account, "--zone-id", zone, "--api-base", fake.URL, "--debounce", "300ms",
			"--metrics-listen", metricsAddr, "--log-level", "debug"}, io.Discard, &stderr)
	}()
	waitItems := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for len(fake.Items(account, "portcullis_ban")) != want {
			if time.Now().After(deadline) {
				t.Fatalf("ban list has %d items, want %d\n%s", len(fake.Items(account, "portcullis_ban")), want, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitItems(1)

	// A burst of 200 decisions becomes one bulk add.
	posts := fake.Calls()["POST /accounts/{account_id}/rules/lists/{list_id}/items"]
	var burst []decisionfeed.Decision
	for i := range 200 {
		burst = append(burst, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, fmt.Sprintf("10.1.%d.%d/32", i/100, i%100+1)))
	}
	for i := 0; i < len(burst); i += 50 {
		if err := pub.Publish(ctx, burst[i:i+50]...); err != nil {
			t.Fatal(err)
		}
	}
	waitItems(201)
	if got := fake.Calls()["POST /accounts/{account_id}/rules/lists/{list_id}/items"] - posts; got != 1 {
		t.Fatalf("%d bulk adds for the burst, want 1", got)
	}

	if err := pub.Publish(ctx, decision(decisionfeed.OpDelete, decisionfeed.TypeBan, "203.0.113.7/32")); err != nil {
		t.Fatal(err)
	}
	waitItems(200)
	if slices.Contains(fake.Items(account, "portcullis_ban"), "203.0.113.7") {
		t.Fatal("the deleted ban is still listed")
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{
		`portcullis_cf_bouncer_list_items{list="portcullis_ban"} 200`,
		"portcullis_cf_bouncer_adds_total 201",
		"portcullis_cf_bouncer_deletes_total 1",
		"portcullis_cf_bouncer_left_out 0",
		"portcullis_cf_bouncer_last_success_timestamp_seconds ",
		"portcullis_cf_bouncer_api_calls_total ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if strings.Contains(stderr.String(), token) {
		t.Fatal("the token appears in the log")
	}
}

func TestCleanup(t *testing.T) {
	fake := cffake.New(token, account, zone)
	defer fake.Close()
	brokers, topic, _ := bouncertest.Feed(t, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32"))
	t.Setenv("CLOUDFLARE_API_TOKEN", token)
	args := []string{"--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic, "--group", "-",
		"--account-id", account, "--zone-id", zone, "--api-base", fake.URL, "--log-level", "error"}
	if err := run(context.Background(), append([]string{"--once"}, args...), io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if err := run(context.Background(), append([]string{"cleanup"}, args...), &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if stdout.String() != "removed rules=1 lists=1 access_rules=0\n" {
		t.Fatalf("stdout = %q", stdout.String())
	}
	if fake.Items(account, "portcullis_ban") != nil || len(fake.Rules(zone)) != 0 {
		t.Fatal("something of ours is left")
	}
}

func TestDaemonRemovesExpiredBans(t *testing.T) {
	fake := cffake.New(token, account)
	defer fake.Close()
	brokers, topic, pub := bouncertest.Feed(t)
	// Made after the broker started, so it is still live at the first sync.
	short := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("203.0.113.8/32"), 3*time.Second, "test", time.Now())
	if err := pub.Publish(context.Background(), short, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CLOUDFLARE_API_TOKEN", token)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic, "--group", "-",
			"--account-id", account, "--api-base", fake.URL, "--log-level", "error"}, io.Discard, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	sawBoth := false
	for {
		got := fake.Items(account, "portcullis_ban")
		sawBoth = sawBoth || len(got) == 2
		if sawBoth && slices.Equal(got, []string{"203.0.113.7"}) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ban list = %v (saw both: %v); the expired ban was not removed", got, sawBoth)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDryRunAccessRulesMode(t *testing.T) {
	fake := cffake.New(token, account)
	defer fake.Close()
	brokers, topic, _ := bouncertest.Feed(t, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32"),
		decision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "2001:db8::/48"))
	t.Setenv("CLOUDFLARE_API_TOKEN", token)
	cfgFile := filepath.Join(t.TempDir(), "cf.yaml")
	if err := os.WriteFile(cfgFile, []byte("mode: access_rules\nsnapshot_timeout: 30s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	err := run(context.Background(), []string{"--dry-run", "--config", cfgFile, "--brokers", brokers[0], "--topic", topic,
		"--group", "-", "--account-id", account, "--api-base", fake.URL, "--log-level", "error"}, &stdout, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := "ip access rules: +2 -0 -> 2 rules\n" +
		"  + block 203.0.113.7 (portcullis test/scenario)\n" +
		"  + managed_challenge 2001:db8::/48 (portcullis test/scenario)\n" +
		"budget 10000 items; left out 0; refused 0; unsupported 0\n"
	if stdout.String() != want {
		t.Fatalf("stdout =\n%s\nwant\n%s", stdout.String(), want)
	}
	if fake.Writes() != 0 {
		t.Fatalf("dry run wrote: %v", fake.Calls())
	}
}

// TestOnceAppliesThePolicy: the edge enforces only bans from the engine and
// the CLI, never the office (--whitelist), loopback or the API server.
func TestOnceAppliesThePolicy(t *testing.T) {
	fake := cffake.New(token, account, zone)
	defer fake.Close()
	from := func(typ decisionfeed.Type, p, origin string) decisionfeed.Decision {
		return decisionfeed.NewDecision(decisionfeed.OpAdd, typ, netip.MustParsePrefix(p), time.Hour, origin, time.Now())
	}
	brokers, topic, _ := bouncertest.Feed(t,
		from(decisionfeed.TypeBan, "203.0.113.7/32", "engine"),
		from(decisionfeed.TypeBan, "203.0.113.8/32", "cli"),
		from(decisionfeed.TypeBan, "203.0.113.9/32", "blocklist"),
		from(decisionfeed.TypeCaptcha, "203.0.113.10/32", "engine"),
		from(decisionfeed.TypeBan, "198.51.100.7/32", "cli"), // the office
		from(decisionfeed.TypeBan, "127.0.0.0/8", "cli"),     // loopback
		from(decisionfeed.TypeBan, "2001:db8:1::9/128", "engine"),
	)
	t.Setenv("CLOUDFLARE_API_TOKEN", token)
	var stdout bytes.Buffer
	var stderr syncbuf.Buffer
	err := run(context.Background(), []string{"--once", "--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic,
		"--group", "-", "--account-id", account, "--zone-id", zone, "--api-base", fake.URL,
		"--types", "ban", "--origins", "engine,cli", "--whitelist", "198.51.100.0/24"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if got := fake.Items(account, "portcullis_ban"); !slices.Equal(got, []string{"2001:db8:1::/64", "203.0.113.7", "203.0.113.8"}) {
		t.Fatalf("ban list = %v", got)
	}
	if got := fake.Items(account, "portcullis_captcha"); len(got) != 0 {
		t.Fatalf("captcha list = %v, want empty (only bans enforced)", got)
	}
	for _, want := range []string{`reason=whitelist`, `reason=loopback`, `key=ip:198.51.100.7`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("no refusal log with %q:\n%s", want, stderr.String())
		}
	}
	if _, _, err := parseArgs([]string{"--account-id", account, "--origins", "engine,cscli"}, io.Discard); err == nil ||
		err.Error() != `config: origins: "cscli" is not an origin (engine, cli, blocklist, crowdsec, console)` {
		t.Fatalf("unknown origin: %v", err)
	}
	if _, _, err := parseArgs([]string{"--account-id", account, "--types", "throttle"}, io.Discard); err == nil ||
		err.Error() != `config: types: "throttle" is not enforced by this bouncer (it enforces ban, captcha)` {
		t.Fatalf("unsupported type: %v", err)
	}
}

// TestDaemonHeartbeats: cf-bouncer beats like the other bouncers.
func TestDaemonHeartbeats(t *testing.T) {
	if feedtest.External() {
		t.Skip("beats on the shared " + heartbeat.Topic + " topic; embedded broker only")
	}
	fake := cffake.New(token, account)
	defer fake.Close()
	brokers, topic, _ := bouncertest.Feed(t, decision(decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32"))
	t.Setenv("CLOUDFLARE_API_TOKEN", token)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--config", fastConfig(t), "--brokers", brokers[0], "--topic", topic, "--group", "-",
			"--account-id", account, "--api-base", fake.URL, "--heartbeat-interval", "100ms", "--log-level", "error"}, io.Discard, io.Discard)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: heartbeat.Topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("no heartbeat with 1 decision: %v", err)
		}
		b, err := heartbeat.Decode(m.Value)
		if err != nil {
			t.Fatalf("heartbeat %s: %v", m.Value, err)
		}
		if b.Name != "cf-bouncer" || b.Mode != "lists" {
			t.Fatalf("heartbeat %+v", b)
		}
		if b.Decisions == 1 {
			return
		}
	}
}

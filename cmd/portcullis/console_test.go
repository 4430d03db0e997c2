package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/internal/bouncertest"
)

// chromiumPath finds Debian's chromium; without it the browser test skips,
// or fails under CI=true.
func chromiumPath(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is required under CI=true (scripts/deps.sh installs it)")
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

// browser starts a headless Chromium with a fresh profile; each call is
// a separate browser (its own cookies).
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	// Accept the delete confirmation dialog.
	if err := chromedp.Listen(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			}()
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// screenshotDir is where the console's page screenshots go: docs/ when
// PORTCULLIS_SCREENSHOTS=1 (to refresh the README's pictures), else a
// temporary directory.
func screenshotDir(t *testing.T) string {
	if os.Getenv("PORTCULLIS_SCREENSHOTS") == "1" {
		return filepath.Join("..", "..", "docs")
	}
	return t.TempDir()
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(buf) < 1000 {
		t.Fatalf("screenshot %s: %d bytes", name, len(buf))
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func login(ctx context.Context, base, user, pw string) error {
	return chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(`input[name=user]`),
		chromedp.SendKeys(`input[name=user]`, user),
		chromedp.SendKeys(`input[name=password]`, pw),
		chromedp.Submit(`input[name=password]`),
		chromedp.WaitVisible(`nav .who`),
	)
}

// TestConsoleInBrowser drives the console in headless Chromium: log in,
// watch a decision added with the CLI appear without a reload, delete it
// from the page and see it gone from `decisions list`, a read-only user
// refused a write, and a forged cross-site form refused.
func TestConsoleInBrowser(t *testing.T) {
	exe := chromiumPath(t)
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	alertsTopic := feedtest.Topic(t, 2)
	hbTopic := feedtest.CompactedTopic(t, 1)
	bs := strings.Join(brokers, ",")
	common := []string{"--brokers", bs, "--topic", topic, "--log-level", "warn"}

	// Alerts with hostile text, to see them escaped on the pages.
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: alertsTopic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	now := time.Now().UTC()
	var msgs []kafka.Message
	for i, sc := range []string{"crowdsecurity/ssh-bf", "crowdsecurity/http-crawl", `evil/<img src=x onerror=alert(1)>`} {
		for j := range 3 + 4*i {
			a := engine.Alert{V: engine.AlertVersion, IP: fmt.Sprintf("203.0.113.%d", 10*i+j+1), Scenario: sc,
				Country: []string{"RU", "CN", "US"}[j%3], Events: 6 + j, FirstSeen: now.Add(-time.Duration(j*90) * time.Minute),
				LastSeen: now.Add(-time.Duration(j*90)*time.Minute + 5*time.Second),
				Decision: &engine.AlertDecision{Type: decisionfeed.TypeBan, Duration: "4h0m0s"}}
			b, _ := json.Marshal(a)
			msgs = append(msgs, kafka.Message{Value: b})
		}
	}
	// A topic just created on a real broker may refuse writes for a moment
	// (Unknown Topic Or Partition) until its leaders are known.
	for attempt := 0; ; attempt++ {
		err := w.WriteMessages(t.Context(), msgs...)
		if err == nil {
			break
		}
		if attempt == 40 {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	_ = w.Close()
	if _, err := portcullis(t, append([]string{"decisions", "add", "--ip", "192.0.2.200", "--duration", "24h", "--reason", "seen before start"}, common...)...); err != nil {
		t.Fatal(err)
	}

	users := bouncertest.WriteFile(t, "users", "alice:admin:alice-pass-1\nbob:readonly:bob-pass-12\n")
	addr := bouncertest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runConsole(ctx, []string{"--brokers", bs, "--topic", topic, "--alerts-topic", alertsTopic,
			"--heartbeat-topic", hbTopic, "--listen", addr, "--password-file", users, "--log-level", "warn"}, nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("console: %v", err)
		}
	})
	base := "http://" + addr
	waitHTTP(t, base+"/login")
	shots := screenshotDir(t)

	admin := browser(t, exe)
	if err := chromedp.Do(admin, chromedp.Navigate(base+"/login")); err != nil {
		t.Fatal(err)
	}
	screenshot(t, admin, shots, "console-login.png")
	if err := login(admin, base, "alice", "alice-pass-1"); err != nil {
		t.Fatalf("log in: %v", err)
	}
	if err := chromedp.Do(admin, chromedp.WaitVisible(`svg.chart rect`)); err != nil {
		t.Fatalf("overview: %v", err)
	}
	overview, err := chromedp.Run(admin, chromedp.Text(`main`))
	if err != nil {
		t.Fatalf("overview: %v", err)
	}
	if !strings.Contains(overview, "crowdsecurity/http-crawl") || !strings.Contains(overview, "<img src=x onerror=alert(1)>") {
		t.Errorf("overview lacks the top scenarios (escaped text):\n%s", overview)
	}
	screenshot(t, admin, shots, "console-overview.png")

	// A decision added with the CLI appears without a reload: a marker set
	// on the page survives, which a navigation would have wiped.
	if err := chromedp.Do(admin, chromedp.Navigate(base+"/decisions"), chromedp.WaitVisible(`tr[data-value="192.0.2.200"]`),
		chromedp.Evaluate[chromedp.Void](`window.__noReload = 42`)); err != nil {
		t.Fatalf("decisions page: %v", err)
	}
	if _, err := portcullis(t, append([]string{"decisions", "add", "--ip", "198.51.100.23", "--duration", "4h", "--reason", "<script>alert(2)</script>"}, common...)...); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(admin, chromedp.WaitVisible(`tr[data-value="198.51.100.23"]`)); err != nil {
		t.Fatalf("CLI decision did not appear live: %v", err)
	}
	marker, err := chromedp.Run(admin, chromedp.Evaluate[int](`window.__noReload`))
	if err != nil {
		t.Fatal(err)
	}
	reason, err := chromedp.Run(admin, chromedp.Text(`tr[data-value="198.51.100.23"] td:nth-child(6)`))
	if err != nil {
		t.Fatal(err)
	}
	if marker != 42 {
		t.Error("the page was reloaded to show the new decision")
	}
	if reason != "<script>alert(2)</script>" {
		t.Errorf("reason shown as %q, want the text verbatim (escaped, not run)", reason)
	}
	screenshot(t, admin, shots, "console-decisions.png")

	// Delete it from the page (the confirmation dialog is accepted).
	if err := chromedp.Do(admin,
		chromedp.Click(`tr[data-value="198.51.100.23"] form.delete button`),
		chromedp.WaitNotPresent(`tr[data-value="198.51.100.23"]`)); err != nil {
		t.Fatalf("delete from the page: %v", err)
	}
	out, err := portcullis(t, append([]string{"decisions", "list", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "198.51.100.23") || !strings.Contains(out, "192.0.2.200") {
		t.Errorf("decisions list after the delete:\n%s", out)
	}

	for _, p := range []struct{ path, want, shot string }{
		{"/alerts", "crowdsecurity/ssh-bf", "console-alerts.png"},
		{"/scenarios", "crowdsecurity/http-crawl", "console-scenarios.png"},
	} {
		if err := chromedp.Do(admin, chromedp.Navigate(base+p.path), chromedp.WaitVisible(`main table`)); err != nil {
			t.Fatalf("%s: %v", p.path, err)
		}
		text, err := chromedp.Run(admin, chromedp.Text(`main`))
		if err != nil {
			t.Fatalf("%s: %v", p.path, err)
		}
		if !strings.Contains(text, p.want) || !strings.Contains(text, "<img src=x onerror=alert(1)>") {
			t.Errorf("%s lacks %q or the escaped hostile scenario:\n%s", p.path, p.want, text)
		}
		screenshot(t, admin, shots, p.shot)
	}

	// A forged cross-site form, from another origin, posted in the
	// logged-in admin's browser: no decision results.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = fmt.Fprintf(w, `<form id=f method=post action="%s/decisions/add"><input name=target value="192.0.2.66"><input name=duration value=4h><input name=type value=ban></form><script>document.getElementById("f").submit()</script>`, base)
	}))
	defer evil.Close()
	if err := chromedp.Do(admin, chromedp.Navigate(evil.URL), chromedp.Sleep(2*time.Second)); err != nil {
		t.Fatalf("forged form: %v", err)
	}

	// The read-only user sees no write controls, and a write it makes by
	// hand (with its own valid CSRF token) is refused.
	reader := browser(t, exe)
	if err := login(reader, base, "bob", "bob-pass-12"); err != nil {
		t.Fatalf("read-only log in: %v", err)
	}
	if err := chromedp.Do(reader, chromedp.Navigate(base+"/decisions"), chromedp.WaitVisible(`tr[data-value="192.0.2.200"]`)); err != nil {
		t.Fatalf("read-only page: %v", err)
	}
	forms, err := chromedp.Run(reader, chromedp.Evaluate[int](`document.querySelectorAll("form#add, form.delete").length`))
	if err != nil {
		t.Fatal(err)
	}
	status, err := chromedp.Run(reader, chromedp.Evaluate[int](`(async () => { const csrf = document.querySelector("input[name=csrf]").value;
		const r = await fetch("/decisions/add", {method: "POST", body: new URLSearchParams({csrf, target: "192.0.2.99", duration: "4h", type: "ban"})});
		return r.status; })()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if forms != 0 {
		t.Errorf("read-only user sees %d write forms", forms)
	}
	if status != http.StatusForbidden {
		t.Errorf("read-only write answered %d, want 403", status)
	}
	out, err = portcullis(t, append([]string{"decisions", "list", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"192.0.2.66", "192.0.2.99"} {
		if strings.Contains(out, ip) {
			t.Errorf("%s was banned by a refused write:\n%s", ip, out)
		}
	}
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url) //nolint:noctx // test poll on loopback
		if err == nil {
			_ = resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console did not answer within 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

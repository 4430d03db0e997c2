package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
)

// fakeSource hands out messages from a slice and records commits. Fetch
// blocks when the slice is exhausted, like a reader at the end of the log.
type fakeSource struct {
	mu        sync.Mutex
	msgs      []kafka.Message
	next      int
	committed int64 // offset after the last committed message
}

func (f *fakeSource) FetchMessage(ctx context.Context) (kafka.Message, error) {
	for {
		f.mu.Lock()
		if f.next < len(f.msgs) {
			m := f.msgs[f.next]
			f.next++
			f.mu.Unlock()
			return m, nil
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return kafka.Message{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (f *fakeSource) CommitMessages(_ context.Context, msgs ...kafka.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range msgs {
		f.committed = max(f.committed, m.Offset+1)
	}
	return nil
}

func (f *fakeSource) commitOffset() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.committed
}

func alert(ip, scenario string, typ decisionfeed.Type) engine.Alert {
	a := engine.Alert{V: engine.AlertVersion, IP: ip, Scenario: scenario, Country: "RU", Events: 6,
		FirstSeen: time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC), LastSeen: time.Date(2026, 12, 6, 5, 0, 9, 0, time.UTC)}
	if typ != "" {
		a.Decision = &engine.AlertDecision{Type: typ, Duration: "4h0m0s"}
	}
	return a
}

func messages(t *testing.T, alerts ...engine.Alert) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	for i, a := range alerts {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, kafka.Message{Topic: "alerts", Offset: int64(i), Value: b})
	}
	return out
}

// receiver is a webhook endpoint that records bodies and can fail.
type receiver struct {
	mu     sync.Mutex
	bodies [][]byte
	fail   int // answer 503 to this many requests first
	srv    *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail > 0 {
			r.fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.bodies = append(r.bodies, b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...)
}

func testConfig(dests ...Destination) Config {
	c := DefaultConfig()
	c.Brokers = []string{"127.0.0.1:9092"}
	c.Batch = BatchConfig{MaxAlerts: 10, MaxWait: 50 * time.Millisecond}
	c.Retry = RetryConfig{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	c.Destinations = dests
	return c
}

// run runs the notifier over src until cond holds (or 10 s), then stops it.
func run(t *testing.T, n *Notifier, srcs map[string]*fakeSource, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- n.Run(ctx, func(group string) (Source, error) {
			s, ok := srcs[group]
			if !ok {
				return nil, fmt.Errorf("no source for group %s", group)
			}
			return s, nil
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !cond() {
		t.Fatal("condition not reached within 10 s")
	}
}

func TestWebhookFiltersBatchesAndCommits(t *testing.T) {
	all := newReceiver(t)
	bans := newReceiver(t)
	cfg := testConfig(
		Destination{Name: "all", Type: "webhook", URL: all.srv.URL},
		Destination{Name: "ssh-bans", Type: "webhook", URL: bans.srv.URL,
			Filter: Filter{Scenarios: []string{"crowdsecurity/ssh-*"}, MinSeverity: "high"}},
	)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	in := []engine.Alert{
		alert("192.0.2.1", "crowdsecurity/ssh-bf", decisionfeed.TypeBan),
		alert("192.0.2.2", "crowdsecurity/ssh-slow-bf", decisionfeed.TypeCaptcha), // medium: not for ssh-bans
		alert("192.0.2.3", "crowdsecurity/http-crawl", decisionfeed.TypeBan),      // other scenario
		alert("192.0.2.4", "crowdsecurity/ssh-bf", ""),                            // low
	}
	msgs := messages(t, in...)
	msgs = append(msgs, kafka.Message{Offset: int64(len(msgs)), Value: []byte(`{"v":1,"ip":"not an ip","scenario":"x"}`)})
	reg := prometheus.NewRegistry()
	n, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	srcs := map[string]*fakeSource{
		n.GroupFor("all"):      {msgs: msgs},
		n.GroupFor("ssh-bans"): {msgs: msgs},
	}
	run(t, n, srcs, func() bool {
		return srcs[n.GroupFor("all")].commitOffset() == 5 && srcs[n.GroupFor("ssh-bans")].commitOffset() == 5
	})

	var got struct {
		Source string         `json:"source"`
		Count  int            `json:"count"`
		Alerts []engine.Alert `json:"alerts"`
	}
	bodies := all.got()
	if len(bodies) != 1 {
		t.Fatalf("all: %d requests, want 1 batch", len(bodies))
	}
	if err := json.Unmarshal(bodies[0], &got); err != nil {
		t.Fatalf("all: body %q: %v", bodies[0], err)
	}
	if got.Count != 4 || len(got.Alerts) != 4 || got.Alerts[2].IP != "192.0.2.3" {
		t.Errorf("all: got %+v, want the 4 valid alerts in order", got)
	}
	bodies = bans.got()
	if len(bodies) != 1 {
		t.Fatalf("ssh-bans: %d requests, want 1", len(bodies))
	}
	if err := json.Unmarshal(bodies[0], &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Alerts) != 1 || got.Alerts[0].IP != "192.0.2.1" {
		t.Errorf("ssh-bans: got %+v, want only the ssh-bf ban", got.Alerts)
	}
	if v := testutil.ToFloat64(n.m.invalid); v != 2 { // one per destination
		t.Errorf("invalid messages counted %v, want 2", v)
	}
	if v := testutil.ToFloat64(n.m.alerts.WithLabelValues("ssh-bans", "filtered")); v != 3 {
		t.Errorf("ssh-bans filtered %v, want 3", v)
	}
}

func TestRetriesUntilDeliveredAndCommitsOnlyAfter(t *testing.T) {
	rcv := newReceiver(t)
	rcv.fail = 3
	cfg := testConfig(Destination{Name: "hook", Type: "webhook", URL: rcv.srv.URL})
	n, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{msgs: messages(t, alert("198.51.100.7", "s/a", decisionfeed.TypeBan))}
	srcs := map[string]*fakeSource{n.GroupFor("hook"): src}
	run(t, n, srcs, func() bool { return src.commitOffset() == 1 })
	if len(rcv.got()) != 1 {
		t.Fatalf("%d deliveries, want 1 after 3 failures", len(rcv.got()))
	}
	if v := testutil.ToFloat64(n.m.failures.WithLabelValues("hook")); v != 3 {
		t.Errorf("failures %v, want 3", v)
	}

	// Stopped while the receiver refuses: nothing is committed, so the
	// next run sends the alert again.
	rcv.mu.Lock()
	rcv.fail = 1 << 30
	rcv.mu.Unlock()
	src2 := &fakeSource{msgs: messages(t, alert("198.51.100.8", "s/a", decisionfeed.TypeBan))}
	n2, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	run(t, n2, map[string]*fakeSource{n2.GroupFor("hook"): src2}, func() bool {
		return testutil.ToFloat64(n2.m.failures.WithLabelValues("hook")) >= 2
	})
	if c := src2.commitOffset(); c != 0 {
		t.Errorf("committed up to %d while the receiver refused", c)
	}
}

func TestSlackEscapesAlertText(t *testing.T) {
	rcv := newReceiver(t)
	cfg := testConfig(Destination{Name: "slack", Type: "slack", URL: rcv.srv.URL})
	n, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hostile := `x"},"text":"pwned</script><script>alert(1)</script>`
	src := &fakeSource{msgs: messages(t, alert("2001:db8::1", hostile, decisionfeed.TypeBan))}
	run(t, n, map[string]*fakeSource{n.GroupFor("slack"): src}, func() bool { return src.commitOffset() == 1 })
	b := rcv.got()
	if len(b) != 1 {
		t.Fatalf("%d messages", len(b))
	}
	var msg map[string]string
	if err := json.Unmarshal(b[0], &msg); err != nil {
		t.Fatalf("slack body %q is not JSON: %v", b[0], err)
	}
	if len(msg) != 1 || !strings.Contains(msg["text"], hostile) || !strings.Contains(msg["text"], "2001:db8::1") {
		t.Errorf("slack message %q: want one text field holding the scenario verbatim", msg)
	}
}

func TestRateLimitBatchesInsteadOfDropping(t *testing.T) {
	rcv := newReceiver(t)
	cfg := testConfig(Destination{Name: "slow", Type: "webhook", URL: rcv.srv.URL, MaxPerMinute: 60})
	cfg.Batch.MaxAlerts = 3
	cfg.Batch.MaxWait = 0
	n, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var in []engine.Alert
	for i := range 6 {
		in = append(in, alert(fmt.Sprintf("203.0.113.%d", i+1), "s/a", decisionfeed.TypeBan))
	}
	src := &fakeSource{msgs: messages(t, in...)}
	run(t, n, map[string]*fakeSource{n.GroupFor("slow"): src}, func() bool { return src.commitOffset() == 6 })
	total := 0
	for _, b := range rcv.got() {
		var got struct{ Alerts []engine.Alert }
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		total += len(got.Alerts)
	}
	if total != 6 {
		t.Errorf("%d alerts delivered, want all 6", total)
	}
	if len(rcv.got()) > 6 {
		t.Errorf("%d messages for 6 alerts", len(rcv.got()))
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	base := func() Config {
		return testConfig(Destination{Name: "d", Type: "webhook", URL: "http://127.0.0.1:1/hook"})
	}
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no destinations", func(c *Config) { c.Destinations = nil }, "destinations: none"},
		{"bad type", func(c *Config) { c.Destinations[0].Type = "pager" }, `type: "pager"`},
		{"bad url scheme", func(c *Config) { c.Destinations[0].URL = "ftp://x/y" }, "url: scheme"},
		{"url and url_file", func(c *Config) { c.Destinations[0].URLFile = "/x" }, "exactly one"},
		{"bad severity", func(c *Config) { c.Destinations[0].Filter.MinSeverity = "urgent" }, "filter.min_severity"},
		{"bad pattern", func(c *Config) { c.Destinations[0].Filter.Scenarios = []string{"["} }, "scenario pattern"},
		{"bad template", func(c *Config) { c.Destinations[0].Template = "{{.Nope" }, "template:"},
		{"name charset", func(c *Config) { c.Destinations[0].Name = "a b" }, "name:"},
		{"duplicate", func(c *Config) { c.Destinations = append(c.Destinations, c.Destinations[0]) }, "used twice"},
		{"batch", func(c *Config) { c.Batch.MaxAlerts = 0 }, "batch.max_alerts"},
		{"email no tls with password", func(c *Config) {
			c.Destinations[0] = Destination{Name: "m", Type: "email", SMTP: SMTPConfig{Addr: "127.0.0.1:25",
				From: "a@b", To: []string{"c@d"}, Username: "u", PasswordFile: "/p", StartTLS: "off"}}
		}, "never sent without TLS"},
		{"email header injection", func(c *Config) {
			c.Destinations[0] = Destination{Name: "m", Type: "email", SMTP: SMTPConfig{Addr: "127.0.0.1:25",
				From: "a@b\r\nBcc: x@y", To: []string{"c@d"}}}
		}, "not a plain email address"},
	}
	for _, tc := range cases {
		c := base()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %v, want one line containing %q", tc.name, err, tc.want)
		}
	}
	c := base()
	if err := c.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

func TestSubjectCannotInjectHeaders(t *testing.T) {
	e := &email{cfg: SMTPConfig{From: "ips@example.net", To: []string{"soc@example.net"}}}
	m := string(e.message(oneLine("2 alerts: evil\r\nBcc: victim@example.org"), "body"))
	if strings.Contains(m, "\r\nBcc:") {
		t.Errorf("header injected:\n%s", m)
	}
}

func TestSeverityOf(t *testing.T) {
	ban := alert("192.0.2.1", "s", decisionfeed.TypeBan)
	sim := ban
	sim.Simulated = true
	for _, tc := range []struct {
		a    engine.Alert
		want Severity
	}{
		{ban, SeverityHigh},
		{alert("192.0.2.1", "s", decisionfeed.TypeCaptcha), SeverityMedium},
		{alert("192.0.2.1", "s", ""), SeverityLow},
		{sim, SeverityLow},
	} {
		if got := SeverityOf(&tc.a); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.a, got, tc.want)
		}
	}
}

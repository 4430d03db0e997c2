package crowdsec

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// standIn is a local stand-in of a CrowdSec LAPI: the full set on
// startup=true, then the queued delta once.
type standIn struct {
	mu       sync.Mutex
	full     Stream
	delta    Stream
	requests []string
	agents   []string
}

func (s *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.URL.RequestURI())
	s.agents = append(s.agents, r.Header.Get("User-Agent"))
	if r.Header.Get("X-Api-Key") != "pull-key" {
		writeJSON(w, http.StatusForbidden, message{"access forbidden"})
		return
	}
	if r.URL.Query().Get("startup") == "true" {
		writeJSON(w, http.StatusOK, s.full)
		return
	}
	writeJSON(w, http.StatusOK, s.delta)
	s.delta = Stream{New: []Decision{}, Deleted: []Decision{}}
}

// feedServer runs a Server on the topic and waits for its snapshot.
func feedServer(t *testing.T, ctx context.Context, brokers []string, topic string) *Server {
	t.Helper()
	srv, err := NewServer(ServerConfig{APIKeys: []string{"bouncer"}})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = sub.Run(ctx, srv) }()
	t.Cleanup(func() { <-done })
	return srv
}

// waitStream polls srv until the stream's values (sorted) equal want.
func waitStream(t *testing.T, srv *Server, query string, want []string) Stream {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get(t, srv, "bouncer", "/v1/decisions/stream?"+query)
		var st Stream
		if code == http.StatusOK {
			if err := json.Unmarshal([]byte(body), &st); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range st.New {
				got = append(got, d.Scope+" "+d.Value+" "+d.Type+" "+d.Origin+" "+d.Scenario)
			}
			slices.Sort(got)
			if slices.Equal(got, want) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream?%s:\n%s\nwant\n%s", query, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("stream?%s: %d %s", query, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPullRoundTrip(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	lapi := &standIn{
		full: Stream{New: []Decision{
			{ID: 11, Origin: "CAPI", Type: "ban", Scope: "Ip", Value: "203.0.113.7", Duration: "167h59m59.5s", Scenario: "crowdsecurity/ssh-bf"},
			{ID: 12, Origin: "crowdsec", Type: "captcha", Scope: "Range", Value: "198.51.100.0/24", Duration: "3h59m59s", Scenario: "crowdsecurity/http-crawl"},
			{ID: 13, Origin: "crowdsec", Type: "ban", Scope: "Ip", Value: "2001:db8::7", Duration: "4h", Scenario: "crowdsecurity/http-cve"},
			{ID: 14, Origin: "cscli", Type: "ban", Scope: "Country", Value: "XX", Duration: "4h", Scenario: "manual"},
			{ID: 15, Origin: "cscli", Type: "ban", Scope: "Ip", Value: "203.0.113.300", Duration: "4h", Scenario: "manual"},
		}, Deleted: []Decision{}},
		delta: Stream{
			New: []Decision{{ID: 16, Origin: "crowdsec", Type: "ban", Scope: "Ip", Value: "192.0.2.9", Duration: "1h", Scenario: "crowdsecurity/http-bf"}},
			Deleted: []Decision{
				{ID: 11, Origin: "CAPI", Type: "ban", Scope: "Ip", Value: "203.0.113.7", Duration: "-1s", Scenario: "crowdsecurity/ssh-bf"},
				// Never published by this puller: left alone.
				{ID: 3, Origin: "cscli", Type: "ban", Scope: "Ip", Value: "192.0.2.200", Duration: "-20h", Scenario: "manual"},
			},
		},
	}
	hs := httptest.NewServer(lapi)
	defer hs.Close()
	p, err := NewPuller(PullerConfig{URL: hs.URL, APIKey: "pull-key"})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pub.Close() }()
	srv := feedServer(t, ctx, brokers, topic)

	res, err := p.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Decisions) != 3 || len(res.Skipped) != 2 ||
		!strings.Contains(res.Skipped[0].Error(), `scope "Country" not supported`) ||
		!strings.Contains(res.Skipped[1].Error(), `decision 15: value "203.0.113.300"`) {
		t.Fatalf("startup poll: %d decisions, skipped %v", len(res.Decisions), res.Skipped)
	}
	if err := pub.Publish(ctx, res.Decisions...); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Ip 2001:db8::7 ban crowdsec:crowdsec crowdsecurity/http-cve",
		"Ip 203.0.113.7 ban crowdsec:CAPI crowdsecurity/ssh-bf",
		"Range 198.51.100.0/24 captcha crowdsec:crowdsec crowdsecurity/http-crawl",
	}
	st := waitStream(t, srv, "startup=true&scopes=ip,range", want)
	for _, d := range st.New {
		if d.Value == "203.0.113.7" && !strings.HasPrefix(d.Duration, "167h59m") {
			t.Errorf("duration of 203.0.113.7: %s, want 167h59m…", d.Duration)
		}
	}

	res, err = p.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Decisions) != 2 || res.Decisions[0].Op != decisionfeed.OpDelete || res.Decisions[0].Value != "203.0.113.7" ||
		res.Decisions[0].Origin != "crowdsec:CAPI" || res.Decisions[1].Value != "192.0.2.9" || res.Ignored != 1 {
		t.Fatalf("delta poll: %+v, ignored %d", res.Decisions, res.Ignored)
	}
	if err := pub.Publish(ctx, res.Decisions...); err != nil {
		t.Fatal(err)
	}
	waitStream(t, srv, "startup=true&scopes=ip,range", []string{
		"Ip 192.0.2.9 ban crowdsec:crowdsec crowdsecurity/http-bf",
		"Ip 2001:db8::7 ban crowdsec:crowdsec crowdsecurity/http-cve",
		"Range 198.51.100.0/24 captcha crowdsec:crowdsec crowdsecurity/http-crawl",
	})
	p.Reset()
	if res, err = p.Poll(ctx); err != nil || len(res.Decisions) != 3 {
		t.Fatalf("poll after Reset: %v, %d decisions, want the full set of 3", err, len(res.Decisions))
	}
	lapi.mu.Lock()
	reqs, agents := lapi.requests, lapi.agents
	lapi.mu.Unlock()
	for _, a := range agents {
		if name, v, ok := strings.Cut(a, "/"); !ok || name != "portcullis-crowdsec-pull" || v == "" {
			t.Fatalf("User-Agent %q, want portcullis-crowdsec-pull/<version>", a)
		}
	}
	if len(reqs) != 3 || !strings.Contains(reqs[0], "startup=true") || !strings.Contains(reqs[1], "startup=false") || !strings.Contains(reqs[2], "startup=true") {
		t.Fatalf("requests to the stand-in: %v", reqs)
	}

	bad, err := NewPuller(PullerConfig{URL: hs.URL, APIKey: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Poll(ctx); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("poll with a wrong key: %v, want a 403 error", err)
	}
}

func TestPullOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "crowdsec",
		"cscli":                 "crowdsec:cscli",
		"CAPI":                  "crowdsec:CAPI",
		"lists":                 "crowdsec:lists",
		"a b\u202e\x00/c":       "crowdsec:a_b_____c",
		strings.Repeat("x", 99): "crowdsec:" + strings.Repeat("x", 55),
	} {
		got := PullOrigin(in)
		if got != want || !IsPullOrigin(got) {
			t.Errorf("PullOrigin(%q) = %q, want %q", in, got, want)
		}
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("192.0.2.1/32"), time.Hour, got, t0)
		if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
			t.Errorf("origin %q: %v", got, err)
		}
	}
	for _, o := range []string{"cli", "engine", "crowdsecx", "blocklist:crowdsec"} {
		if IsPullOrigin(o) {
			t.Errorf("IsPullOrigin(%q) = true", o)
		}
	}
}

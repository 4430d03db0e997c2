package crowdsec

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// A bouncer streaming across a restart of the server gets exactly what
// changed while it was down: the deletion made meanwhile, the new decision,
// and nothing it had already.
func TestServerStateAcrossRestart(t *testing.T) {
	c := &clock{now: t0}
	file := filepath.Join(t.TempDir(), "lapi-state.json")
	cfg := ServerConfig{APIKeys: []string{"key-a", "key-b"}, StateFile: file, Now: c.Now}
	s1, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x := dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.7/32", 4*time.Hour, "cli", "manual", t0)
	z := dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.9/32", 4*time.Hour, "engine", "crowdsecurity/ssh-bf", t0)
	exp := dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.10/32", 20*time.Minute, "engine", "crowdsecurity/ssh-bf", t0)
	if err := s1.Snapshot(ctx, []decisionfeed.Decision{x, z, exp}); err != nil {
		t.Fatal(err)
	}
	st := getStream(t, s1, "key-a", "startup=true")
	if got := summary(st.New); strings.Count(got, "\n") != 3 {
		t.Fatalf("startup: %s", got)
	}
	zID := st.New[1].ID
	if st = getStream(t, s1, "key-a", ""); len(st.New)+len(st.Deleted) != 0 {
		t.Fatalf("second poll: new %s deleted %s", summary(st.New), summary(st.Deleted))
	}
	// No Save: the answers above must have written what they handed out.

	// Down for half an hour: x deleted, y added, exp expired.
	c.now = t0.Add(30 * time.Minute)
	y := dec(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.7/32", time.Hour, "cli", "manual", c.now)
	s2, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, s2, "key-a", "/v1/decisions/stream"); code != http.StatusServiceUnavailable {
		t.Fatalf("before the feed's snapshot: %d, want 503", code)
	}
	if err := s2.Snapshot(ctx, []decisionfeed.Decision{z, y}); err != nil {
		t.Fatal(err)
	}
	st = getStream(t, s2, "key-a", "")
	if got, want := summary(st.New), "Ip 198.51.100.7 ban 1h0m0s cli manual\n"; got != want {
		t.Fatalf("after restart, new:\n%swant\n%s", got, want)
	}
	if got, want := summary(st.Deleted), "Ip 203.0.113.7 ban -1s cli manual\nIp 203.0.113.10 ban -10m0s engine crowdsecurity/ssh-bf\n"; got != want {
		t.Fatalf("after restart, deleted:\n%swant\n%s", got, want)
	}
	if st = getStream(t, s2, "key-a", ""); len(st.New)+len(st.Deleted) != 0 {
		t.Fatalf("poll after the catch-up: new %s deleted %s", summary(st.New), summary(st.Deleted))
	}
	// z kept its id; a bouncer new to this server gets the live set.
	st = getStream(t, s2, "key-b", "")
	if len(st.New) != 2 || st.New[0].ID != zID || st.New[0].Value != "203.0.113.9" || len(st.Deleted) != 0 {
		t.Fatalf("key-b: new %v deleted %v (z had id %d)", st.New, st.Deleted, zID)
	}

	// A third life after a clean shutdown: nothing to tell.
	if err := s2.Save(); err != nil {
		t.Fatal(err)
	}
	s3, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.Snapshot(ctx, []decisionfeed.Decision{z, y}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"key-a", "key-b"} {
		if st = getStream(t, s3, k, ""); len(st.New)+len(st.Deleted) != 0 {
			t.Fatalf("%s after a clean restart: new %s deleted %s", k, summary(st.New), summary(st.Deleted))
		}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "key-a") {
		t.Fatal("the state file holds an API key")
	}
}

func TestServerStateFileErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"garbage":  "{not json",
		"version":  `{"v":2,"seq":0,"dels_min":0,"decisions":[],"deleted":[],"bouncers":{}}`,
		"unknown":  `{"v":1,"seq":0,"extra":1}`,
		"cursor":   `{"v":1,"seq":3,"dels_min":0,"decisions":[],"deleted":[],"bouncers":{"ab":9}}`,
		"decision": `{"v":1,"seq":3,"dels_min":0,"decisions":[{"id":1,"d":{"v":1}}],"deleted":[],"bouncers":{}}`,
	} {
		file := filepath.Join(dir, name+".json")
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := NewServer(ServerConfig{APIKeys: []string{"k"}, StateFile: file})
		if err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: error %v, want one naming %s", name, err, file)
		}
	}
}

func TestStreamFilterBounds(t *testing.T) {
	s := newTestServer(t, &clock{now: t0})
	if err := s.Snapshot(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	many := strings.Repeat("x,", MaxFilterEntries) + "x"
	long := strings.Repeat("y", MaxFilterEntryBytes+1)
	for _, tc := range []struct{ query, want string }{
		{"scenarios_not_containing=" + many, "scenarios_not_containing: 65 entries, limit 64"},
		{"scenarios_containing=" + many, "scenarios_containing: 65 entries, limit 64"},
		{"origins=" + many, "origins: 65 entries, limit 64"},
		{"scopes=" + many, "scopes: 65 entries, limit 64"},
		{"origins=" + long, "origins: an entry of 257 bytes, limit 256"},
	} {
		code, body := get(t, s, "key-a", "/v1/decisions/stream?startup=true&"+tc.query)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("%.40s…: %d %s, want 400 %q", tc.query, code, body, tc.want)
		}
	}
	if code, _ := get(t, s, "key-a", "/v1/decisions/stream?startup=true&scenarios_not_containing="+strings.Repeat("x,", MaxFilterEntries-1)+"x"); code != http.StatusOK {
		t.Errorf("a filter at the limit: %d, want 200", code)
	}
}

package heartbeat

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestDecode(t *testing.T) {
	b, err := Decode([]byte(`{"v":1,"name":"fw-bouncer","host":"edge-1","mode":"xdp","decisions":12,"lag":3,"refused":2,"at":"2026-11-25T10:00:00Z","interval":"30s"}`))
	if err != nil {
		t.Fatal(err)
	}
	if b.Key() != "fw-bouncer@edge-1" || b.Decisions != 12 || b.Lag != 3 || b.Refused != 2 || !b.At.Equal(t0) {
		t.Fatalf("decoded %+v", b)
	}
	if b.Stale(t0.Add(90*time.Second)) || !b.Stale(t0.Add(91*time.Second)) {
		t.Error("stale after three intervals: wrong")
	}
	for _, bad := range []string{
		`{"v":2,"name":"a","host":"h","at":"2026-11-25T10:00:00Z","interval":"30s"}`,
		`{"v":1,"name":"","host":"h","at":"2026-11-25T10:00:00Z","interval":"30s"}`,
		`{"v":1,"name":"a@b","host":"h","at":"2026-11-25T10:00:00Z","interval":"30s"}`,
		`{"v":1,"name":"a","host":"h\n","at":"2026-11-25T10:00:00Z","interval":"30s"}`,
		`{"v":1,"name":"a","host":"h","decisions":-1,"at":"2026-11-25T10:00:00Z","interval":"30s"}`,
		`{"v":1,"name":"a","host":"h","refused":-1,"at":"2026-11-25T10:00:00Z","interval":"30s"}`,
		`{"v":1,"name":"a","host":"h","at":"2026-11-25T10:00:00Z","interval":"0s"}`,
		`{"v":1,"name":"a","host":"h","interval":"30s"}`,
		`{"v":1,"name":"a","host":"h","at":"2026-11-25T10:00:00Z","interval":"30s","extra":1}`,
		`{"v":1,"name":"a","host":"h","at":"2026-11-25T10:00:00Z","interval":"30s"} {}`,
		`{"v":1,"name":"a","host":"` + strings.Repeat("h", 300) + `","at":"2026-11-25T10:00:00Z","interval":"30s"}`,
	} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestNewRejects(t *testing.T) {
	stats := func() Stats { return Stats{} }
	for _, c := range []Config{
		{Name: "x", Interval: time.Second, Stats: stats},
		{Brokers: []string{"b"}, Interval: time.Second, Stats: stats},
		{Brokers: []string{"b"}, Name: "x", Stats: stats},
		{Brokers: []string{"b"}, Name: "x", Interval: time.Second},
		{Brokers: []string{"b"}, Name: "x@y", Interval: time.Second, Stats: stats, Host: "h"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v): no error", c)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v":1,"name":"fw-bouncer","host":"edge-1","mode":"xdp","decisions":12,"lag":3,"at":"2026-11-25T10:00:00Z","interval":"30s"}`))
	f.Add([]byte(`{"v":1,"name":"a","host":"h","at":"2026-11-25T10:00:00Z","interval":"-1s"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		beat, err := Decode(b)
		if err != nil {
			return
		}
		if beat.Name == "" || beat.Host == "" || beat.Decisions < 0 || strings.Contains(beat.Name, "@") {
			t.Fatalf("accepted %q as %+v", b, beat)
		}
	})
}

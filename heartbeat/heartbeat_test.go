package heartbeat

import (
	"fmt"
	"slices"
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

func TestOriginsAndProblem(t *testing.T) {
	var os []OriginStat
	for i := range MaxOrigins + 4 {
		os = append(os, OriginStat{Origin: fmt.Sprintf("list-%02d", i), Active: i})
	}
	os = append(os, OriginStat{Origin: "bad\norigin", Active: -3})
	top := topOrigins(os)
	if len(top) != MaxOrigins || top[0].Origin != fmt.Sprintf("list-%02d", MaxOrigins+3) {
		t.Fatalf("topOrigins kept %d, first %+v; want %d, the most active first", len(top), top[0], MaxOrigins)
	}
	b := Beat{V: Version, Name: "fw-bouncer", Host: "h", At: time.Now(), Interval: "10s",
		Problem: cleanProblem("restore failed:\nno such table" + strings.Repeat("x", 1000)), Origins: top}
	if err := b.Validate(); err != nil {
		t.Fatalf("cleaned beat: %v", err)
	}
	for name, mut := range map[string]func(*Beat){
		"problem with newline": func(b *Beat) { b.Problem = "a\nb" },
		"problem too long":     func(b *Beat) { b.Problem = strings.Repeat("x", maxProblem+1) },
		"too many origins":     func(b *Beat) { b.Origins = append(slices.Clone(top), OriginStat{Origin: "x"}) },
		"negative active":      func(b *Beat) { b.Origins = []OriginStat{{Origin: "x", Active: -1}} },
		"origin control char":  func(b *Beat) { b.Origins = []OriginStat{{Origin: "a\tb"}} },
	} {
		bad := b
		mut(&bad)
		if bad.Validate() == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}

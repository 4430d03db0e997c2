//go:build linux

package demo

import (
	"strings"
	"testing"
	"time"
)

func TestSumMetric(t *testing.T) {
	page := `# HELP portcullis_fw_bouncer_dropped_packets_total Packets dropped.
# TYPE portcullis_fw_bouncer_dropped_packets_total counter
portcullis_fw_bouncer_dropped_packets_total{family="ipv4",iface="eth-atk"} 35
portcullis_fw_bouncer_dropped_packets_total{family="ipv6",iface="eth-atk"} 2
portcullis_fw_bouncer_dropped_packets_total_extra 1000
portcullis_fw_bouncer_dropped_bytes_total{family="ipv4"} 2100
`
	got, err := sumMetric(strings.NewReader(page), "portcullis_fw_bouncer_dropped_packets_total")
	if err != nil || got != 37 {
		t.Fatalf("sumMetric = %v, %v; want 37, nil", got, err)
	}
	got, err = sumMetric(strings.NewReader("other 1\nm 4.5\n"), "m")
	if err != nil || got != 4.5 {
		t.Fatalf("sumMetric unlabelled = %v, %v; want 4.5, nil", got, err)
	}
	for _, bad := range []string{"m{a=\"1\" 3\n", "m \n", "m{} x\n"} {
		if _, err := sumMetric(strings.NewReader(bad), "m"); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("sumMetric(%q) error %v; want one naming line 1", bad, err)
		}
	}
}

func FuzzSumMetric(f *testing.F) {
	f.Add("m{a=\"b\"} 1\nm 2\n")
	f.Add("# HELP m x\nm{a=\"}\"} 3 1700000000\n")
	f.Add("m{ 1\n")
	f.Fuzz(func(t *testing.T, page string) {
		_, _ = sumMetric(strings.NewReader(page), "m")
	})
}

func TestBlockTimes(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	b := &Block{Requests: 10, FirstRequest: at(0), LastRequest: at(300), AlertAt: at(305), DecideAt: at(303), DropAt: at(310)}
	if got := b.Detected(); !got.Equal(at(303)) {
		t.Errorf("Detected = %v, want the decision at +303ms", got)
	}
	if got := b.Trigger(); !got.Equal(at(300)) {
		t.Errorf("Trigger = %v, want the last request at +300ms", got)
	}
	if got := latencyLine(b); got != "detect->drop 7.0ms, request->drop 10.0ms" {
		t.Errorf("latencyLine = %q", got)
	}
	// A request answered after the detection: the trigger is the first.
	b.LastRequest = at(320)
	if got := b.Trigger(); !got.Equal(at(0)) {
		t.Errorf("Trigger with a late request = %v, want the first at +0ms", got)
	}
	if got := (&Block{}).Detected(); !got.IsZero() {
		t.Errorf("Detected of nothing = %v", got)
	}
}

func TestCheck(t *testing.T) {
	res := &Result{Blocks: map[string]*Block{}, BystanderOK: 5, Drops: 3}
	for _, a := range Attackers {
		res.Blocks[a] = &Block{Src: a, Step: Expected[a].Step, Scenarios: []string{Expected[a].Scenario}, DropAt: time.Now()}
	}
	if err := res.Check(); err != nil {
		t.Fatalf("Check of a good run: %v", err)
	}
	res.Blocks[Attackers[1]].DropAt = time.Time{}
	res.Blocks[Attackers[2]].Scenarios = []string{"crowdsecurity/http-probing"}
	res.BystanderFailed = 1
	err := res.Check()
	if err == nil {
		t.Fatal("Check of a bad run: nil")
	}
	for _, want := range []string{"198.51.100.11 (wordpress-bf): never blocked", "198.51.100.12 (cve-2021-41773): no crowdsecurity/http-cve-2021-41773 alert", "bystander: 5 requests answered 200, 1 not"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error %q lacks %q", err, want)
		}
	}
}

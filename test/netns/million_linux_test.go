package netns_test

import (
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// millionBans is how many bans TestFWBouncerMillionBans loads. The
// PORTCULLIS_E2E_BANS environment variable lowers it for a quick run.
func millionBans(t *testing.T) int {
	if s := os.Getenv("PORTCULLIS_E2E_BANS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("PORTCULLIS_E2E_BANS=%q is not a positive count", s)
		}
		return n
	}
	return 1_000_000
}

// fillerBans returns n distinct single-address bans in 100.64.0.0/10
// (shared address space: no test traffic ever uses it) followed by the
// given extra decisions.
func fillerBans(n int, dur time.Duration) []decisionfeed.Decision {
	base := netip.MustParseAddr("100.64.0.0").As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	now := time.Now()
	out := make([]decisionfeed.Decision, n)
	for i := range n {
		v := start + uint32(i) + 1
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		d := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.PrefixFrom(a, 32), dur, "blocklist", now)
		d.Scenario = "e2e/filler"
		out[i] = d
	}
	return out
}

var bansRE = regexp.MustCompile(`bans=(\d+) took=(\S+)`)

// TestFWBouncerMillionBans publishes a million bans, starts fw-bouncer,
// and checks they are all loaded and enforced, and that a change still
// takes effect promptly with them in place.
func TestFWBouncerMillionBans(t *testing.T) {
	testenv.RequireRoot(t)
	if testing.Short() {
		t.Skip("publishes a million decisions; skipped with -short")
	}
	n := millionBans(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m)
			target := e.attacker(0, 4)
			ds := fillerBans(n-1, 2*time.Hour)
			ds = append(ds, ban(host(target.src), 2*time.Hour))
			start := time.Now()
			const chunk = 20000
			for i := 0; i < len(ds); i += chunk {
				e.publish(ds[i:min(i+chunk, len(ds))]...)
			}
			t.Logf("published %d bans in %s", len(ds), time.Since(start).Round(time.Millisecond))

			start = time.Now()
			b := e.startBouncer("--log-level", "info")
			line := b.waitLog(t, 0, 5*time.Minute, "reconciled to the feed's snapshot")
			ready := time.Since(start)
			mm := bansRE.FindStringSubmatch(line)
			if mm == nil || mm[1] != strconv.Itoa(n) {
				t.Fatalf("reconciled %v bans, want %d: %s", mm, n, line)
			}
			t.Logf("fw-bouncer start to %d bans enforced: %s (snapshot reconcile, runner and backend: %s)", n, ready.Round(time.Millisecond), mm[2])

			e.requireAll(target, false)
			e.requireAll(e.attacker(1, 4), true)
			e.requireAll(e.attacker(0, 6), true)
			e.requireAll(e.bystander(4), true)
			e.requireAll(e.bystander(6), true)

			// With a million bans loaded, changes still apply at once.
			other := e.attacker(1, 4)
			e.publish(ban(host(other.src), time.Hour), unban(host(target.src)))
			e.waitState(other, false, 5*time.Second)
			e.waitState(target, true, 5*time.Second)
			b.stop(t)
		})
	}
}

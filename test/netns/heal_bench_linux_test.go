package netns_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/internal/testenv"
)

// procCPU returns a process's CPU time so far, its own and that of its
// waited-for children (the iptables-save runs of the iptables watch).
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			tb.Fatal(err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ = 100
}

// BenchmarkWatchCPU measures what watching for wipes costs an idle
// fw-bouncer holding 1,000 bans: its CPU share over 10 s, per mode
// (nftables: kernel events, no polling; iptables: iptables-save and ipset
// test every 250 ms; xdp: link events, a link check every 250 ms and the
// live-entry count).
func BenchmarkWatchCPU(b *testing.B) {
	testenv.RequireRoot(b)
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			e := newEnv(b, m)
			bo := e.startBouncer("--heartbeat-interval", "0")
			bo.waitLog(b, 0, 30*time.Second, "reconciled to the feed's snapshot")
			e.publish(fillerBans(1000, time.Hour)...)
			time.Sleep(2 * time.Second)
			pid := bo.cmd.Process.Pid
			for b.Loop() {
				start, t0 := procCPU(b, pid), time.Now()
				time.Sleep(10 * time.Second)
				share := float64(procCPU(b, pid)-start) / float64(time.Since(t0))
				b.ReportMetric(share*100, "%cpu")
			}
		})
	}
}

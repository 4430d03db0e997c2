package netns_test

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/test/netns"
)

// TestFWBouncerVolatilePins runs fw-bouncer in XDP mode under `ip netns
// exec`, which gives it a private mount namespace whose fresh /sys has no
// bpffs: fw-bouncer must refuse, since its pins would vanish with it; with
// --xdp-allow-volatile-pins it runs, warns, and says on SIGTERM that the
// program detaches, which the packets then confirm.
func TestFWBouncerVolatilePins(t *testing.T) {
	netns.RequireRoot(t)
	netns.RequireTool(t, "ip")
	var xdpMode modeSpec
	for _, m := range modes {
		if m.name == "xdp" {
			xdpMode = m
		}
	}
	e := newEnv(t, xdpMode)
	out, err := exec.Command("ip", "netns", "exec", e.top.Victim.Name,
		bin(t, "fw-bouncer"), "--config", e.cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "allow_volatile_pins") {
		t.Fatalf("fw-bouncer under ip netns exec: err %v, output:\n%s\nwant a refusal naming allow_volatile_pins", err, out)
	}

	cmd := exec.Command("ip", "netns", "exec", e.top.Victim.Name,
		bin(t, "fw-bouncer"), "--config", e.cfgPath, "--xdp-allow-volatile-pins", "--heartbeat-interval", "0")
	var log strings.Builder
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	a4 := e.attacker(0, 4)
	e.publish(ban(host(a4.src), time.Hour))
	e.waitState(a4, false, 10*time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		done <- err
	case <-time.After(15 * time.Second):
		t.Fatal("fw-bouncer did not stop within 15s of SIGTERM")
	}
	if !strings.Contains(log.String(), "xdp bans end with this process") ||
		!strings.Contains(log.String(), "the XDP program detaches with this process") {
		t.Errorf("log does not warn that the bans end with the process:\n%s", log.String())
	}
	if strings.Contains(log.String(), "bans stay in force") {
		t.Errorf("log claims the bans stay in force:\n%s", log.String())
	}
	// And it is so: the banned source passes once the process is gone.
	e.waitState(a4, true, 10*time.Second)
}

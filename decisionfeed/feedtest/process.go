package feedtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BrokerProcess is "portcullis broker" running as a child process, so a
// test can kill it with SIGKILL and start it again on the same address and
// data directory.
type BrokerProcess struct {
	t       testing.TB
	bin     string
	addr    string
	dataDir string
	cmd     *exec.Cmd
	waitErr chan error
}

// StartBrokerProcess builds cmd/portcullis, starts "portcullis broker" on
// a free loopback port with a data directory in t.TempDir(), and waits
// until it answers. The process is killed when the test ends.
func StartBrokerProcess(t testing.TB) *BrokerProcess {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "portcullis")
	build := exec.Command("go", "build", "-o", bin, "github.com/portcullis-ips/portcullis/cmd/portcullis")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/portcullis: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a port: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("free the picked port: %v", err)
	}
	p := &BrokerProcess{t: t, bin: bin, addr: addr, dataDir: filepath.Join(dir, "data")}
	t.Cleanup(func() {
		if p.cmd != nil {
			p.Kill()
		}
	})
	p.Start()
	return p
}

// Addr returns the broker's address.
func (p *BrokerProcess) Addr() string { return p.addr }

// Brokers returns the broker's address as a broker list.
func (p *BrokerProcess) Brokers() []string { return []string{p.addr} }

// Start starts the broker (again) and waits until it accepts connections
// and has loaded its topics.
func (p *BrokerProcess) Start() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatal("broker process already running")
	}
	cmd := exec.Command(p.bin, "broker", "--listen", p.addr, "--data-dir", p.dataDir,
		"--cleaner-interval", "1s", "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		p.t.Fatalf("broker stderr: %v", err)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start broker: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "broker listening") {
				once = true
				close(ready)
			}
		}
	}()
	p.cmd = cmd
	p.waitErr = make(chan error, 1)
	go func() { p.waitErr <- cmd.Wait() }()
	select {
	case <-ready:
	case err := <-p.waitErr:
		p.cmd = nil
		p.t.Fatalf("broker exited at start: %v", err)
	case <-time.After(30 * time.Second):
		p.t.Fatal("broker did not start in 30s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.addr)
		if err == nil {
			_ = c.Close() // only a probe: the broker accepted it
			return
		}
		if ctx.Err() != nil {
			p.t.Fatalf("broker at %s does not accept connections: %v", p.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill sends SIGKILL, as a crash or the OOM killer would, and waits for
// the process to end.
func (p *BrokerProcess) Kill() {
	p.t.Helper()
	if p.cmd == nil {
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("kill broker: %v", err)
	}
	select {
	case err := <-p.waitErr:
		// A killed (or already exited) broker is an *exec.ExitError; anything
		// else means Wait itself failed.
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			p.t.Errorf("wait for broker: %v", err)
		}
	case <-time.After(10 * time.Second):
		p.t.Errorf("broker pid %d did not die", p.cmd.Process.Pid)
	}
	p.cmd = nil
}

// String names the process for test logs.
func (p *BrokerProcess) String() string {
	pid := 0
	if p.cmd != nil && p.cmd.Process != nil {
		pid = p.cmd.Process.Pid
	}
	return fmt.Sprintf("broker %s (pid %d, data %s)", p.addr, pid, p.dataDir)
}

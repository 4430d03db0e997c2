package testenv

import (
	"runtime"
	"testing"
	"time"
)

func TestCPU(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	p0, t0 := ProcessCPU(t), ThreadCPU(t)
	for start := time.Now(); time.Since(start) < 30*time.Millisecond; {
	}
	if d := ThreadCPU(t) - t0; d <= 0 {
		t.Errorf("thread CPU did not grow over a 30 ms spin: %s", d)
	}
	if d := ProcessCPU(t) - p0; d <= 0 {
		t.Errorf("process CPU did not grow over a 30 ms spin: %s", d)
	}
	if MaxRSS(t) <= 0 {
		t.Error("MaxRSS is not positive")
	}
}

func TestRequireToolPresent(t *testing.T) {
	RequireTool(t, "go") // the test runs under go test: present, no skip
}

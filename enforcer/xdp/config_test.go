package xdp

import (
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.Interfaces = []string{"eth0", "ens3.100"}
		return c
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no interfaces", func(c *Config) { c.Interfaces = nil }, "interfaces: none given"},
		{"empty name", func(c *Config) { c.Interfaces = []string{""} }, "interfaces[0]: empty interface name"},
		{"long name", func(c *Config) { c.Interfaces = []string{"abcdefghijklmnop"} }, "longer than 15 bytes"},
		{"slash", func(c *Config) { c.Interfaces = []string{"eth0", "a/b"} }, "interfaces[1]: interface name \"a/b\": byte 1"},
		{"space", func(c *Config) { c.Interfaces = []string{"a b"} }, "byte 1 is not allowed"},
		{"dot", func(c *Config) { c.Interfaces = []string{".."} }, "not allowed"},
		{"duplicate", func(c *Config) { c.Interfaces = []string{"eth0", "eth0"} }, "interfaces[1]: \"eth0\" listed twice"},
		{"mode", func(c *Config) { c.Mode = "offload" }, "mode: \"offload\" is not native, generic or auto"},
		{"empty mode", func(c *Config) { c.Mode = "" }, "mode: \"\""},
		{"pin path empty", func(c *Config) { c.PinPath = "" }, "pin_path: empty"},
		{"pin path relative", func(c *Config) { c.PinPath = "sys/fs/bpf/portcullis" }, "not a clean absolute path"},
		{"pin path unclean", func(c *Config) { c.PinPath = "/sys/fs/bpf/../portcullis" }, "not a clean absolute path"},
		{"pin path outside bpffs", func(c *Config) { c.PinPath = "/tmp/portcullis" }, "is not under /sys/fs/bpf"},
		{"pin path root", func(c *Config) { c.PinPath = "/sys/fs/bpf" }, "is not under /sys/fs/bpf"},
		{"pin path foreign name", func(c *Config) { c.PinPath = "/sys/fs/bpf/cilium" }, "must start with \"portcullis\""},
		{"zero v4", func(c *Config) { c.MaxExactV4 = 0 }, "max_exact_v4: 0 is outside [1, 67108864]"},
		{"huge v6", func(c *Config) { c.MaxExactV6 = 1 << 27 }, "max_exact_v6: 134217728 is outside"},
		{"zero ranges v4", func(c *Config) { c.MaxRangesV4 = 0 }, "max_ranges_v4"},
		{"huge ranges v6", func(c *Config) { c.MaxRangesV6 = 1 << 25 }, "max_ranges_v6"},
		{"one reason", func(c *Config) { c.MaxReasons = 1 }, "max_reasons: 1 is outside [2, 65536]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	if c.MaxExactV4 < 1_048_576 {
		t.Errorf("default IPv4 capacity %d, want at least 1,048,576", c.MaxExactV4)
	}
	if c.Mode != ModeAuto || c.PinPath != "/sys/fs/bpf/portcullis" {
		t.Errorf("defaults = %+v", c)
	}
	if err := ValidatePinPath(c.PinPath); err != nil {
		t.Errorf("default pin path: %v", err)
	}
}

package nftables

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is the nftables backend's part of the fw-bouncer configuration.
type Config struct {
	// Table is the name of the inet table the backend owns; it must start
	// with "portcullis" so ownership is visible and Cleanup never touches
	// anything else.
	Table string `yaml:"table"`
	// Priority is the priority of the input (and forward) chains; lower
	// runs earlier. The default, -200, runs before the usual filter
	// tables (0) and after conntrack defragmentation.
	Priority int32 `yaml:"priority"`
	// Forward also filters forwarded traffic (routers, container hosts).
	Forward bool `yaml:"forward"`
	// Ingress lists interfaces that get an ingress-hook chain of their own,
	// dropping banned sources before any routing or conntrack work.
	Ingress []string `yaml:"ingress"`
	// IngressPriority is the priority of the ingress chains.
	IngressPriority int32 `yaml:"ingress_priority"`
	// DenyAction is "drop" or "reject" (ICMP administratively prohibited,
	// TCP reset where it applies). Ingress chains always drop: reject is
	// not available at that hook.
	DenyAction string `yaml:"deny_action"`
	// Log, when enabled, logs denied packets at a bounded rate.
	Log LogConfig `yaml:"log"`
	// GCInterval is how often the kernel walks each set to free expired
	// elements. Expired elements stop matching at once whatever this is;
	// the walk only frees memory, and nft's default (1 s) costs a busy
	// core share on big sets, so the default here is 1 h.
	GCInterval time.Duration `yaml:"gc_interval"`
	// ChunkSize is the most elements one netlink transaction carries, so a
	// big snapshot is loaded in several short transactions.
	ChunkSize int `yaml:"chunk_size"`
	// NetNS is the path of a network namespace to work in (for example
	// /run/netns/NAME); empty means the namespace of the process.
	NetNS string `yaml:"netns"`
}

// LogConfig configures rate-limited logging of denied packets.
type LogConfig struct {
	// Enabled turns logging on.
	Enabled bool `yaml:"enabled"`
	// Prefix starts every log line; at most 127 bytes.
	Prefix string `yaml:"prefix"`
	// Rate is the most log lines per second, Burst how many may come at once.
	Rate  uint32 `yaml:"rate"`
	Burst uint32 `yaml:"burst"`
}

// TablePrefix starts the name of every table the backend creates.
const TablePrefix = "portcullis"

// DefaultConfig returns the configuration used when the file sets nothing.
func DefaultConfig() Config {
	return Config{
		Table:           TablePrefix,
		Priority:        -200,
		IngressPriority: -500,
		DenyAction:      "drop",
		Log:             LogConfig{Prefix: "portcullis drop: ", Rate: 10, Burst: 20},
		GCInterval:      time.Hour,
		ChunkSize:       50000,
	}
}

// Validate checks the configuration without touching the system.
func (c Config) Validate() error {
	var errs []error
	if !strings.HasPrefix(c.Table, TablePrefix) {
		errs = append(errs, fmt.Errorf("table: %q does not start with %q", c.Table, TablePrefix))
	}
	if len(c.Table) > 255 {
		errs = append(errs, fmt.Errorf("table: name longer than 255 bytes"))
	}
	switch c.DenyAction {
	case "drop", "reject":
	default:
		errs = append(errs, fmt.Errorf("deny_action: %q is neither drop nor reject", c.DenyAction))
	}
	seen := map[string]bool{}
	for _, ifname := range c.Ingress {
		if ifname == "" || len(ifname) >= 16 || strings.ContainsAny(ifname, "/ \t\n") {
			errs = append(errs, fmt.Errorf("ingress: %q is not an interface name", ifname))
		}
		if seen[ifname] {
			errs = append(errs, fmt.Errorf("ingress: %q listed twice", ifname))
		}
		seen[ifname] = true
	}
	if c.Log.Enabled {
		if len(c.Log.Prefix) > 127 {
			errs = append(errs, fmt.Errorf("log.prefix: longer than 127 bytes"))
		}
		if c.Log.Rate == 0 {
			errs = append(errs, fmt.Errorf("log.rate: must be at least 1 per second"))
		}
	}
	if c.GCInterval < time.Second || c.GCInterval > 24*time.Hour {
		errs = append(errs, fmt.Errorf("gc_interval: %s is outside 1s..24h", c.GCInterval))
	}
	if c.ChunkSize < 1 || c.ChunkSize > 200000 {
		errs = append(errs, fmt.Errorf("chunk_size: %d is outside 1..200000", c.ChunkSize))
	}
	return errors.Join(errs...)
}

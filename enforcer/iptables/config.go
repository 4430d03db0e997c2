package iptables

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Config is the iptables+ipset backend's part of the fw-bouncer
// configuration.
type Config struct {
	// Flavor picks the iptables binaries: "auto" (iptables/ip6tables as
	// found on PATH, whatever the alternatives system points them at),
	// "legacy" (iptables-legacy) or "nft" (iptables-nft).
	Flavor string `yaml:"flavor"`
	// Name names the chain (upper-cased) and starts the ipset names; it
	// must start with "portcullis" (case-insensitive) and be at most 20
	// bytes, so set names stay within ipset's 31.
	Name string `yaml:"name"`
	// Hooks are the filter-table chains that jump to ours: INPUT and, when
	// configured, FORWARD and DOCKER-USER (which must exist already).
	Hooks []string `yaml:"hooks"`
	// DenyAction is "drop" or "reject" (ICMP administratively prohibited).
	DenyAction string `yaml:"deny_action"`
	// Log, when enabled, logs denied packets at a bounded rate.
	Log LogConfig `yaml:"log"`
	// MaxElements is the most entries an ipset may hold (per family).
	MaxElements uint32 `yaml:"max_elements"`
	// IPv6 also enforces IPv6 bans with ip6tables; without it IPv6
	// entries are refused.
	IPv6 bool `yaml:"ipv6"`
	// NetNS is the path of a network namespace to work in (for example
	// /run/netns/NAME); empty means the namespace of the process.
	NetNS string `yaml:"netns"`
}

// LogConfig configures rate-limited logging of denied packets.
type LogConfig struct {
	// Enabled turns logging on.
	Enabled bool `yaml:"enabled"`
	// Prefix starts every log line; at most 29 bytes (the LOG target's limit).
	Prefix string `yaml:"prefix"`
	// Rate is the most log lines per second, Burst how many may come at once.
	Rate  uint32 `yaml:"rate"`
	Burst uint32 `yaml:"burst"`
}

// NamePrefix starts the chain and ipset names the backend creates.
const NamePrefix = "portcullis"

// knownHooks are the chains the backend may jump from; Cleanup removes its
// jump from each of them.
var knownHooks = []string{"INPUT", "FORWARD", "DOCKER-USER"}

// DefaultConfig returns the configuration used when the file sets nothing.
func DefaultConfig() Config {
	return Config{
		Flavor:      "auto",
		Name:        NamePrefix,
		Hooks:       []string{"INPUT"},
		DenyAction:  "drop",
		Log:         LogConfig{Prefix: "portcullis drop: ", Rate: 10, Burst: 20},
		MaxElements: 4 << 20,
		IPv6:        true,
	}
}

// Validate checks the configuration without touching the system.
func (c Config) Validate() error {
	var errs []error
	switch c.Flavor {
	case "auto", "legacy", "nft":
	default:
		errs = append(errs, fmt.Errorf("flavor: %q is not auto, legacy or nft", c.Flavor))
	}
	if !strings.HasPrefix(strings.ToLower(c.Name), NamePrefix) {
		errs = append(errs, fmt.Errorf("name: %q does not start with %q", c.Name, NamePrefix))
	}
	if len(c.Name) > 20 || strings.ContainsAny(c.Name, " \t\n!") {
		errs = append(errs, fmt.Errorf("name: %q is longer than 20 bytes or holds blanks", c.Name))
	}
	if len(c.Hooks) == 0 {
		errs = append(errs, errors.New("hooks: empty; at least INPUT is needed"))
	}
	for i, h := range c.Hooks {
		if !slices.Contains(knownHooks, h) {
			errs = append(errs, fmt.Errorf("hooks: %q is not one of %s", h, strings.Join(knownHooks, ", ")))
		}
		if slices.Contains(c.Hooks[:i], h) {
			errs = append(errs, fmt.Errorf("hooks: %q listed twice", h))
		}
	}
	switch c.DenyAction {
	case "drop", "reject":
	default:
		errs = append(errs, fmt.Errorf("deny_action: %q is neither drop nor reject", c.DenyAction))
	}
	if c.Log.Enabled {
		if len(c.Log.Prefix) > 29 || strings.ContainsAny(c.Log.Prefix, "\"\n") {
			errs = append(errs, errors.New("log.prefix: longer than 29 bytes or holds a quote or newline"))
		}
		if c.Log.Rate == 0 {
			errs = append(errs, errors.New("log.rate: must be at least 1 per second"))
		}
	}
	if c.MaxElements < 1024 {
		errs = append(errs, fmt.Errorf("max_elements: %d is below 1024", c.MaxElements))
	}
	return errors.Join(errs...)
}

// chain is the name of our filter-table chain.
func (c Config) chain() string { return strings.ToUpper(c.Name) }

// setName returns the live ipset of a family (4 or 6) and tmp its loading
// twin used by a full reload.
func (c Config) setName(family int, tmp bool) string {
	n := fmt.Sprintf("%s-v%d", c.Name, family)
	if tmp {
		n += "-tmp"
	}
	return n
}

// binaries returns the iptables and ip6tables commands of the flavor.
func (c Config) binaries() (v4, v6 string) {
	switch c.Flavor {
	case "legacy":
		return "iptables-legacy", "ip6tables-legacy"
	case "nft":
		return "iptables-nft", "ip6tables-nft"
	}
	return "iptables", "ip6tables"
}

package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
)

// Config is the policy section every bouncer's configuration inlines: the
// keys whitelist, types, origins, scenarios, protect_host_addresses and
// host_addresses_refresh.
type Config struct {
	// Whitelist holds addresses and ranges that are never banned, nor is
	// any range that overlaps them.
	Whitelist Prefixes `yaml:"whitelist"`
	// Types are the decision types enforced; empty means every type the
	// bouncer can enforce.
	Types []decisionfeed.Type `yaml:"types"`
	// Origins, when not empty, are the only origins whose decisions are
	// enforced (KnownOrigins).
	Origins []string `yaml:"origins"`
	// Scenarios, when not empty, are the only scenarios whose decisions are
	// enforced; an entry ending in "*" matches every scenario it prefixes
	// ("crowdsecurity/*"). A decision without a scenario matches none.
	Scenarios []string `yaml:"scenarios"`
	// ProtectHostAddresses refuses bans covering an address of the host's
	// interfaces. Loopback is protected regardless.
	ProtectHostAddresses bool `yaml:"protect_host_addresses"`
	// HostAddressesRefresh is how often the host's addresses are read again
	// and the bouncer's dependencies (brokers, upstreams) resolved again;
	// 0 reads and resolves only at start.
	HostAddressesRefresh time.Duration `yaml:"host_addresses_refresh"`
}

// KnownOrigins are the origins the producers of the decisions topic write;
// a filter naming another one is a typing error.
var KnownOrigins = []string{"engine", "cli", "blocklist", "crowdsec", "console"}

// knownTypes are the decision types of schema v1.
var knownTypes = []decisionfeed.Type{decisionfeed.TypeBan, decisionfeed.TypeCaptcha, decisionfeed.TypeThrottle}

// DefaultConfig returns the policy every bouncer starts from: every
// enforceable type, every origin and scenario, host addresses protected
// and read again every 30 seconds.
func DefaultConfig() Config {
	return Config{ProtectHostAddresses: true, HostAddressesRefresh: 30 * time.Second}
}

// Validate checks the configuration against the decision types the bouncer
// can enforce (supported); errors name the setting. It does no I/O.
func (c *Config) Validate(supported []decisionfeed.Type) error {
	for i, p := range c.Whitelist {
		if !p.IsValid() {
			return fmt.Errorf("whitelist[%d]: invalid prefix", i)
		}
	}
	for _, t := range c.Types {
		if !slices.Contains(knownTypes, t) {
			return fmt.Errorf("types: %q is not a decision type (%s)", t, joinTypes(knownTypes))
		}
		if !slices.Contains(supported, t) {
			return fmt.Errorf("types: %q is not enforced by this bouncer (it enforces %s)", t, joinTypes(supported))
		}
	}
	for _, o := range c.Origins {
		if !slices.Contains(KnownOrigins, o) {
			return fmt.Errorf("origins: %q is not an origin (%s)", o, strings.Join(KnownOrigins, ", "))
		}
	}
	for _, s := range c.Scenarios {
		star := strings.IndexByte(s, '*')
		if s == "" || strings.ContainsAny(s, " \t\r\n") || (star >= 0 && star != len(s)-1) {
			return fmt.Errorf("scenarios: %q is not a scenario name or a prefix ending in *", s)
		}
	}
	if c.HostAddressesRefresh < 0 {
		return fmt.Errorf("host_addresses_refresh: %s is negative", c.HostAddressesRefresh)
	}
	return nil
}

func joinTypes(ts []decisionfeed.Type) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// Prefixes is a list of addresses and ranges as written in YAML: a bare
// address stands for its /32 or /128; every entry is canonical
// (enforcer.ParsePrefix).
type Prefixes []netip.Prefix

// UnmarshalYAML decodes a sequence of addresses and ranges, naming the line
// of a bad one.
func (l *Prefixes) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: want a list of addresses and CIDR ranges", n.Line)
	}
	out := make(Prefixes, 0, len(n.Content))
	for _, item := range n.Content {
		if item.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: want an address or CIDR range", item.Line)
		}
		p, err := enforcer.ParsePrefix(item.Value)
		if err != nil {
			return fmt.Errorf("line %d: whitelist: %w", item.Line, err)
		}
		out = append(out, p)
	}
	*l = out
	return nil
}

// ParsePrefixes parses comma-separated addresses and CIDR ranges, as the
// list flags take them; empty fields are skipped.
func ParsePrefixes(s string) (Prefixes, error) {
	var out Prefixes
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		p, err := enforcer.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// splitList splits a comma-separated flag value, dropping empty fields.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/banfile"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/internal/config"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// FailMode says what /check answers before the feed delivered its snapshot.
type FailMode string

// The fail modes.
const (
	// FailOpen allows every request until the bans are known (the default:
	// a bouncer outage does not take the site down).
	FailOpen FailMode = "open"
	// FailClosed refuses every request until the bans are known.
	FailClosed FailMode = "closed"
)

// Config is the nginx bouncer's configuration: the YAML file, then flags.
type Config struct {
	// Listen is the address of the auth_request service.
	Listen string `yaml:"listen"`
	// TrustedProxies are the peers whose X-Real-IP / X-Forwarded-For are
	// believed; any other peer is the client itself.
	TrustedProxies PrefixList `yaml:"trusted_proxies"`
	// FailMode is "open" or "closed".
	FailMode FailMode `yaml:"fail_mode"`
	// BanTemplate is an html/template file for GET /ban; empty uses the
	// built-in page.
	BanTemplate string `yaml:"ban_template"`
	// Brokers are the Kafka bootstrap brokers.
	Brokers []string `yaml:"brokers"`
	// Kafka is the TLS and SASL the bouncer connects with.
	Kafka kafkaconn.Config `yaml:"kafka"`
	// Topic is the decisions topic.
	Topic string `yaml:"topic"`
	// Group is the per-host lag-reporting consumer group.
	Group string `yaml:"group"`
	// MetricsListen is the Prometheus endpoint's address; empty turns it off.
	MetricsListen string `yaml:"metrics_listen"`
	// SweepInterval is how often expired entries are dropped from memory
	// (lookups ignore them as soon as they expire).
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// HeartbeatInterval is the time between two heartbeats on the
	// heartbeat topic ("portcullis bouncers list"); 0 turns them off.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// Policy is the whitelist, the decision filters and the protection of
	// loopback and host addresses, shared by every bouncer (keys
	// whitelist, types, origins, scenarios, protect_host_addresses,
	// host_addresses_refresh).
	Policy policy.Config `yaml:",inline"`
	// BanFile is the file the in-nginx Lua check maps
	// (contrib/nginx/portcullis/portcullis.lua); empty: auth_request only.
	BanFile string `yaml:"ban_file"`
}

// supportedTypes are the decision types nginx-bouncer enforces.
var supportedTypes = []decisionfeed.Type{decisionfeed.TypeBan, decisionfeed.TypeCaptcha}

// DefaultConfig returns the configuration used for what is not set.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return Config{
		Listen:         "127.0.0.1:8090",
		TrustedProxies: PrefixList{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		FailMode:       FailOpen,
		Topic:          decisionfeed.TopicDecisions,
		Group:          "portcullis-nginx-bouncer-" + host,
		SweepInterval:  time.Minute,

		HeartbeatInterval: 30 * time.Second,
		Policy:            policy.DefaultConfig(),
	}
}

// Validate checks the configuration without doing any I/O.
func (c *Config) Validate() error {
	if path, ok := strings.CutPrefix(c.Listen, "unix:"); ok {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("listen: %q is not unix:/absolute/path", c.Listen)
		}
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %q is neither host:port nor unix:/path", c.Listen)
	}
	if c.BanFile != "" {
		bc := banfile.DefaultConfig()
		bc.Path = c.BanFile
		if err := bc.Validate(); err != nil {
			return fmt.Errorf("ban_file: %w", err)
		}
	}
	for i, p := range c.TrustedProxies {
		if !p.IsValid() {
			return fmt.Errorf("trusted_proxies[%d]: invalid prefix", i)
		}
	}
	switch c.FailMode {
	case FailOpen, FailClosed:
	default:
		return fmt.Errorf("fail_mode: %q is neither open nor closed", c.FailMode)
	}
	if err := config.ValidateFeed(c.Brokers, c.Topic, c.Group, c.MetricsListen); err != nil {
		return err
	}
	if c.SweepInterval <= 0 {
		return fmt.Errorf("sweep_interval: %s is not positive", c.SweepInterval)
	}
	if c.HeartbeatInterval < 0 {
		return fmt.Errorf("heartbeat_interval: %s is negative", c.HeartbeatInterval)
	}
	return c.Policy.Validate(supportedTypes)
}

// PrefixList is a list of prefixes that YAML and flags may also write as
// bare addresses (a /32 or /128).
type PrefixList []netip.Prefix

// UnmarshalYAML decodes a sequence of addresses and prefixes, naming the
// line of a bad one.
func (l *PrefixList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: want a list of addresses and prefixes", n.Line)
	}
	out := make(PrefixList, 0, len(n.Content))
	for _, item := range n.Content {
		if item.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: want an address or prefix", item.Line)
		}
		p, err := config.ParsePrefixes(item.Value)
		if err != nil || len(p) != 1 {
			return fmt.Errorf("line %d: %q is not an address or prefix", item.Line, item.Value)
		}
		out = append(out, p[0])
	}
	*l = out
	return nil
}

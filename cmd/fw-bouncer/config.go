package main

import (
	"fmt"
	"os"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/iptables"
	"github.com/portcullis-ips/portcullis/enforcer/nftables"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/enforcer/xdp"
	"github.com/portcullis-ips/portcullis/internal/config"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// Config is fw-bouncer's configuration: defaults, then the YAML file, then
// flags. Each backend owns its section and its validation.
type Config struct {
	// Mode names the backend, a row of the backends table.
	Mode string `yaml:"mode"`
	// Brokers are the Kafka bootstrap brokers.
	Brokers []string `yaml:"brokers"`
	// Kafka is the TLS and SASL the bouncer connects with.
	Kafka kafkaconn.Config `yaml:"kafka"`
	// Topic is the decisions topic.
	Topic string `yaml:"topic"`
	// Group is the per-host consumer group offsets are committed under,
	// for lag reporting only.
	Group string `yaml:"group"`
	// MetricsListen is the Prometheus endpoint's address; empty: off.
	MetricsListen string `yaml:"metrics_listen"`
	// DryRun logs what would be applied and touches nothing.
	DryRun bool `yaml:"dry_run"`
	// Policy is the whitelist, the decision filters and the protection of
	// host addresses, shared by every bouncer (keys whitelist, types,
	// origins, scenarios, protect_host_addresses, host_addresses_refresh).
	Policy policy.Config `yaml:",inline"`
	// Coalesce is how long a burst of changes is gathered into one batch.
	Coalesce time.Duration `yaml:"coalesce"`
	// SweepInterval is how often expired bans are deleted from the
	// backend's tables (they stop matching at expiry regardless).
	SweepInterval time.Duration `yaml:"sweep_interval"`
	// HeartbeatInterval is the time between two heartbeats on the
	// heartbeat topic ("portcullis bouncers list"); 0 turns them off.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// XDP, NFTables and IPTables are the backends' own sections.
	XDP      xdp.Config      `yaml:"xdp"`
	NFTables nftables.Config `yaml:"nftables"`
	IPTables iptables.Config `yaml:"iptables"`
}

// DefaultConfig returns the configuration used for what is not set.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return Config{
		Mode:              "xdp",
		Topic:             decisionfeed.TopicDecisions,
		Group:             "portcullis-fw-bouncer-" + host,
		Policy:            policy.DefaultConfig(),
		Coalesce:          5 * time.Millisecond,
		SweepInterval:     time.Minute,
		HeartbeatInterval: 30 * time.Second,
		XDP:               xdp.DefaultConfig(),
		NFTables:          nftables.DefaultConfig(),
		IPTables:          iptables.DefaultConfig(),
	}
}

// Validate checks the settings shared by every mode, then the chosen
// backend's section; it does no I/O.
func (c *Config) Validate() error {
	b, err := lookupBackend(c.Mode)
	if err != nil {
		return err
	}
	if err := config.ValidateFeed(c.Brokers, c.Topic, c.Group, c.MetricsListen); err != nil {
		return err
	}
	if err := c.Policy.Validate(supportedTypes); err != nil {
		return err
	}
	if c.Coalesce < 0 || c.Coalesce > time.Second {
		return fmt.Errorf("coalesce: %s is outside 0..1s", c.Coalesce)
	}
	if c.SweepInterval < 0 {
		return fmt.Errorf("sweep_interval: %s is negative", c.SweepInterval)
	}
	if c.HeartbeatInterval < 0 {
		return fmt.Errorf("heartbeat_interval: %s is negative", c.HeartbeatInterval)
	}
	if err := b.validate(c); err != nil {
		return fmt.Errorf("%s: %w", b.name, err)
	}
	return nil
}

// supportedTypes are the decision types a kernel backend enforces.
var supportedTypes = []decisionfeed.Type{decisionfeed.TypeBan}

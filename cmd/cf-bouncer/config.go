package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/cloudflare"
	"github.com/portcullis-ips/portcullis/internal/config"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// Config is the Cloudflare bouncer's configuration: the YAML file, then
// flags. The Cloudflare settings (account_id, zone_ids, item_limit, ...)
// sit at the top level of the file.
type Config struct {
	Cloudflare cloudflare.Config `yaml:",inline"`
	// TokenFile holds the API token; empty reads CLOUDFLARE_API_TOKEN.
	TokenFile string `yaml:"token_file"`
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
	// Debounce is how long the daemon waits after a change for more
	// changes before it syncs, so a burst becomes one bulk call.
	Debounce time.Duration `yaml:"debounce"`
	// MaxDelay bounds the wait of a change when changes keep coming.
	MaxDelay time.Duration `yaml:"max_delay"`
	// SyncRetryMin and SyncRetryMax bound the backoff after a failed sync.
	SyncRetryMin time.Duration `yaml:"sync_retry_min"`
	SyncRetryMax time.Duration `yaml:"sync_retry_max"`
	// SnapshotTimeout bounds the wait for the feed's snapshot in --once
	// and --dry-run.
	SnapshotTimeout time.Duration `yaml:"snapshot_timeout"`
}

// DefaultConfig returns the configuration used for what is not set.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	return Config{
		Cloudflare:      cloudflare.DefaultConfig(),
		Topic:           decisionfeed.TopicDecisions,
		Group:           "portcullis-cf-bouncer-" + host,
		Debounce:        2 * time.Second,
		MaxDelay:        30 * time.Second,
		SyncRetryMin:    5 * time.Second,
		SyncRetryMax:    5 * time.Minute,
		SnapshotTimeout: 2 * time.Minute,
	}
}

// Validate checks the configuration without doing any I/O.
func (c *Config) Validate() error {
	if err := c.Cloudflare.Validate(); err != nil {
		return err
	}
	if err := config.ValidateFeed(c.Brokers, c.Topic, c.Group, c.MetricsListen); err != nil {
		return err
	}
	switch {
	case c.Debounce < 0:
		return fmt.Errorf("debounce: %s is negative", c.Debounce)
	case c.MaxDelay < c.Debounce:
		return fmt.Errorf("max_delay: %s is shorter than debounce %s", c.MaxDelay, c.Debounce)
	case c.SyncRetryMin <= 0 || c.SyncRetryMax < c.SyncRetryMin:
		return fmt.Errorf("sync_retry_min/sync_retry_max: %s/%s is not 0 < min <= max", c.SyncRetryMin, c.SyncRetryMax)
	case c.SnapshotTimeout <= 0:
		return fmt.Errorf("snapshot_timeout: %s is not positive", c.SnapshotTimeout)
	}
	return nil
}

// readToken returns the API token from the file, else from the
// CLOUDFLARE_API_TOKEN environment variable.
func readToken(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("token file %s: empty", file)
		}
		if strings.ContainsAny(t, " \t\r\n") {
			return "", fmt.Errorf("token file %s: more than one word", file)
		}
		return t, nil
	}
	t := strings.TrimSpace(os.Getenv("CLOUDFLARE_API_TOKEN"))
	if t == "" {
		return "", errors.New("no API token: set CLOUDFLARE_API_TOKEN or --token-file")
	}
	return t, nil
}

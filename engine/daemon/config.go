package daemon

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine/internal/strictyaml"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// Default names of the engine's own topics and group.
const (
	// DefaultEventsTopic is the internal topic that re-keys parsed events by
	// source address (DESIGN.md, "Scaling the engine").
	DefaultEventsTopic = "portcullis-events"
	// DefaultEventsPartitions is the partition count the daemon creates the
	// events topic with when it is missing.
	DefaultEventsPartitions = 6
	// DefaultDetectGroup is the consumer group of the detect stage on the
	// events topic.
	DefaultDetectGroup = "portcullis-engine-detect"
	// DefaultPruneInterval is the wait between two pruning passes over a
	// partition of the decisions topic.
	DefaultPruneInterval = 5 * time.Minute
	// DefaultDrainTimeout bounds how long a stopping daemon keeps
	// publishing what it has already detected.
	DefaultDrainTimeout = 10 * time.Second
)

// Config is the engine.yaml file.
type Config struct {
	// Acquis is the acquis.yaml file of sources (required).
	Acquis string `yaml:"acquis"`
	// Scenarios is a directory of scenario files; empty means the shipped ones.
	Scenarios string `yaml:"scenarios"`
	// Profiles is the profiles file; empty means the shipped defaults.
	Profiles string `yaml:"profiles"`
	// Brokers are the Kafka brokers of the outputs and of re-keying;
	// --brokers and PORTCULLIS_BROKERS override them.
	Brokers []string `yaml:"brokers"`
	// Kafka is the TLS and SASL of the engine's Kafka clients, the same
	// section as in every program's configuration; the --kafka-* flags and
	// PORTCULLIS_KAFKA_* variables override it.
	Kafka kafkaconn.Config `yaml:"kafka"`
	// Host names this engine in alerts and decisions; empty means the host name.
	Host string `yaml:"host"`
	// Timezone is the zone of log timestamps that carry no offset (RFC 3164
	// syslog, the nginx error log): an IANA name or "Local"; empty is UTC.
	Timezone string `yaml:"timezone"`
	// Topics name the output and internal topics.
	Topics Topics `yaml:"topics"`
	// Rekey turns on the re-keying stage: parsed events go to the events
	// topic keyed by source address and the detect stage consumes it in
	// RekeyGroup, so several instances sharing the server-logs consumer
	// group count every address in one place. One instance needs none.
	Rekey bool `yaml:"rekey"`
	// RekeyGroup is the detect stage's consumer group (default DefaultDetectGroup).
	RekeyGroup string `yaml:"rekey_group"`
	// EventsPartitions is the partition count used when the daemon creates
	// the events topic (default DefaultEventsPartitions).
	EventsPartitions int `yaml:"events_partitions"`
	// MaxBuckets bounds each scenario's buckets (0: the scenario default).
	MaxBuckets int `yaml:"max_buckets"`
	// DrainTimeout bounds the publishing of pending output at shutdown.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// PruneInterval is the wait between two passes that tombstone the
	// expired and deleted keys of the decisions topic (default
	// DefaultPruneInterval); a negative value turns pruning off.
	PruneInterval time.Duration `yaml:"prune_interval"`
	// PruneGroup is the consumer group the engine instances share the
	// pruning in, one instance per partition (default
	// decisionfeed.DefaultPruneGroup).
	PruneGroup string `yaml:"prune_group"`

	// dir is the directory of the engine.yaml file; relative paths are
	// taken from there.
	dir string
}

// Topics are the topic names the engine writes (and re-keys through).
type Topics struct {
	Decisions string `yaml:"decisions"` // ban decisions (default crowdsec-decisions)
	Alerts    string `yaml:"alerts"`    // alert JSON keyed by address (default alert-notifications)
	Events    string `yaml:"events"`    // re-keyed parsed events (default portcullis-events)
}

// DefaultConfig returns the defaults LoadConfig starts from.
func DefaultConfig() Config {
	return Config{
		Topics: Topics{
			Decisions: decisionfeed.TopicDecisions,
			Alerts:    decisionfeed.TopicAlerts,
			Events:    DefaultEventsTopic,
		},
		RekeyGroup:       DefaultDetectGroup,
		EventsPartitions: DefaultEventsPartitions,
		DrainTimeout:     DefaultDrainTimeout,
		PruneInterval:    DefaultPruneInterval,
		PruneGroup:       decisionfeed.DefaultPruneGroup,
	}
}

// LoadConfig reads engine.yaml strictly: unknown keys and bad values are
// errors naming the file and line.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read engine config: %w", err)
	}
	return ParseConfig(path, b)
}

// ParseConfig decodes engine.yaml from b; file names it in errors and gives
// the directory relative paths are resolved against.
func ParseConfig(file string, b []byte) (Config, error) {
	c := DefaultConfig()
	root, err := strictyaml.Decode(file, b, &c)
	if err != nil {
		return Config{}, err
	}
	bad := func(path []string, format string, args ...any) error {
		return strictyaml.Errorf(file, root, path, format, args...)
	}
	if c.Acquis == "" {
		return Config{}, bad(nil, "acquis: missing (the acquis.yaml file of sources)")
	}
	for i, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return Config{}, bad([]string{"brokers", fmt.Sprint(i)}, "brokers: %q is not host:port", b)
		}
	}
	if c.Timezone != "" {
		if _, err := time.LoadLocation(c.Timezone); err != nil {
			return Config{}, bad([]string{"timezone"}, "timezone: %v", err)
		}
	}
	for _, t := range []struct{ key, name string }{
		{"decisions", c.Topics.Decisions}, {"alerts", c.Topics.Alerts}, {"events", c.Topics.Events},
	} {
		if !validTopic(t.name) {
			return Config{}, bad([]string{"topics", t.key}, "topics: %s: %q is not a Kafka topic name", t.key, t.name)
		}
	}
	if c.RekeyGroup == "" || strings.ContainsAny(c.RekeyGroup, " \t\n") {
		return Config{}, bad([]string{"rekey_group"}, "rekey_group: %q is not a group name", c.RekeyGroup)
	}
	if c.EventsPartitions < 1 || c.EventsPartitions > 1024 {
		return Config{}, bad([]string{"events_partitions"}, "events_partitions: %d is not between 1 and 1024", c.EventsPartitions)
	}
	if c.PruneGroup == "" || strings.ContainsFunc(c.PruneGroup, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return Config{}, bad([]string{"prune_group"}, "prune_group: %q is not a group name", c.PruneGroup)
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.MaxBuckets < 0 {
		return Config{}, bad([]string{"max_buckets"}, "max_buckets: negative")
	}
	if c.DrainTimeout < 0 || c.DrainTimeout > 10*time.Minute {
		return Config{}, bad([]string{"drain_timeout"}, "drain_timeout: %s is not between 0 and 10m", c.DrainTimeout)
	}
	if c.Host != "" && (len(c.Host) > 253 || strings.ContainsFunc(c.Host, func(r rune) bool { return r <= ' ' || r >= 0x7f })) {
		return Config{}, bad([]string{"host"}, "host: %q is not a host name", c.Host)
	}
	c.dir = filepath.Dir(file)
	return c, nil
}

// validTopic follows Kafka's rule: 1 to 249 of [a-zA-Z0-9._-], not "." or "..".
func validTopic(s string) bool {
	if s == "" || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

// path resolves p against the directory of the config file.
func (c *Config) path(p string) string {
	if p == "" || filepath.IsAbs(p) || c.dir == "" {
		return p
	}
	return filepath.Join(c.dir, p)
}

// Package broker runs the embedded single-node Kafka-protocol broker of
// Portcullis (franz-go's kfake): the default for one host and for fast
// tests. It listens on one address, which it also advertises so clients
// reconnect to it, keeps its log in a data directory that survives a crash,
// and creates the topics it is given. Fleets use Apache Kafka instead.
package broker

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
)

// DefaultListen is the address the broker listens on when none is given.
const DefaultListen = "127.0.0.1:9092"

// Topic is a topic the broker creates at start when it does not exist yet.
type Topic struct {
	Name       string
	Partitions int32
	// Configs are topic configs such as cleanup.policy.
	Configs map[string]string
}

// Config configures the broker.
type Config struct {
	// Listen is the host:port to listen on and advertise (default
	// DefaultListen; port 0 picks a free port). A host of 0.0.0.0 or ::
	// is advertised as 127.0.0.1 unless Advertise is set.
	Listen string
	// Advertise is the host:port given to clients in metadata (default:
	// the bound listen address).
	Advertise string
	// DataDir keeps the log and offsets on disk and reloads them at start.
	// Empty keeps everything in memory.
	DataDir string
	// SyncWrites fsyncs every produced batch, so acknowledged decisions
	// survive a power loss too; a killed process loses nothing without it.
	SyncWrites bool
	// Topics are created at start when missing. Nil creates none.
	Topics []Topic
	// CleanerInterval is how often compacted topics are cleaned (default 30s).
	CleanerInterval time.Duration
	// MaxMessageBytes is the largest record batch accepted (default 1 MiB).
	MaxMessageBytes int
	// TLSCert and TLSKey are PEM files; with them the listener is TLS only.
	TLSCert, TLSKey string
	// Users turns on SASL authentication (PLAIN, SCRAM-SHA-256 and
	// SCRAM-SHA-512, see LoadUsers) and ACLs: only Admin may delete
	// topics or records.
	Users []User
	// Admin is the user allowed to delete topics and records (default
	// DefaultAdmin); it must be among Users.
	Admin string
	// AllowInsecureListen lets the broker listen beyond loopback without
	// both TLS and SASL. Without it Start refuses: anyone who reaches such
	// a listener can publish, delete and read every decision.
	AllowInsecureListen bool
}

// Secure reports whether clients must use TLS and authenticate.
func (c *Config) Secure() bool { return c.TLSCert != "" && len(c.Users) > 0 }

// DefaultTopics returns the topics of DESIGN.md with their partition
// counts, the decisions topic compacted, and the decisions' dead-letter topic.
func DefaultTopics() []Topic {
	return []Topic{
		{Name: decisionfeed.TopicServerLogs, Partitions: decisionfeed.PartitionsServerLogs},
		{Name: decisionfeed.TopicDecisions, Partitions: decisionfeed.PartitionsDecisions, Configs: CompactConfigs()},
		{Name: decisionfeed.TopicAlerts, Partitions: decisionfeed.PartitionsAlerts},
		{Name: decisionfeed.TopicThreatIntel, Partitions: decisionfeed.PartitionsThreatIntel},
		{Name: decisionfeed.DLQTopic(decisionfeed.TopicDecisions), Partitions: 1},
	}
}

// CompactConfigs returns the topic configs of a compacted decisions topic.
// Tombstones stay readable for a day after they were written, so a
// subscriber that was away for less than that still sees the delete.
func CompactConfigs() map[string]string {
	return map[string]string{
		"cleanup.policy":      "compact",
		"delete.retention.ms": strconv.Itoa(24 * 3600 * 1000),
	}
}

// Broker is a running embedded broker.
type Broker struct {
	c    *kfake.Cluster
	addr string
}

// Start starts the broker and creates the missing topics.
func Start(cfg Config) (*Broker, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.CleanerInterval <= 0 {
		cfg.CleanerInterval = 30 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 1 << 20
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	if !isLoopback(cfg.Listen) && !cfg.Secure() && !cfg.AllowInsecureListen {
		return nil, fmt.Errorf("listen %s: beyond loopback the broker needs TLS and SASL (--tls-cert, --tls-key, --sasl-users); anyone reaching it could publish and delete decisions", cfg.Listen)
	}
	auth, err := authOpts(&cfg)
	if err != nil {
		return nil, err
	}
	if err := resetAuthState(&cfg); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	adv := cfg.Advertise
	if adv == "" {
		adv = advertised(ln.Addr().(*net.TCPAddr))
	}
	advAddr, err := net.ResolveTCPAddr("tcp", adv)
	if err != nil {
		// The listener never served; the address error is the one to report.
		_ = ln.Close()
		return nil, fmt.Errorf("advertised address %q: %w", adv, err)
	}
	used := false
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ClusterID("portcullis"),
		// kfake asks for 127.0.0.1:<port>; it gets the listener bound
		// above, whose Addr is what it advertises.
		kfake.ListenFn(func(string, string) (net.Listener, error) {
			if used {
				return nil, errors.New("embedded broker has one listener")
			}
			used = true
			return advertisedListener{Listener: ln, addr: advAddr}, nil
		}),
		kfake.BrokerConfigs(map[string]string{
			"log.cleaner.backoff.ms": strconv.FormatInt(cfg.CleanerInterval.Milliseconds(), 10),
			"message.max.bytes":      strconv.Itoa(cfg.MaxMessageBytes),
		}),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	if cfg.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	opts = append(opts, auth...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		if !used {
			_ = ln.Close() // never served; the cluster error is the one to report
		}
		return nil, fmt.Errorf("start embedded broker: %w", err)
	}
	b := &Broker{c: c, addr: adv}
	for _, t := range cfg.Topics {
		if err := c.CreateTopic(t.Name, t.Partitions, t.Configs); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			c.Close()
			return nil, fmt.Errorf("create topic %s: %w", t.Name, err)
		}
	}
	return b, nil
}

// advertised returns the address clients should dial for a bound address.
func advertised(a *net.TCPAddr) string {
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// advertisedListener reports addr as its address, which kfake puts in
// its metadata answers.
type advertisedListener struct {
	net.Listener
	addr net.Addr
}

// Addr returns the advertised address.
func (l advertisedListener) Addr() net.Addr { return l.addr }

// Addr returns the advertised host:port, what clients pass as --brokers.
func (b *Broker) Addr() string { return b.addr }

// Compact cleans the compacted topics now instead of at the next tick of
// the cleaner.
func (b *Broker) Compact() { b.c.Compact() }

// Close stops the broker. With a data directory everything acknowledged is
// on disk when it returns.
func (b *Broker) Close() { b.c.Close() }

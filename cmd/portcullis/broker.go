package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/internal/cli"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// runBroker runs the embedded broker until a signal arrives.
func runBroker(ctx context.Context, args []string, _ io.Writer) error {
	fs := newFlagSet("broker",
		"portcullis broker [--listen ADDR] [--data-dir DIR] [--tls-cert FILE --tls-key FILE] [--sasl-users FILE] [--sync-writes] [--cleaner-interval D]",
		`Runs an embedded single-node Kafka-protocol broker, enough for one host and
for tests. At start it creates the topics of the design (server-logs 6
partitions, crowdsec-decisions 3 partitions compacted, alert-notifications 2,
threat-intel 1, crowdsec-decisions.dlq 1) when they do not exist. With
--data-dir the log survives a restart and a kill -9. Fleets use Apache Kafka.

With --tls-cert and --tls-key the listener speaks only TLS. With
--sasl-users FILE ("user:password" lines, # comments) clients must
authenticate with SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, and only the
--sasl-admin user may delete topics or records or change configurations,
ACLs and credentials. Clients connect with the --kafka-* flags. A listen
address beyond loopback is refused without both TLS and SASL unless
--allow-insecure-listen is given.
`,
		`portcullis broker
portcullis broker --listen 127.0.0.1:9092 --data-dir /var/lib/portcullis/broker
portcullis broker --listen 10.0.0.5:9093 --data-dir /srv/broker \
    --tls-cert /etc/portcullis/broker.pem --tls-key /etc/portcullis/broker.key \
    --sasl-users /etc/portcullis/broker-users
`)
	var (
		common    cli.Common
		cfg       broker.Config
		cleaner   time.Duration
		usersFile string
	)
	common.Register(fs)
	fs.StringVar(&cfg.Listen, "listen", broker.DefaultListen, "address to listen on (and to advertise)")
	fs.StringVar(&cfg.Advertise, "advertise", "", "address given to clients, when not the listen address")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the log and offsets (empty: memory only)")
	fs.BoolVar(&cfg.SyncWrites, "sync-writes", false, "fsync every produced batch (survives power loss, slower)")
	fs.DurationVar(&cleaner, "cleaner-interval", 30*time.Second, "how often compacted topics are cleaned")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate `FILE` of a TLS listener (with --tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM key `FILE` of the TLS listener")
	fs.StringVar(&usersFile, "sasl-users", "", "`FILE` of user:password lines; turns on SASL (PLAIN, SCRAM-SHA-256/512) and ACLs")
	fs.StringVar(&cfg.Admin, "sasl-admin", broker.DefaultAdmin, "the user of --sasl-users allowed to delete topics and records")
	fs.BoolVar(&cfg.AllowInsecureListen, "allow-insecure-listen", false, "allow a listen address beyond loopback without TLS and SASL (logged as a warning)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if common.Config != "" {
		return fmt.Errorf("%w: broker: takes no --config; its options are flags", errUsage)
	}
	log, err := common.Logger("broker")
	if err != nil {
		return err
	}
	// The broker has no metrics of its own; --metrics-listen serves the
	// process's (CPU, memory, file descriptors, Go runtime).
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := cli.ServeMetrics(ctx, common.MetricsListen, reg, log); err != nil {
		return err
	}
	cfg.CleanerInterval = cleaner
	cfg.Topics = broker.DefaultTopics()
	if usersFile != "" {
		if cfg.Users, err = broker.LoadUsers(usersFile); err != nil {
			return err
		}
	}
	if cfg.AllowInsecureListen && !cfg.Secure() {
		log.Warn("--allow-insecure-listen: clients are not both encrypted and authenticated; anyone who reaches the listener can publish, delete and read decisions",
			"listen", cfg.Listen, "tls", cfg.TLSCert != "", "sasl", len(cfg.Users) > 0)
	}
	b, err := broker.Start(cfg)
	if err != nil {
		return err
	}
	log.Info("broker listening", "addr", b.Addr(), "data_dir", cfg.DataDir, "tls", cfg.TLSCert != "", "sasl_users", len(cfg.Users))
	<-ctx.Done()
	log.Info("broker stopping")
	b.Close()
	return nil
}

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
		"portcullis broker [--listen ADDR] [--data-dir DIR] [--sync-writes] [--cleaner-interval D]",
		`Runs an embedded single-node Kafka-protocol broker, enough for one host and
for tests. At start it creates the topics of the design (server-logs 6
partitions, crowdsec-decisions 3 partitions compacted, alert-notifications 2,
threat-intel 1, crowdsec-decisions.dlq 1) when they do not exist. With
--data-dir the log survives a restart and a kill -9. Fleets use Apache Kafka.
`,
		`portcullis broker
portcullis broker --listen 127.0.0.1:9092 --data-dir /var/lib/portcullis/broker
portcullis broker --listen 0.0.0.0:9092 --advertise 10.0.0.5:9092 --data-dir /srv/broker
`)
	var (
		common  cli.Common
		cfg     broker.Config
		cleaner time.Duration
	)
	common.Register(fs)
	fs.StringVar(&cfg.Listen, "listen", broker.DefaultListen, "address to listen on (and to advertise)")
	fs.StringVar(&cfg.Advertise, "advertise", "", "address given to clients, when not the listen address")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the log and offsets (empty: memory only)")
	fs.BoolVar(&cfg.SyncWrites, "sync-writes", false, "fsync every produced batch (survives power loss, slower)")
	fs.DurationVar(&cleaner, "cleaner-interval", 30*time.Second, "how often compacted topics are cleaned")
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
	b, err := broker.Start(cfg)
	if err != nil {
		return err
	}
	log.Info("broker listening", "addr", b.Addr(), "data_dir", cfg.DataDir)
	<-ctx.Done()
	log.Info("broker stopping")
	b.Close()
	return nil
}

package main

import (
	"context"
	"fmt"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portcullis-ips/portcullis/engine/daemon"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

const engineDescription = `Runs the detection engine live: it follows the sources of an acquis.yaml
(files with rotation, the Kafka server-logs topic, syslog over UDP or TCP),
parses the lines, runs the scenarios on the time written in them and
publishes ban decisions to the decisions topic and alerts to
alert-notifications (keyed by source address).

The config file (engine.yaml) names the acquis.yaml, the scenarios
directory and the profiles file (both default to the shipped ones), the
brokers (--brokers and PORTCULLIS_BROKERS override them), the topics and,
in its "kafka:" section, TLS and SASL (overridden by the --kafka-* flags). With "rekey: true" parsed events
are re-keyed by source address through the portcullis-events topic, so
several engines sharing the server-logs consumer group count each address
in one place; one engine needs no re-keying.

SIGINT or SIGTERM stops the sources, finishes the lines already read and
publishes what they produced (for at most drain_timeout) before exiting.
`

const engineExamples = `portcullis engine --config /etc/portcullis/engine.yaml
portcullis engine --config engine.yaml --brokers kafka-01:9092,kafka-02:9092 --metrics-listen :9101
`

func runEngine(ctx context.Context, args []string, _ io.Writer) error {
	fs := newFlagSet("engine", "portcullis engine --config FILE [--brokers ADDRS] [--metrics-listen ADDR] [--log-level LEVEL]",
		engineDescription, engineExamples)
	var common cli.Common
	common.Register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if common.Config == "" {
		return fmt.Errorf("%w: engine: --config is required", errUsage)
	}
	log, err := common.Logger("engine")
	if err != nil {
		return fmt.Errorf("%w: engine: %w", errUsage, err)
	}
	cfg, err := daemon.LoadConfig(common.Config)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := cli.ServeMetrics(ctx, common.MetricsListen, reg, log); err != nil {
		return err
	}
	brokers := common.ResolveBrokers(cfg.Brokers)
	sec, err := common.KafkaSecurity(ctx, cfg.Kafka, brokers, log)
	if err != nil {
		return err
	}
	d, err := daemon.New(cfg, daemon.Options{Logger: log, Registry: reg, Brokers: brokers, Security: sec})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

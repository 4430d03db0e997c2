package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/internal/cli"
	"github.com/portcullis-ips/portcullis/internal/config"
	"github.com/portcullis-ips/portcullis/notify"
)

func runNotify(ctx context.Context, args []string, _ io.Writer) error {
	fs := newFlagSet("notify", "portcullis notify --config FILE [--brokers ADDRS] [--metrics-listen ADDR] [--log-level LEVEL]",
		`Sends the engine's alerts (the alerts topic) to the destinations of the
configuration file: generic JSON webhooks, Slack-compatible webhooks and
email over SMTP with STARTTLS. Each destination has its filter (scenario
patterns, minimum severity: high = led to a ban, medium = captcha or
throttle, low = no decision or simulated), its template, a rate limit
(alerts that wait join the next message, none is dropped) and reads the
topic under a consumer group of its own ("<group>.<name>"), whose offsets
move only past what the destination accepted: a receiver that is down is
retried with backoff and gets every alert once it is back, across
restarts of notify too.

Brokers: --brokers, else PORTCULLIS_BROKERS, else the file's brokers, else
127.0.0.1:9092; TLS and SASL likewise (--kafka-* flags, PORTCULLIS_KAFKA_*,
the file's kafka: section). Webhook addresses and SMTP passwords may be read from
files (url_file, smtp.password_file) and are never logged.
`,
		`portcullis notify --config /etc/portcullis/notify.yaml
portcullis notify --config notify.yaml --brokers kafka-01:9092 --metrics-listen 127.0.0.1:9106

# notify.yaml
batch: {max_alerts: 50, max_wait: 10s}
destinations:
  - name: ops-slack
    type: slack
    url_file: /etc/portcullis/slack-webhook
    filter: {min_severity: high}
    max_per_minute: 6
  - name: soc-mail
    type: email
    smtp: {addr: "mail.example.net:587", from: "ips@example.net", to: ["soc@example.net"],
           username: ips, password_file: /etc/portcullis/smtp-password}
    filter: {scenarios: ["crowdsecurity/ssh-*"]}
`)
	var common cli.Common
	common.Register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if common.Config == "" {
		return fmt.Errorf("%w: notify: --config FILE is required", errUsage)
	}
	cfg := notify.DefaultConfig()
	if err := config.Load(common.Config, &cfg); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	cfg.Brokers = common.ResolveBrokers(cfg.Brokers)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("notify: %s: %w", common.Config, err)
	}
	log, err := common.Logger("notify")
	if err != nil {
		return fmt.Errorf("%w: notify: %w", errUsage, err)
	}
	sec, err := common.KafkaSecurity(ctx, cfg.Kafka, cfg.Brokers, log)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	reg := prometheus.NewRegistry()
	n, err := notify.New(cfg, log, reg)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if err := cli.ServeMetrics(ctx, common.MetricsListen, reg, log); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	var readers []*kafka.Reader
	defer func() {
		for _, r := range readers {
			_ = r.Close() // offsets were committed explicitly
		}
	}()
	log.Info("notify started", "brokers", cfg.Brokers, "topic", cfg.Topic, "destinations", len(cfg.Destinations))
	return n.Run(ctx, func(group string) (notify.Source, error) {
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers:     cfg.Brokers,
			Topic:       cfg.Topic,
			GroupID:     group,
			Dialer:      sec.Dialer(&kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}),
			StartOffset: kafka.FirstOffset,
			MaxWait:     500 * time.Millisecond,
			// Commits are explicit (CommitMessages after delivery).
			CommitInterval: 0,
		})
		readers = append(readers, r)
		return r, nil
	})
}

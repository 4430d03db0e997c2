package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/console"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

func runConsole(ctx context.Context, args []string, _ io.Writer) error {
	fs := newFlagSet("console", "portcullis console --password-file FILE [--listen 127.0.0.1:9180] [--tls-cert FILE --tls-key FILE]",
		`Serves the web console: an overview (alerts over the last day, top
scenarios and countries, decisions in force by origin and type, bouncers
and their lag), a decision search (address, range overlap, scenario,
origin, type) with add and delete, the alerts with their detail, and each
scenario's remedy, duration and alerts per hour. Pages update live.

It follows the decisions, alerts and heartbeat topics; decisions added or
deleted here are published with origin "console" and a reason naming the
user. Logins come from --password-file: lines "NAME:ROLE:PASSWORD" with
ROLE admin or readonly (or one bare token line, the user "admin").
Failed logins are rate limited per client address and counted.

It listens on loopback unless told otherwise; a non-loopback address
needs --tls-cert and --tls-key (or --insecure-listen for a lab).
`,
		`portcullis console --password-file /etc/portcullis/console-users
portcullis console --listen 0.0.0.0:9443 --tls-cert console.crt --tls-key console.key --password-file users
`)
	var (
		common                     cli.Common
		listen, pwFile, cert, key  string
		decTopic, alertTopic, hbTo string
		insecure                   bool
		alertsKept                 int
	)
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:9180", "address to serve the console on")
	fs.StringVar(&pwFile, "password-file", "", "file of console users: NAME:ROLE:PASSWORD lines (required)")
	fs.StringVar(&cert, "tls-cert", "", "TLS certificate (PEM); with --tls-key the console serves HTTPS")
	fs.StringVar(&key, "tls-key", "", "TLS private key (PEM)")
	fs.BoolVar(&insecure, "insecure-listen", false, "allow plain HTTP on a non-loopback address (labs only)")
	fs.StringVar(&decTopic, "topic", decisionfeed.TopicDecisions, "decisions topic")
	fs.StringVar(&alertTopic, "alerts-topic", decisionfeed.TopicAlerts, "alerts topic")
	fs.StringVar(&hbTo, "heartbeat-topic", heartbeat.Topic, "heartbeat topic")
	fs.IntVar(&alertsKept, "alerts-kept", 100_000, "how many recent alerts the console keeps in memory")
	if err := parse(fs, args); err != nil {
		return err
	}
	if pwFile == "" {
		return fmt.Errorf("%w: console: --password-file is required", errUsage)
	}
	if (cert == "") != (key == "") {
		return fmt.Errorf("%w: console: --tls-cert and --tls-key go together", errUsage)
	}
	if alertsKept < 1 || alertsKept > 10_000_000 {
		return fmt.Errorf("%w: console: --alerts-kept %d: want 1 to 10000000", errUsage, alertsKept)
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("%w: console: --listen %q: %w", errUsage, listen, err)
	}
	if a, err := netip.ParseAddr(host); (err != nil || !a.IsLoopback()) && host != "localhost" && cert == "" && !insecure {
		return fmt.Errorf("%w: console: --listen %s is not loopback: give --tls-cert and --tls-key (or --insecure-listen in a lab)", errUsage, listen)
	}
	users, err := console.LoadUsers(pwFile)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	log, err := common.Logger("console")
	if err != nil {
		return fmt.Errorf("%w: console: %w", errUsage, err)
	}
	k, err := connectKafka(ctx, &common, "console")
	if err != nil {
		return err
	}
	brokers := k.brokers
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Security: k.sec, Topic: decTopic, ClientID: "portcullis-console"})
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer func() { _ = pub.Close() }() // pending writes were awaited by Publish
	reg := prometheus.NewRegistry()
	srv, err := console.New(console.Config{Users: users, Publisher: pub, Secure: cert != "", AlertsKept: alertsKept, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := cli.ServeMetrics(ctx, common.MetricsListen, reg, log); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("console: listen %s: %w", listen, err)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("console: --tls-cert/--tls-key: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	}

	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{Brokers: brokers, Security: k.sec, Topic: decTopic, Logger: log,
		DLQTopic: "-", Group: "-", ClientID: "portcullis-console"})
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("console: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dialer := k.sec.Dialer(&kafka.Dialer{Timeout: 10 * time.Second, DualStack: true})
	go func() {
		if err := sub.Run(ctx, srv.Decisions()); err != nil && ctx.Err() == nil {
			log.Error("decisions feed stopped", "err", err)
		}
	}()
	go followInto(ctx, dialer, brokers, alertTopic, log, func(m kafka.Message) {
		a, err := engine.DecodeAlert(m.Value)
		if err != nil {
			log.Debug("skip message that is not an alert", "partition", m.Partition, "offset", m.Offset, "err", err)
			return
		}
		srv.Alert(a)
	})
	go followInto(ctx, dialer, brokers, hbTo, log, func(m kafka.Message) {
		if b, err := heartbeat.Decode(m.Value); err == nil {
			srv.Heartbeat(b)
		}
	})
	scheme := "http"
	if cert != "" {
		scheme = "https"
	}
	log.Info("console serving", "url", scheme+"://"+ln.Addr().String()+"/", "users", len(users))
	return srv.Serve(ctx, ln)
}

// followInto follows a topic into fn until ctx ends, logging why it stopped.
func followInto(ctx context.Context, dialer *kafka.Dialer, brokers []string, topic string, log *slog.Logger, fn func(kafka.Message)) {
	if err := console.Follow(ctx, dialer, brokers, topic, log, fn); err != nil && ctx.Err() == nil {
		log.Error("topic follower stopped", "topic", topic, "err", err)
	}
}

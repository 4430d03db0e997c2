package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/health"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

// metricsReport is what "metrics -o json" prints.
type metricsReport struct {
	Engine *health.Engine `json:"engine,omitempty"`
	health.Queue
}

func runMetrics(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("metrics",
		"portcullis metrics [--engine-metrics URL] [--topics T,...] [--interval 5s] [--lag-threshold N] [-o table|json]",
		`Shows the engine's counters per parser (lines, events, lines without an
event, malformed lines) and per scenario (alerts, decisions), scraped from
the engine's --metrics-listen endpoint given by --engine-metrics; and the
queue table: per topic its partitions, messages held and messages/s (the
high-water marks sampled twice, --interval apart), and per consumer group
its lag on each topic it committed offsets for, Healthy or Lagging (more
than --lag-threshold messages behind). Bouncers commit under their own
per-host group, so a bouncer that fell behind shows as Lagging.
`,
		`portcullis metrics --engine-metrics http://127.0.0.1:9101/metrics
portcullis metrics --interval 10s --lag-threshold 1000 -o json
portcullis metrics --topics crowdsec-decisions
`)
	var (
		common    cli.Common
		engineURL string
		topics    string
		output    string
		interval  time.Duration
		threshold int64
		timeout   time.Duration
	)
	common.Register(fs)
	fs.StringVar(&engineURL, "engine-metrics", "", "the engine's Prometheus endpoint, e.g. http://127.0.0.1:9101/metrics (empty: no engine section)")
	fs.StringVar(&topics, "topics", strings.Join([]string{decisionfeed.TopicServerLogs, decisionfeed.TopicDecisions,
		decisionfeed.TopicAlerts, decisionfeed.TopicThreatIntel}, ","), "comma-separated topics to report")
	fs.DurationVar(&interval, "interval", 5*time.Second, "time between the two samples of the high-water marks")
	fs.Int64Var(&threshold, "lag-threshold", 1000, "most messages a group may be behind and still be Healthy")
	fs.StringVar(&output, "o", "table", "output format: table or json")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long (on top of --interval)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if common.Config != "" {
		return fmt.Errorf("%w: metrics: --config is not used (all settings are flags)", errUsage)
	}
	if err := checkOutput(output, "table", "json"); err != nil {
		return err
	}
	if interval <= 0 || threshold < 0 {
		return fmt.Errorf("%w: metrics: --interval must be positive and --lag-threshold not negative", errUsage)
	}
	topicList := splitList(topics)
	if len(topicList) == 0 {
		return fmt.Errorf("%w: metrics: --topics is empty", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+interval)
	defer cancel()
	var rep metricsReport
	if engineURL != "" {
		e, err := health.ScrapeEngine(ctx, &http.Client{Timeout: timeout}, engineURL)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		rep.Engine = &e
	}
	k, err := connectKafka(ctx, &common, "metrics")
	if err != nil {
		return err
	}
	tr := k.sec.Transport(&kafka.Transport{})
	defer tr.CloseIdleConnections()
	q, err := health.SampleQueue(ctx, &kafka.Client{Addr: kafka.TCP(k.brokers...), Transport: tr},
		health.QueueConfig{Topics: topicList, Interval: interval, LagThreshold: threshold})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	rep.Queue = q
	if rep.Groups == nil {
		rep.Groups = []health.GroupLag{}
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printMetrics(stdout, &rep)
}

func printMetrics(w io.Writer, rep *metricsReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if e := rep.Engine; e != nil {
		_, _ = fmt.Fprintln(tw, "=== Parsers ===")
		_, _ = fmt.Fprintln(tw, "FORMAT\tLINES\tEVENTS\tNO EVENT\tMALFORMED")
		for _, p := range e.Parsers {
			_, _ = fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", p.Format, p.Lines, p.Events, p.NoEvent, p.Malformed)
		}
		_, _ = fmt.Fprintln(tw, "\n=== Scenarios ===")
		_, _ = fmt.Fprintln(tw, "SCENARIO\tALERTS\tDECISIONS")
		for _, s := range e.Scenarios {
			_, _ = fmt.Fprintf(tw, "%s\t%d\t%d\n", s.Scenario, s.Alerts, s.Decisions)
		}
		_, _ = fmt.Fprintln(tw)
	}
	_, _ = fmt.Fprintln(tw, "=== Topics ===")
	_, _ = fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tMESSAGES\tMESSAGES/S")
	for _, t := range rep.Topics {
		if t.Missing {
			_, _ = fmt.Fprintf(tw, "%s\t-\t-\t(missing)\n", t.Topic)
			continue
		}
		_, _ = fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\n", t.Topic, t.Partitions, t.Messages, t.MessagesPerSec)
	}
	_, _ = fmt.Fprintln(tw, "\n=== Consumer groups ===")
	_, _ = fmt.Fprintln(tw, "GROUP\tTOPIC\tLAG\tSTATUS")
	for _, g := range rep.Groups {
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", g.Group, g.Topic, g.Lag, g.Status)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if len(rep.Groups) == 0 {
		_, _ = fmt.Fprintln(w, "(no consumer group committed offsets on these topics)")
	}
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

// bouncerRow is one line of "bouncers list -o json".
type bouncerRow struct {
	heartbeat.Beat
	Stale bool `json:"stale"`
}

func runBouncers(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "list" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			_, _ = fmt.Fprint(stdout, "NAME\n    portcullis bouncers - the bouncers, from their heartbeats\n\nSYNOPSIS\n    portcullis bouncers list [-o table|json] [--topic T]\n")
			return nil
		}
		return fmt.Errorf("%w: bouncers: want list", errUsage)
	}
	fs := newFlagSet("bouncers list", "portcullis bouncers list [-o table|json] [--topic T]",
		`Reads the bouncers' heartbeats (topic portcullis-heartbeats, compacted,
key name@host) and prints the latest of each bouncer: name, host, mode,
decisions held, when it was last seen, its consumer lag on the decisions
topic, and "stale" when it missed more than three of its beats (down, or
cut off from the brokers).
`,
		`portcullis bouncers list
portcullis bouncers list -o json | jq -r '.[] | select(.stale) | .host'
`)
	var (
		common        cli.Common
		output, topic string
		timeout       time.Duration
	)
	common.Register(fs)
	fs.StringVar(&output, "o", "table", "output format: table or json")
	fs.StringVar(&topic, "topic", heartbeat.Topic, "heartbeat topic")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if common.Config != "" {
		return fmt.Errorf("%w: bouncers list: --config is not used (all settings are flags)", errUsage)
	}
	if err := checkOutput(output, "table", "json"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	k, err := connectKafka(ctx, &common, "bouncers")
	if err != nil {
		return err
	}
	msgs, err := readTopic(ctx, k, topic)
	if err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
		return fmt.Errorf("bouncers list: %w", err)
	}
	latest := map[string]heartbeat.Beat{}
	bad := 0
	for _, m := range msgs {
		b, err := heartbeat.Decode(m.Value)
		if err != nil || string(m.Key) != b.Key() {
			bad++
			continue
		}
		if cur, ok := latest[b.Key()]; !ok || !b.At.Before(cur.At) {
			latest[b.Key()] = b
		}
	}
	now := time.Now()
	rows := []bouncerRow{}
	for _, b := range latest {
		rows = append(rows, bouncerRow{Beat: b, Stale: b.Stale(now)})
	}
	slices.SortFunc(rows, func(a, b bouncerRow) int {
		return strings.Compare(a.Name+"\x00"+a.Host, b.Name+"\x00"+b.Host)
	})
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "NAME\tHOST\tMODE\tDECISIONS\tLAST SEEN\tLAG\tSTATUS")
	for _, r := range rows {
		st := "ok"
		switch {
		case r.Stale:
			st = "stale"
		case r.Problem != "":
			st = "unhealthy: " + r.Problem
		}
		mode := r.Mode
		if mode == "" {
			mode = "-"
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s ago\t%d\t%s\n", r.Name, r.Host, mode, r.Decisions,
			now.Sub(r.At).Round(time.Second), r.Lag, st)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if len(rows) == 0 {
		_, _ = fmt.Fprintf(stdout, "(no bouncer heartbeats on %s)\n", topic)
	}
	if bad > 0 {
		_, _ = fmt.Fprintf(stdout, "(%d messages on %s were not heartbeats and were skipped)\n", bad, topic)
	}
	return nil
}

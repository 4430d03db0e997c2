package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

// runDecisions dispatches "decisions add|delete|list".
func runDecisions(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: decisions: want add, delete or list", errUsage)
	}
	switch args[0] {
	case "add":
		return decisionsPublish(ctx, decisionfeed.OpAdd, args[1:], stdout)
	case "delete":
		return decisionsPublish(ctx, decisionfeed.OpDelete, args[1:], stdout)
	case "list":
		return decisionsList(ctx, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, `NAME
    portcullis decisions - manage ban decisions on the decision feed

SYNOPSIS
    portcullis decisions add --ip IP|--range CIDR --duration D [--type T] [--reason TEXT] [--scenario S]
    portcullis decisions delete --ip IP|--range CIDR
    portcullis decisions list [-o table|json]

    Run "portcullis decisions add --help" (delete, list) for the options.
`)
		return nil
	}
	return fmt.Errorf("%w: decisions: unknown subcommand %q (want add, delete or list)", errUsage, args[0])
}

// target parses --ip or --range (exactly one).
func target(ipFlag, rangeFlag string) (netip.Prefix, error) {
	switch {
	case ipFlag != "" && rangeFlag != "":
		return netip.Prefix{}, fmt.Errorf("%w: give --ip or --range, not both", errUsage)
	case ipFlag != "":
		a, err := netip.ParseAddr(ipFlag)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: --ip %q: %v", errUsage, ipFlag, err)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	case rangeFlag != "":
		p, err := netip.ParsePrefix(rangeFlag)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: --range %q: %v", errUsage, rangeFlag, err)
		}
		return p, nil
	}
	return netip.Prefix{}, fmt.Errorf("%w: give --ip or --range", errUsage)
}

// decisionsPublish implements "decisions add" and "decisions delete".
func decisionsPublish(ctx context.Context, op decisionfeed.Op, args []string, stdout io.Writer) error {
	synopsis := "portcullis decisions add --ip IP|--range CIDR --duration D [--type ban|captcha|throttle] [--reason TEXT] [--scenario S]"
	description := `Publishes an add decision (origin "cli") to the decisions topic; every
bouncer applies it within milliseconds. A range must be in CIDR form; it is
stored masked (198.51.100.7/24 becomes 198.51.100.0/24).
`
	examples := `portcullis decisions add --ip 203.0.113.7 --duration 4h --reason "credential stuffing"
portcullis decisions add --range 198.51.100.0/24 --duration 24h --type captcha
portcullis decisions add --brokers kafka-1:9092,kafka-2:9092 --ip 2001:db8::7 --duration 30m
`
	if op == decisionfeed.OpDelete {
		synopsis = "portcullis decisions delete --ip IP|--range CIDR"
		description = `Publishes a delete decision for the key of IP or CIDR (origin "cli"); every
bouncer lifts the ban, whatever type it had.
`
		examples = `portcullis decisions delete --ip 203.0.113.7
portcullis decisions delete --range 198.51.100.0/24
`
	}
	fs := newFlagSet("decisions "+string(op), synopsis, description, examples)
	var (
		common                   cli.Common
		ipFlag, rangeFlag, topic string
		typ, reason, scenario    string
		dur                      time.Duration
		timeout                  time.Duration
	)
	common.Register(fs)
	fs.StringVar(&ipFlag, "ip", "", "a single IPv4 or IPv6 address")
	fs.StringVar(&rangeFlag, "range", "", "a CIDR range, e.g. 198.51.100.0/24")
	fs.StringVar(&topic, "topic", decisionfeed.TopicDecisions, "decisions topic")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up publishing after this long")
	if op == decisionfeed.OpAdd {
		fs.DurationVar(&dur, "duration", 4*time.Hour, "how long the decision lasts")
		fs.StringVar(&typ, "type", string(decisionfeed.TypeBan), "remedy: ban, captcha or throttle")
		fs.StringVar(&reason, "reason", "", "free text shown in listings")
		fs.StringVar(&scenario, "scenario", "", "scenario name, e.g. manual/abuse")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	p, err := target(ipFlag, rangeFlag)
	if err != nil {
		return err
	}
	if op == decisionfeed.OpAdd && dur <= 0 {
		return fmt.Errorf("%w: --duration must be positive", errUsage)
	}
	if typ == "" {
		typ = string(decisionfeed.TypeBan)
	}
	d := decisionfeed.NewDecision(op, decisionfeed.Type(typ), p, dur, "cli", time.Now())
	d.Reason, d.Scenario = reason, scenario
	if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: common.BrokerList(), Topic: topic})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = pub.Publish(ctx, d)
	if cerr := pub.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if op == decisionfeed.OpAdd {
		fmt.Fprintf(stdout, "added %s %s until %s (id %s)\n", d.Type, d.Value, d.Until.Format(time.RFC3339), d.ID)
	} else {
		fmt.Fprintf(stdout, "deleted %s (id %s)\n", d.Value, d.ID)
	}
	return nil
}

// snapshotOnce is a Handler that keeps the snapshot and stops the run.
type snapshotOnce struct {
	live []decisionfeed.Decision
	stop context.CancelFunc
}

// Snapshot keeps the live set and ends the run.
func (s *snapshotOnce) Snapshot(_ context.Context, live []decisionfeed.Decision) error {
	s.live = live
	s.stop()
	return nil
}

// Changes ignores what follows the snapshot: the run is ending.
func (s *snapshotOnce) Changes(context.Context, []decisionfeed.Decision) error { return nil }

// decisionsList implements "decisions list".
func decisionsList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("decisions list",
		"portcullis decisions list [-o table|json] [--topic T] [--timeout D]",
		`Rebuilds the live set from the decisions topic, as every bouncer does at
start (all partitions from the earliest offset, deleted and expired decisions
dropped), and prints it sorted by value: a table, or a JSON array of schema v1
decisions.
`,
		`portcullis decisions list
portcullis decisions list -o json | jq -r '.[].value'
PORTCULLIS_BROKERS=kafka-1:9092 portcullis decisions list
`)
	var (
		common  cli.Common
		output  string
		topic   string
		timeout time.Duration
	)
	common.Register(fs)
	fs.StringVar(&output, "o", "table", "output format: table or json")
	fs.StringVar(&topic, "topic", decisionfeed.TopicDecisions, "decisions topic")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up when the live set is not rebuilt after this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	if output != "table" && output != "json" {
		return fmt.Errorf("%w: -o %q: want table or json", errUsage, output)
	}
	log, err := common.Logger("decisions")
	if err != nil {
		return err
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers:  common.BrokerList(),
		Topic:    topic,
		Group:    "-", // a listing is no consumer worth reporting lag for
		DLQTopic: "-", // the bouncers copy invalid messages already
		Logger:   log,
	})
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	runCtx, stop := context.WithCancel(tctx)
	defer stop()
	h := &snapshotOnce{stop: stop}
	if err := sub.Run(runCtx, h); err != nil {
		return err
	}
	if h.live == nil && !sub.Stats().Ready {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("decisions list: the live set was not rebuilt in time (is the broker at --brokers up?)")
	}
	slices.SortFunc(h.live, func(a, b decisionfeed.Decision) int { return strings.Compare(a.Key(), b.Key()) })
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if h.live == nil {
			h.live = []decisionfeed.Decision{}
		}
		return enc.Encode(h.live)
	}
	return printTable(stdout, h.live, time.Now())
}

// printTable prints decisions as an aligned table.
func printTable(w io.Writer, ds []decisionfeed.Decision, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VALUE\tTYPE\tSCENARIO/REASON\tORIGIN\tEXPIRES IN")
	for _, d := range ds {
		why := d.Scenario
		if d.Reason != "" {
			if why != "" {
				why += ": "
			}
			why += d.Reason
		}
		if why == "" {
			why = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Value, d.Type, why, d.Origin, d.Until.Sub(now).Round(time.Second))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if len(ds) == 0 {
		fmt.Fprintln(w, "(no live decisions)")
	}
	return nil
}

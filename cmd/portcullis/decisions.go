package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

// runDecisions dispatches "decisions add|delete|list|prune".
func runDecisions(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: decisions: want add, delete, list or prune", errUsage)
	}
	switch args[0] {
	case "add":
		return decisionsPublish(ctx, decisionfeed.OpAdd, args[1:], stdout)
	case "delete":
		return decisionsPublish(ctx, decisionfeed.OpDelete, args[1:], stdout)
	case "list":
		return decisionsList(ctx, args[1:], stdout)
	case "prune":
		return decisionsPrune(ctx, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		_, err := fmt.Fprint(stdout, `NAME
    portcullis decisions - manage ban decisions on the decision feed

SYNOPSIS
    portcullis decisions add --ip IP|--range CIDR --duration D [--type T] [--reason TEXT] [--scenario S]
    portcullis decisions delete --ip IP|--range CIDR|--scenario S|--all [--origin O]
    portcullis decisions list [--ip IP] [--scenario S] [--origin O] [--type T] [-o table|json]
    portcullis decisions prune [--dry-run]

    Run "portcullis decisions add --help" (delete, list, prune) for the options.
`)
		return err
	}
	return fmt.Errorf("%w: decisions: unknown subcommand %q (want add, delete, list or prune)", errUsage, args[0])
}

// target parses --ip or --range (exactly one).
func target(ipFlag, rangeFlag string) (netip.Prefix, error) {
	switch {
	case ipFlag != "" && rangeFlag != "":
		return netip.Prefix{}, fmt.Errorf("%w: give --ip or --range, not both", errUsage)
	case ipFlag != "":
		a, err := netip.ParseAddr(ipFlag)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: --ip %q: %w", errUsage, ipFlag, err)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	case rangeFlag != "":
		p, err := netip.ParsePrefix(rangeFlag)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%w: --range %q: %w", errUsage, rangeFlag, err)
		}
		return p, nil
	}
	return netip.Prefix{}, fmt.Errorf("%w: give --ip or --range", errUsage)
}

// notLoopback refuses a decision covering loopback, which every bouncer
// refuses to enforce (enforcer/policy): publishing it would only mislead.
func notLoopback(p netip.Prefix) error {
	c, err := enforcer.Canonical(p)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	for _, l := range policy.Loopback {
		if c.Overlaps(l) {
			return fmt.Errorf("%w: %s covers loopback (%s), which no bouncer bans", errUsage, c, l)
		}
	}
	return nil
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
		synopsis = "portcullis decisions delete --ip IP|--range CIDR|--scenario S|--all [--origin O] [-o text|json]"
		description = `Withdraws decisions as an operator: the standing decisions are rebuilt
from the topic first, and a delete is published under the key of every one
that matches, whatever its origin (the engine, the CLI, each blocklist,
CrowdSec pull, and the schema v1 keys without origin); --origin narrows it
to one origin. --ip and --range match that address or range exactly;
--scenario matches exactly; --all matches everything. Bouncers lift the
remedy once no decision stands on the address any more.
`
		examples = `portcullis decisions delete --ip 203.0.113.7
portcullis decisions delete --ip 203.0.113.7 --origin engine
portcullis decisions delete --range 198.51.100.0/24
portcullis decisions delete --scenario blocklist/spamhaus-drop
portcullis decisions delete --all
`
	}
	fs := newFlagSet("decisions "+string(op), synopsis, description, examples)
	var (
		common                   cli.Common
		ipFlag, rangeFlag, topic string
		typ, reason, scenario    string
		dur                      time.Duration
		timeout                  time.Duration
		all                      bool
		output, origin           string
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
	} else {
		fs.StringVar(&scenario, "scenario", "", "delete every live decision of this scenario")
		fs.BoolVar(&all, "all", false, "delete every live decision")
		fs.StringVar(&origin, "origin", "", "delete only the decisions of this origin (engine, cli, lists:NAME, crowdsec)")
	}
	fs.StringVar(&output, "o", "text", "output format: text or json (the decisions published)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if op == decisionfeed.OpDelete {
		f := decisionFilter{scenario: scenario, origin: origin}
		switch {
		case ipFlag != "" || rangeFlag != "":
			if scenario != "" || all {
				return fmt.Errorf("%w: decisions delete: give one of --ip, --range, --scenario or --all", errUsage)
			}
			p, err := target(ipFlag, rangeFlag)
			if err != nil {
				return err
			}
			f.target = decisionfeed.PrefixTarget(p)
		case scenario == "" && !all:
			return fmt.Errorf("%w: decisions delete: give one of --ip, --range, --scenario or --all", errUsage)
		case scenario != "" && all:
			return fmt.Errorf("%w: decisions delete: give one of --ip, --range, --scenario or --all", errUsage)
		}
		if origin != "" {
			if err := decisionfeed.CheckOrigin(origin); err != nil {
				return fmt.Errorf("%w: --origin: %w", errUsage, err)
			}
		}
		return deleteMatching(ctx, &common, topic, f, timeout, output, stdout)
	}
	if err := checkOutput(output, "text", "json"); err != nil {
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
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if op == decisionfeed.OpAdd {
		if err := notLoopback(p); err != nil {
			return err
		}
	}
	log, err := common.Logger("decisions")
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	k, err := connectKafka(ctx, &common, "decisions")
	if err != nil {
		return err
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: k.brokers, Topic: topic, Security: k.sec})
	if err != nil {
		return err
	}
	err = publishRetrying(ctx, pub, log, d)
	if cerr := pub.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode([]decisionfeed.Decision{d})
	}
	if op == decisionfeed.OpAdd {
		_, err = fmt.Fprintf(stdout, "added %s %s until %s (id %s)\n", d.Type, d.Value, d.Until.Format(time.RFC3339), d.ID)
	} else {
		_, err = fmt.Fprintf(stdout, "deleted %s (id %s)\n", d.Value, d.ID)
	}
	return err
}

// snapshotOnce is a Handler that stops the run at the snapshot.
type snapshotOnce struct {
	stop context.CancelFunc
	done bool
}

// Snapshot ends the run: the standing decisions are read from the subscriber.
func (s *snapshotOnce) Snapshot(context.Context, iter.Seq[decisionfeed.Decision]) error {
	s.done = true
	s.stop()
	return nil
}

// Changes ignores what follows the snapshot: the run is ending.
func (s *snapshotOnce) Changes(context.Context, []decisionfeed.Decision) error { return nil }

// decisionsList implements "decisions list".
func decisionsList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("decisions list",
		"portcullis decisions list [--ip IP] [--scenario S] [--origin O] [--type T] [-o table|json] [--topic T] [--timeout D]",
		`Rebuilds the decisions from the decisions topic, as every bouncer does at
start (all partitions from the earliest offset, deleted and expired decisions
dropped), and prints every decision standing, one per producer and address,
sorted by value then key: a table, or a JSON array of schema v1 decisions each
with "enforced". ENFORCED (true) marks the decision whose remedy bouncers apply
to the address: the strongest, held until the latest expiry of those standing
there. The filters combine: --ip matches the address and every range containing
it; --scenario, --origin and --type match exactly.
`,
		`portcullis decisions list
portcullis decisions list --ip 198.51.100.7
portcullis decisions list --origin blocklist --scenario blocklist/spamhaus-drop
portcullis decisions list -o json | jq -r '.[].value'
PORTCULLIS_BROKERS=kafka-1:9092 portcullis decisions list
`)
	var (
		common  cli.Common
		output  string
		topic   string
		timeout time.Duration
		f       decisionFilter
	)
	common.Register(fs)
	f.register(fs)
	fs.StringVar(&output, "o", "table", "output format: table or json")
	fs.StringVar(&topic, "topic", decisionfeed.TopicDecisions, "decisions topic")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up when the live set is not rebuilt after this long")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := checkOutput(output, "table", "json"); err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	log, err := common.Logger("decisions")
	if err != nil {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	k, err := connectKafka(tctx, &common, "decisions")
	if err != nil {
		return err
	}
	live, err := standingSet(tctx, k, topic, log)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("decisions list: %w", err)
	}
	live = f.apply(live)
	if output == "json" {
		return writeJSONArray(stdout, live)
	}
	return printTable(stdout, live, time.Now())
}

// printTable prints standing decisions as an aligned table; ENFORCED marks
// the one whose remedy bouncers apply to the address.
func printTable(w io.Writer, ss []decisionfeed.Standing, now time.Time) error {
	// tabwriter buffers the table: a write error is returned by Flush.
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "VALUE\tTYPE\tSCENARIO/REASON\tORIGIN\tEXPIRES IN\tENFORCED")
	for i := range ss {
		d := &ss[i].Decision
		enforced := "-"
		if ss[i].Enforced {
			enforced = "yes"
		}
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
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Value, d.Type, why, d.Origin, d.Until.Sub(now).Round(time.Second), enforced)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if len(ss) == 0 {
		if _, err := fmt.Fprintln(w, "(no live decisions)"); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	return nil
}

// standingSet rebuilds the decisions of topic as every bouncer does at
// start, and returns every decision standing once read up to the
// high-water marks, one per key, sorted by address then origin.
func standingSet(ctx context.Context, k kafkaTarget, topic string, log *slog.Logger) ([]decisionfeed.Standing, error) {
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers:  k.brokers,
		Security: k.sec,
		Topic:    topic,
		Group:    "-", // a one-off read is no consumer worth reporting lag for
		DLQTopic: "-", // the bouncers copy invalid messages already
		Logger:   log,
	})
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	h := &snapshotOnce{stop: stop}
	if err := sub.Run(runCtx, h); err != nil {
		return nil, err
	}
	if !h.done {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, ctx.Err()
		}
		return nil, errors.New("the live set was not rebuilt in time (is the broker at --brokers up?)")
	}
	ss := sub.Standing(time.Now())
	slices.SortFunc(ss, func(a, b decisionfeed.Standing) int {
		return cmp.Or(strings.Compare(a.Target(), b.Target()), strings.Compare(a.Key(), b.Key()))
	})
	return ss, nil
}

// standingDecisions is standingSet without the enforced marks.
func standingDecisions(ctx context.Context, k kafkaTarget, topic string, log *slog.Logger) ([]decisionfeed.Decision, error) {
	ss, err := standingSet(ctx, k, topic, log)
	if err != nil {
		return nil, err
	}
	ds := make([]decisionfeed.Decision, len(ss))
	for i := range ss {
		ds[i] = ss[i].Decision
	}
	return ds, nil
}

// decisionFilter selects live decisions; empty fields match everything.
type decisionFilter struct {
	ip                    string
	scenario, origin, typ string
	addr                  netip.Addr
	target                string // exact "scope:value"
}

func (f *decisionFilter) register(fs *flag.FlagSet) {
	fs.StringVar(&f.ip, "ip", "", "only the decisions on this address or on ranges containing it")
	fs.StringVar(&f.scenario, "scenario", "", "only the decisions of this scenario")
	fs.StringVar(&f.origin, "origin", "", "only the decisions of this origin (engine, cli, blocklist, crowdsec)")
	fs.StringVar(&f.typ, "type", "", "only the decisions of this type (ban, captcha, throttle)")
}

// check parses --ip.
func (f *decisionFilter) check() error {
	if f.ip == "" {
		return nil
	}
	a, err := netip.ParseAddr(f.ip)
	if err != nil {
		return fmt.Errorf("%w: --ip %q: %w", errUsage, f.ip, err)
	}
	f.addr = a.Unmap()
	return nil
}

func (f *decisionFilter) match(d *decisionfeed.Decision) bool {
	if (f.scenario != "" && d.Scenario != f.scenario) || (f.origin != "" && d.Origin != f.origin) ||
		(f.typ != "" && string(d.Type) != f.typ) || (f.target != "" && d.Target() != f.target) {
		return false
	}
	if f.addr.IsValid() {
		p, err := d.Prefix()
		if err != nil || !p.Contains(f.addr) {
			return false
		}
	}
	return true
}

// apply keeps the matching decisions, filtering ss in place.
func (f *decisionFilter) apply(ss []decisionfeed.Standing) []decisionfeed.Standing {
	out := ss[:0]
	for i := range ss {
		if f.match(&ss[i].Decision) {
			out = append(out, ss[i])
		}
	}
	return out
}

// deleteMatching publishes a delete for every live decision f matches.
func deleteMatching(ctx context.Context, common *cli.Common, topic string, f decisionFilter, timeout time.Duration, output string, stdout io.Writer) error {
	if err := checkOutput(output, "text", "json"); err != nil {
		return err
	}
	log, err := common.Logger("decisions")
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	k, err := connectKafka(ctx, common, "decisions")
	if err != nil {
		return err
	}
	live, err := standingSet(ctx, k, topic, log)
	if err != nil {
		return fmt.Errorf("decisions delete: %w", err)
	}
	live = f.apply(live)
	now := time.Now()
	dels := make([]decisionfeed.Decision, 0, len(live))
	for i := range live {
		cur := &live[i].Decision
		p, err := cur.Prefix()
		if err != nil {
			return fmt.Errorf("decisions delete: live decision %s: %w", cur.Key(), err)
		}
		// The delete goes under the key the decision stands under, so it
		// carries that key's origin; the reason says who withdrew it.
		d := decisionfeed.NewDecision(decisionfeed.OpDelete, cur.Type, p, 0, cur.Origin, now)
		d.Scenario, d.Legacy, d.Reason = cur.Scenario, cur.Legacy, "withdrawn by an operator"
		dels = append(dels, d)
	}
	if len(dels) > 0 {
		pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: k.brokers, Topic: topic, Security: k.sec})
		if err != nil {
			return err
		}
		for rest := dels; len(rest) > 0; {
			n := min(len(rest), publishChunk)
			if err = publishRetrying(ctx, pub, log, rest[:n]...); err != nil {
				break
			}
			rest = rest[n:]
		}
		if cerr := pub.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("decisions delete: publish %d deletes: %w", len(dels), err)
		}
	}
	if output == "json" {
		return writeJSONArray(stdout, dels)
	}
	for _, d := range dels {
		_, _ = fmt.Fprintf(stdout, "deleted %s of %s (id %s)\n", d.Value, d.Origin, d.ID)
	}
	_, _ = fmt.Fprintf(stdout, "%d decisions deleted\n", len(dels))
	return nil
}

// writeJSONArray writes ds as an indented JSON array one element at a time,
// so a million-decision listing is not first built in memory.
func writeJSONArray[T any](w io.Writer, ds []T) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if len(ds) == 0 {
		_, _ = bw.WriteString("[]\n")
	} else {
		_, _ = bw.WriteString("[\n  ")
		for i := range ds {
			b, err := json.MarshalIndent(&ds[i], "  ", "  ")
			if err != nil {
				return fmt.Errorf("encode decision %d: %w", i, err)
			}
			if i > 0 {
				_, _ = bw.WriteString(",\n  ")
			}
			_, _ = bw.Write(b) // errors are sticky; Flush reports them
		}
		_, _ = bw.WriteString("\n]\n")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write decisions: %w", err)
	}
	return nil
}

// publishRetrying publishes ds, trying again with backoff while the
// brokers cannot be reached, until ctx ends (the --timeout): an operator's
// ban must not fail because a broker restarts. Publishing a decision twice
// is harmless.
func publishRetrying(ctx context.Context, pub *decisionfeed.Publisher, log *slog.Logger, ds ...decisionfeed.Decision) error {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := pub.Publish(ctx, ds...)
		if err == nil {
			return nil
		}
		if !retryable(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		case <-t.C:
		}
		log.Warn("publish failed, retrying", "attempt", attempt, "err", err)
		wait = min(2*wait, 2*time.Second)
	}
}

// retryable tells a failure to reach the brokers from a decision that is
// invalid, which no retry mends.
func retryable(err error) bool {
	if errors.Is(err, decisionfeed.ErrInvalid) || refused(err) {
		return false
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && refused(e) {
				return false
			}
		}
	}
	return true
}

// refused reports a broker's refusal that waiting cannot change: the
// credential lacks the right, or is not accepted at all.
func refused(err error) bool {
	for _, code := range []kafka.Error{kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed,
		kafka.GroupAuthorizationFailed, kafka.SASLAuthenticationFailed} {
		if errors.Is(err, code) {
			return true
		}
	}
	return false
}

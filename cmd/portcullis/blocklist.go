package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/blocklist"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/intel"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

// publishChunk is how many decisions go into one Publish call.
const publishChunk = 5000

// stdin is what "blocklist import -" reads; tests replace it.
var stdin io.Reader = os.Stdin

// runBlocklist dispatches "blocklist import".
func runBlocklist(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: blocklist: want import", errUsage)
	}
	switch args[0] {
	case "import":
		return blocklistImport(ctx, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		_, _ = fmt.Fprint(stdout, `NAME
    portcullis blocklist - import IP blocklists into the decision feed

SYNOPSIS
    portcullis blocklist import FILE|- --name NAME [--duration 24h] [--type ban]

    Run "portcullis blocklist import --help" for the options.
`)
		return nil
	}
	return fmt.Errorf("%w: blocklist: unknown subcommand %q (want import)", errUsage, args[0])
}

// importSummary is what "blocklist import -o json" prints.
type importSummary struct {
	Name      string   `json:"name"`
	ImportID  string   `json:"import_id"`
	Prefixes  int      `json:"prefixes"`
	Added     int      `json:"added"`
	Deleted   int      `json:"deleted"`
	Unchanged int      `json:"unchanged"`
	Shadowed  int      `json:"shadowed"`
	Skipped   []string `json:"skipped_lines"`
}

func blocklistImport(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("blocklist import",
		"portcullis blocklist import FILE|- --name NAME [--duration 24h] [--type ban|captcha|throttle] [-o text|json]",
		`Reads an IP blocklist (plain addresses or CIDR ranges, FireHOL .netset,
Spamhaus DROP; '#' and ';' comments) from FILE or stdin and publishes it as
decisions with origin "blocklist" and scenario "blocklist/NAME".

A re-import replaces the list's previous content: the live set is rebuilt
from the decisions topic, and only the difference is published (adds for
new prefixes, deletes for dropped ones); unchanged prefixes are re-added
only when less than half of --duration is left on them, so an import run
more often than --duration (from cron, say) never lets the list lapse. A
prefix already banned for longer by another origin is left alone.

Each import is recorded, chunked, on the threat-intel topic (key = NAME).
Malformed lines are reported with their line number and skipped.
`,
		`curl -s https://www.spamhaus.org/drop/drop.txt | portcullis blocklist import - --name spamhaus-drop --duration 24h
portcullis blocklist import firehol_level1.netset --name firehol1 --duration 48h
portcullis blocklist import scanners.txt --name scanners --type captcha -o json
`)
	var (
		common            cli.Common
		name, typ, output string
		topic, intelTopic string
		dur, timeout      time.Duration
	)
	common.Register(fs)
	fs.StringVar(&name, "name", "", "list name (letters, digits, . _ -); the decisions' scenario is blocklist/NAME")
	fs.DurationVar(&dur, "duration", 24*time.Hour, "how long each decision lasts")
	fs.StringVar(&typ, "type", string(decisionfeed.TypeBan), "remedy: ban, captcha or throttle")
	fs.StringVar(&output, "o", "text", "output format: text or json")
	fs.StringVar(&topic, "topic", decisionfeed.TopicDecisions, "decisions topic")
	fs.StringVar(&intelTopic, "intel-topic", decisionfeed.TopicThreatIntel, "topic the import is recorded on")
	fs.DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	// The file comes first ("import FILE --name N"); the flag package stops
	// at the first argument that is not a flag.
	var file string
	if len(args) > 0 && (args[0] == "-" || len(args[0]) == 0 || args[0][0] != '-') {
		file, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if file == "" {
		return fmt.Errorf("%w: blocklist import: give a FILE or - for stdin", errUsage)
	}
	if common.Config != "" {
		return fmt.Errorf("%w: blocklist import: --config is not used (all settings are flags)", errUsage)
	}
	if output != "text" && output != "json" {
		return fmt.Errorf("%w: -o %q: want text or json", errUsage, output)
	}
	list := intel.List{Name: name, Type: decisionfeed.Type(typ), Duration: dur}
	if err := list.Validate(); err != nil {
		return fmt.Errorf("%w: blocklist import: %w", errUsage, err)
	}
	in := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("blocklist import: %w", err)
		}
		defer func() { _ = f.Close() }() // read-only
		in = f
	}
	res, err := blocklist.Parse(in)
	if err != nil {
		return fmt.Errorf("blocklist import: read %s: %w", file, err)
	}
	log, err := common.Logger("blocklist")
	if err != nil {
		return fmt.Errorf("%w: blocklist import: %w", errUsage, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	k, err := connectKafka(ctx, &common, "blocklist")
	if err != nil {
		return err
	}
	live, err := liveSet(ctx, k, topic, log)
	if err != nil {
		return fmt.Errorf("blocklist import: %w", err)
	}
	now := time.Now()
	ch, err := intel.Plan(list, res.Prefixes, live, now)
	if err != nil {
		return fmt.Errorf("blocklist import: %w", err)
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:]) // crypto/rand.Read never fails
	sum := importSummary{
		Name: name, ImportID: hex.EncodeToString(idb[:]), Prefixes: len(res.Prefixes),
		Added: len(ch.Adds), Deleted: len(ch.Deletes), Unchanged: ch.Unchanged, Shadowed: ch.Shadowed,
		Skipped: []string{},
	}
	for _, le := range res.Skipped {
		sum.Skipped = append(sum.Skipped, le.Error())
	}
	if err := writeRecords(ctx, k, intelTopic, intel.Records(list, sum.ImportID, res.Prefixes, now)); err != nil {
		return fmt.Errorf("blocklist import: %w", err)
	}
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: k.brokers, Topic: topic, Security: k.sec})
	if err != nil {
		return err
	}
	defer func() { _ = pub.Close() }() // Publish is synchronous: nothing is left to flush
	// Deletes first: a list that moved 10.0.0.1 into 10.0.0.0/24 shows no gap.
	for rest := ch.Deletes; len(rest) > 0; {
		n := min(len(rest), publishChunk)
		if err := pub.Publish(ctx, rest[:n]...); err != nil {
			return fmt.Errorf("blocklist import: publish deletes: %w", err)
		}
		rest = rest[n:]
	}
	for lo := 0; lo < len(ch.Adds); lo += publishChunk {
		if err := pub.Publish(ctx, ch.AddDecisions(lo, min(lo+publishChunk, len(ch.Adds)))...); err != nil {
			return fmt.Errorf("blocklist import: publish adds: %w", err)
		}
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	for _, s := range sum.Skipped {
		_, _ = fmt.Fprintf(stdout, "skipped %s\n", s)
	}
	_, _ = fmt.Fprintf(stdout, "imported %s (import %s): %d prefixes, %d added, %d deleted, %d unchanged, %d shadowed, %d lines skipped\n",
		name, sum.ImportID, sum.Prefixes, sum.Added, sum.Deleted, sum.Unchanged, sum.Shadowed, len(sum.Skipped))
	return nil
}

// writeRecords writes an import's records to the threat-intel topic.
func writeRecords(ctx context.Context, k kafkaTarget, topic string, recs []intel.Record) error {
	tr := k.sec.Transport(&kafka.Transport{})
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:         kafka.TCP(k.brokers...),
		Topic:        topic,
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond,
		BatchSize:    1, // one record per produce batch: a batch of several would pass the broker's 1 MB message limit
		BatchBytes:   1 << 20,
		Transport:    tr,
	}
	msgs := make([]kafka.Message, 0, len(recs))
	for _, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode threat-intel record: %w", err)
		}
		msgs = append(msgs, kafka.Message{Key: []byte(r.Name), Value: b})
	}
	err := w.WriteMessages(ctx, msgs...)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %d records to %s: %w", len(msgs), topic, err)
	}
	return nil
}

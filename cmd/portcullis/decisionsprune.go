package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

// decisionsPrune implements "decisions prune": one pass of the pruner over
// every partition of the decisions topic.
func decisionsPrune(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("decisions prune", "portcullis decisions prune [--dry-run] [--topic T] [-o text|json]",
		`Reads the decisions topic to its high-water marks and publishes a
tombstone (a record without a value) for every key whose latest record is a
delete or an add that has expired, so that compaction drops the key's
history and a bouncer's start reads only the live set. A decision published
for a key while the pruner works is written again after its tombstone.
Running engines do this continuously; this command is for deployments
without one. --dry-run counts and writes nothing.
`, `portcullis decisions prune --dry-run
portcullis decisions prune
portcullis decisions prune --brokers kafka-1:9092 -o json
`)
	var (
		common  cli.Common
		topic   string
		dryRun  bool
		timeout time.Duration
		output  string
	)
	common.Register(fs)
	fs.StringVar(&topic, "topic", decisionfeed.TopicDecisions, "decisions topic")
	fs.BoolVar(&dryRun, "dry-run", false, "count what would be tombstoned, write nothing")
	fs.DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long")
	fs.StringVar(&output, "o", "text", "output format: text or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := checkOutput(output, "text", "json"); err != nil {
		return err
	}
	pr, err := decisionfeed.NewPruner(decisionfeed.PrunerConfig{Brokers: common.BrokerList(), Topic: topic, DryRun: dryRun})
	if err != nil {
		return fmt.Errorf("decisions prune: %w", err)
	}
	defer pr.Close()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	st, err := pr.Once(tctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("decisions prune: %w", err)
	}
	if output == "json" {
		b, err := json.Marshal(struct {
			DryRun      bool  `json:"dry_run"`
			Records     int64 `json:"records"`
			Live        int   `json:"live"`
			Expired     int   `json:"expired"`
			Deleted     int   `json:"deleted"`
			Invalid     int   `json:"invalid"`
			Republished int   `json:"republished"`
		}{dryRun, st.Records, st.Live, st.Expired, st.Deleted, st.Invalid, st.Republished})
		if err != nil {
			return fmt.Errorf("decisions prune: %w", err)
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	verb := "tombstoned"
	if dryRun {
		verb = "would tombstone"
	}
	_, err = fmt.Fprintf(stdout, "read %d records in %s: %d live, %s %d expired and %d deleted, %d invalid left alone, %d republished\n",
		st.Records, time.Since(start).Round(time.Millisecond), st.Live, verb, st.Expired, st.Deleted, st.Invalid, st.Republished)
	return err
}

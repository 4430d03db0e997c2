package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"
	kafkaprotocol "github.com/segmentio/kafka-go/protocol"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

func runAlerts(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "list" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			_, _ = fmt.Fprint(stdout, "NAME\n    portcullis alerts - the engine's alerts\n\nSYNOPSIS\n    portcullis alerts list [--since D] [--ip IP] [--scenario S] [-o table|json]\n")
			return nil
		}
		return fmt.Errorf("%w: alerts: want list", errUsage)
	}
	fs := newFlagSet("alerts list",
		"portcullis alerts list [--since D] [--ip IP] [--scenario S] [-o table|json] [--topic T]",
		`Reads the alerts topic from the earliest offset of every partition up to
the high-water marks taken at start, and prints the alerts oldest first:
the time of the last event, the source IP, its country, the scenario and
the decision taken (type and duration, "-" when none, "(simulated)" when
the scenario runs in simulation). Messages that are not alerts are
skipped and counted.
`,
		`portcullis alerts list
portcullis alerts list --since 1h --scenario crowdsecurity/ssh-bf
portcullis alerts list --ip 185.220.101.5 -o json
`)
	var (
		common           cli.Common
		since, timeout   time.Duration
		ipFlag, scenario string
		output, topic    string
	)
	common.Register(fs)
	fs.DurationVar(&since, "since", 0, "only alerts whose last event is at most this old (0: all)")
	fs.StringVar(&ipFlag, "ip", "", "only alerts on this source address")
	fs.StringVar(&scenario, "scenario", "", "only alerts of this scenario")
	fs.StringVar(&output, "o", "table", "output format: table or json")
	fs.StringVar(&topic, "topic", decisionfeed.TopicAlerts, "alerts topic")
	fs.DurationVar(&timeout, "timeout", 60*time.Second, "give up after this long")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if common.Config != "" {
		return fmt.Errorf("%w: alerts list: --config is not used (all settings are flags)", errUsage)
	}
	if err := checkOutput(output, "table", "json"); err != nil {
		return err
	}
	var ip netip.Addr
	if ipFlag != "" {
		a, err := netip.ParseAddr(ipFlag)
		if err != nil {
			return fmt.Errorf("%w: --ip %q: %w", errUsage, ipFlag, err)
		}
		ip = a.Unmap()
	}
	if since < 0 {
		return fmt.Errorf("%w: --since must not be negative", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	k, err := connectKafka(ctx, &common, "alerts")
	if err != nil {
		return err
	}
	msgs, err := readTopic(ctx, k, topic)
	if err != nil {
		return fmt.Errorf("alerts list: %w", err)
	}
	now := time.Now()
	alerts := []engine.Alert{}
	bad := 0
	for _, m := range msgs {
		a, err := engine.DecodeAlert(m.Value)
		if err != nil {
			bad++
			continue
		}
		if (ip.IsValid() && netip.MustParseAddr(a.IP).Unmap() != ip) || (scenario != "" && a.Scenario != scenario) ||
			(since > 0 && now.Sub(a.LastSeen) > since) {
			continue
		}
		alerts = append(alerts, a)
	}
	slices.SortStableFunc(alerts, func(a, b engine.Alert) int { return a.LastSeen.Compare(b.LastSeen) })
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(alerts)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "=== Alerts ===")
	_, _ = fmt.Fprintln(tw, "TIME\tIP\tCOUNTRY\tSCENARIO\tDECISION")
	for _, a := range alerts {
		dec := "-"
		if a.Decision != nil {
			dec = string(a.Decision.Type) + " " + a.Decision.Duration
		}
		if a.Simulated {
			dec += " (simulated)"
		}
		country := a.Country
		if country == "" {
			country = "-"
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.LastSeen.UTC().Format(time.RFC3339), a.IP, country, a.Scenario, dec)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if bad > 0 {
		_, _ = fmt.Fprintf(stdout, "(%d messages on %s were not alerts and were skipped)\n", bad, topic)
	}
	return nil
}

// readTopic returns the messages of every partition of topic from the
// earliest offset up to the high-water marks taken at start.
//
// It fetches with the client rather than a kafka.Reader: a Reader prefetches
// in the background, and at the end of the log that prefetch is a long poll
// of MaxWait that Close waits out on a real broker, so every read paid it.
func readTopic(ctx context.Context, k kafkaTarget, topic string) ([]kafka.Message, error) {
	tr := k.sec.Transport(&kafka.Transport{})
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(k.brokers...), Transport: tr}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil {
		var terr error
		if len(md.Topics) == 1 {
			terr = md.Topics[0].Error
		}
		return nil, fmt.Errorf("topic %s: %w", topic, errors.Join(errors.New("not found"), terr))
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range md.Topics[0].Partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
	}
	res, err := c.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("offsets of %s: %w", topic, err)
	}
	var out []kafka.Message
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("offsets of %s/%d: %w", topic, po.Partition, po.Error)
		}
		out, err = readPartition(ctx, c, topic, po.Partition, po.FirstOffset, po.LastOffset, out)
		if err != nil {
			return nil, fmt.Errorf("read %s/%d: %w", topic, po.Partition, err)
		}
	}
	return out, nil
}

// readPartition appends the messages of partition p in [first, end) to out.
func readPartition(ctx context.Context, c *kafka.Client, topic string, p int, first, end int64, out []kafka.Message) ([]kafka.Message, error) {
	for off := first; off < end; {
		res, err := c.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: p, Offset: off, MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 200 * time.Millisecond,
		})
		if err == nil {
			err = res.Error
		}
		if err != nil {
			return out, fmt.Errorf("fetch at %d: %w", off, err)
		}
		next := off
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return out, fmt.Errorf("record after %d: %w", next, err)
			}
			// A response may start with records before off (the whole
			// batch holding off), and may run past end.
			if r.Offset < off || r.Offset >= end {
				continue
			}
			m := kafka.Message{Topic: topic, Partition: p, Offset: r.Offset, Time: r.Time}
			if m.Key, err = readRecordBytes(r.Key); err == nil {
				m.Value, err = readRecordBytes(r.Value)
			}
			if err != nil {
				return out, fmt.Errorf("record at %d: %w", r.Offset, err)
			}
			out = append(out, m)
			next = r.Offset + 1
		}
		if next == off {
			// Nothing readable at off (compacted away), yet the log goes on.
			next = off + 1
		}
		off = next
	}
	return out, nil
}

// readRecordBytes reads and closes one key or value of a fetched record; a
// missing one (a tombstone's value) stays nil.
func readRecordBytes(b kafkaprotocol.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	v, err := io.ReadAll(b)
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	return v, err
}

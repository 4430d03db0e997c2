// Package health reports the state of a Portcullis deployment for
// "portcullis metrics": per topic, its partitions and the rate at which
// messages arrive (high-water marks sampled twice); per consumer group, its
// lag behind the high-water marks from the offsets it committed, Healthy or
// Lagging against a threshold; and the engine's counters per parser and
// scenario, scraped from its Prometheus endpoint.
package health

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
)

// Consumer group states reported.
const (
	Healthy = "Healthy"
	Lagging = "Lagging"
)

// QueueConfig says what to sample.
type QueueConfig struct {
	// Topics to report; required. Topics that do not exist are reported
	// as missing.
	Topics []string
	// Interval is the time between the two high-water mark samples that
	// give messages/s (default 5s).
	Interval time.Duration
	// LagThreshold is the most messages a group may be behind on a topic
	// and still be Healthy.
	LagThreshold int64
}

// TopicStats is one row of the queue table.
type TopicStats struct {
	Topic          string  `json:"topic"`
	Missing        bool    `json:"missing,omitempty"`
	Partitions     int     `json:"partitions"`
	Messages       int64   `json:"messages"` // sum of high-water marks minus earliest offsets
	MessagesPerSec float64 `json:"messages_per_sec"`
}

// GroupLag is one consumer group's lag on one topic.
type GroupLag struct {
	Group  string `json:"group"`
	Topic  string `json:"topic"`
	Lag    int64  `json:"lag"`
	Status string `json:"status"`
}

// Queue is the queue report.
type Queue struct {
	Topics []TopicStats `json:"topics"`
	Groups []GroupLag   `json:"groups"`
}

// SampleQueue reads topic metadata, samples the high-water marks twice
// cfg.Interval apart, and computes each consumer group's lag on the topics
// from its committed offsets at the second sample. A group is listed for a
// topic when it committed an offset on at least one partition of it.
func SampleQueue(ctx context.Context, c *kafka.Client, cfg QueueConfig) (Queue, error) {
	if len(cfg.Topics) == 0 {
		return Queue{}, errors.New("queue: no topics")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: cfg.Topics})
	if err != nil {
		return Queue{}, fmt.Errorf("queue: metadata: %w", err)
	}
	parts := map[string][]int{}
	for _, t := range md.Topics {
		if t.Error != nil {
			continue
		}
		for _, p := range t.Partitions {
			parts[t.Name] = append(parts[t.Name], p.ID)
		}
		slices.Sort(parts[t.Name])
	}
	first, t1, err := offsets(ctx, c, parts, kafka.LastOffset)
	if err != nil {
		return Queue{}, err
	}
	select {
	case <-ctx.Done():
		return Queue{}, fmt.Errorf("queue: %w", ctx.Err())
	case <-time.After(cfg.Interval):
	}
	last, t2, err := offsets(ctx, c, parts, kafka.LastOffset)
	if err != nil {
		return Queue{}, err
	}
	low, _, err := offsets(ctx, c, parts, kafka.FirstOffset)
	if err != nil {
		return Queue{}, err
	}
	var q Queue
	secs := t2.Sub(t1).Seconds()
	for _, name := range cfg.Topics {
		ps, ok := parts[name]
		if !ok {
			q.Topics = append(q.Topics, TopicStats{Topic: name, Missing: true})
			continue
		}
		ts := TopicStats{Topic: name, Partitions: len(ps)}
		var grown int64
		for _, p := range ps {
			ts.Messages += last[name][p] - low[name][p]
			grown += last[name][p] - first[name][p]
		}
		if secs > 0 {
			ts.MessagesPerSec = float64(grown) / secs
		}
		q.Topics = append(q.Topics, ts)
	}
	if q.Groups, err = groupLags(ctx, c, cfg, parts, last, low); err != nil {
		return Queue{}, err
	}
	return q, nil
}

// groupLags computes the lag of every consumer group, sorted by name, on
// each of cfg.Topics it committed an offset on, from the high-water marks
// last and the earliest offsets low.
func groupLags(ctx context.Context, c *kafka.Client, cfg QueueConfig, parts map[string][]int, last, low map[string]map[int]int64) ([]GroupLag, error) {
	groups, err := c.ListGroups(ctx, &kafka.ListGroupsRequest{})
	if err != nil {
		return nil, fmt.Errorf("queue: list groups: %w", err)
	}
	if groups.Error != nil {
		return nil, fmt.Errorf("queue: list groups: %w", groups.Error)
	}
	ids := make([]string, 0, len(groups.Groups))
	for _, g := range groups.Groups {
		ids = append(ids, g.GroupID)
	}
	slices.Sort(ids)
	var out []GroupLag
	for _, id := range ids {
		res, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: id, Topics: parts})
		if err != nil {
			return nil, fmt.Errorf("queue: offsets of group %s: %w", id, err)
		}
		if res.Error != nil {
			return nil, fmt.Errorf("queue: offsets of group %s: %w", id, res.Error)
		}
		for _, name := range cfg.Topics {
			var lag int64
			committed := false
			for _, p := range res.Topics[name] {
				if p.Error != nil || p.CommittedOffset < 0 {
					continue
				}
				committed = true
				// An offset below the earliest one counts from the earliest:
				// older messages are gone and cannot be read.
				lag += max(0, last[name][p.Partition]-max(p.CommittedOffset, low[name][p.Partition]))
			}
			if !committed {
				continue
			}
			st := Healthy
			if lag > cfg.LagThreshold {
				st = Lagging
			}
			out = append(out, GroupLag{Group: id, Topic: name, Lag: lag, Status: st})
		}
	}
	return out, nil
}

// offsets lists the first or last offset of every partition, and when.
func offsets(ctx context.Context, c *kafka.Client, parts map[string][]int, which int64) (map[string]map[int]int64, time.Time, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for t, ps := range parts {
		for _, p := range ps {
			req.Topics[t] = append(req.Topics[t], kafka.OffsetRequest{Partition: p, Timestamp: which})
		}
	}
	out := map[string]map[int]int64{}
	if len(req.Topics) == 0 {
		return out, time.Now(), nil
	}
	res, err := c.ListOffsets(ctx, req)
	at := time.Now()
	if err != nil {
		return nil, at, fmt.Errorf("queue: list offsets: %w", err)
	}
	for t, ps := range res.Topics {
		out[t] = map[int]int64{}
		for _, p := range ps {
			if p.Error != nil {
				return nil, at, fmt.Errorf("queue: offsets of %s/%d: %w", t, p.Partition, p.Error)
			}
			if which == kafka.FirstOffset {
				out[t][p.Partition] = p.FirstOffset
			} else {
				out[t][p.Partition] = p.LastOffset
			}
		}
	}
	return out, at, nil
}

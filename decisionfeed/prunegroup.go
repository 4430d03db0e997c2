package decisionfeed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// DefaultPruneGroup is the consumer group engine instances prune under.
const DefaultPruneGroup = "portcullis-engine-prune"

// PruneLoopConfig configures RunGroup.
type PruneLoopConfig struct {
	// Group is the consumer group whose members share the partitions
	// (default DefaultPruneGroup). Every instance that prunes one topic
	// must use the same group.
	Group string
	// Interval is the wait between two passes over a partition (default 10m).
	Interval time.Duration
	// SessionTimeout is how long the group waits for a member that stopped
	// answering before it gives its partitions to another (default 30s).
	SessionTimeout time.Duration
	// Logger receives a line per pass that tombstoned something (default: discard).
	Logger *slog.Logger
	// OnPass, when set, is called after every pass with its partition and stats.
	OnPass func(partition int, st PruneStats, err error)
}

// RunGroup prunes the topic continuously until ctx ends, sharing the work
// with every other process running RunGroup under the same group: the
// partitions are assigned by a Kafka consumer group, so each partition is
// pruned by exactly one member at a time and a member that dies hands its
// partitions on after the session timeout. The group never commits
// offsets; after an assignment a member reads its partitions from the
// earliest offset, which compaction keeps short. It returns nil when ctx
// ends and an error only for a bad configuration.
func (pr *Pruner) RunGroup(ctx context.Context, cfg PruneLoopConfig) error {
	if cfg.Group == "" {
		cfg.Group = DefaultPruneGroup
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Minute
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("topic", pr.cfg.Topic, "group", cfg.Group)
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                    cfg.Group,
		Brokers:               pr.cfg.Brokers,
		Topics:                []string{pr.cfg.Topic},
		HeartbeatInterval:     min(3*time.Second, cfg.SessionTimeout/3),
		SessionTimeout:        cfg.SessionTimeout,
		RebalanceTimeout:      cfg.SessionTimeout,
		JoinGroupBackoff:      time.Second,
		WatchPartitionChanges: true,
		StartOffset:           kafka.FirstOffset,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			log.Debug("prune group", "msg", fmt.Sprintf(msg, args...))
		}),
	})
	if err != nil {
		return fmt.Errorf("join prune group %s: %w", cfg.Group, err)
	}
	defer func() {
		if err := cg.Close(); err != nil {
			log.Debug("leave prune group", "err", err)
		}
	}()
	for {
		gen, err := cg.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, kafka.ErrGroupClosed) {
				return nil
			}
			log.Warn("prune group: no assignment yet, retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		assigned := gen.Assignments[pr.cfg.Topic]
		log.Info("pruning partitions", "generation", gen.ID, "partitions", len(assigned))
		for _, a := range assigned {
			p := a.ID
			gen.Start(func(gctx context.Context) { pr.loop(gctx, p, cfg, log) })
		}
	}
}

// loop prunes partition p every interval until ctx ends.
func (pr *Pruner) loop(ctx context.Context, p int, cfg PruneLoopConfig, log *slog.Logger) {
	pp := pr.Partition(p)
	for {
		st, err := pp.Pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if cfg.OnPass != nil {
			cfg.OnPass(p, st, err)
		}
		switch {
		case err != nil:
			log.Warn("prune pass failed", "partition", p, "err", err)
			// Start over from the earliest offset: what was pending may be lost.
			pp = pr.Partition(p)
		case st.Expired+st.Deleted+st.Republished > 0:
			log.Info("pruned", "partition", p, "expired", st.Expired, "deleted", st.Deleted,
				"republished", st.Republished, "live", st.Live, "records", st.Records)
		}
		t := time.NewTimer(cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

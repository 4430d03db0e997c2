package decisionfeed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/segmentio/kafka-go"
)

// Handler receives the decision feed. The subscriber calls it from one
// goroutine, never concurrently. A returned error makes the subscriber retry
// the same call with backoff, so both methods must be idempotent.
type Handler interface {
	// Snapshot is called once, after the topic was read up to the high-water
	// marks taken at start, with the live set: the latest add of every key
	// that was neither deleted nor expired. The slice is the handler's.
	Snapshot(ctx context.Context, live []Decision) error
	// Changes is called with the decisions that followed, adds and deletes,
	// in topic order per key. An add may already be expired when it arrives;
	// it still supersedes the key's earlier add. A delete applies to its key
	// whatever its type.
	Changes(ctx context.Context, changes []Decision) error
}

// SubscriberConfig configures a Subscriber. Zero fields take the defaults
// given beside them.
type SubscriberConfig struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string
	// Topic is the decisions topic (default TopicDecisions).
	Topic string
	// Group is the consumer group the subscriber commits its offsets under,
	// for lag reporting only; it never joins the group and always starts
	// from the earliest offset. It must be unique per host (default
	// "portcullis-<program>-<hostname>"); "-" commits nothing.
	Group string
	// Limits validate every message (default DefaultLimits()).
	Limits Limits
	// Logger receives the subscriber's logs (default: discard).
	Logger *slog.Logger
	// DLQTopic receives a copy of every invalid message (default
	// DLQTopic(Topic)); "-" turns the copy off.
	DLQTopic string
	// MaxBatch is the most changes handed to one Changes call (default 4096).
	MaxBatch int
	// FetchMaxBytes is the most bytes asked for in one fetch of one
	// partition (default 4 MiB); the response is held in memory while it
	// is decoded.
	FetchMaxBytes int
	// MaxWait is how long one fetch waits at the end of the log for new
	// messages (default 500ms). It does not delay delivery: a fetch returns
	// as soon as a message arrives.
	MaxWait time.Duration
	// CommitInterval is how often the consumed offsets are committed
	// (default 5s).
	CommitInterval time.Duration
	// BackoffMin and BackoffMax bound the exponential backoff, with jitter,
	// between retries (defaults 100ms and 10s).
	BackoffMin, BackoffMax time.Duration
	// PartitionCheckInterval is how often the topic is checked for added
	// partitions while streaming (default 30s).
	PartitionCheckInterval time.Duration
	// ClientID names this client to the brokers (default "portcullis").
	ClientID string
	// Security is the TLS and SASL the subscriber and its DLQ writer
	// connect with (nil: plaintext).
	Security *kafkaconn.Security
	// Now is the clock used to drop expired decisions (default time.Now).
	Now func() time.Time
}

// SubscriberStats is a point-in-time view of a subscriber.
type SubscriberStats struct {
	// Lag is the sum over partitions of high-water mark minus the next
	// offset to hand to the handler.
	Lag int64
	// Messages counts the messages read, valid or not.
	Messages uint64
	// Invalid counts the messages that failed validation.
	Invalid uint64
	// DLQErrors counts invalid messages that could not be copied to the DLQ.
	DLQErrors uint64
	// Live is the number of keys whose latest message is an add.
	Live int
	// Ready is true once the handler accepted the snapshot.
	Ready bool
	// FetchErrors counts failed requests to the brokers (each one retried).
	FetchErrors uint64
	// Partitions is the number of partitions of the topic.
	Partitions int
}

// Subscriber follows the decisions topic under the consumption rule of
// DESIGN.md. Create it with NewSubscriber and call Run once.
type Subscriber struct {
	cfg    SubscriberConfig
	log    *slog.Logger
	tr     *kafka.Transport
	client *kafka.Client
	dlq    *kafka.Writer

	running atomic.Bool

	messages    atomic.Uint64
	invalid     atomic.Uint64
	dlqErrors   atomic.Uint64
	fetchErrors atomic.Uint64
	// dlqPausedUntil (unix nanoseconds) skips DLQ copies for a while after
	// one failed, so that a missing DLQ topic cannot stall the feed for
	// seconds per invalid message.
	dlqPausedUntil atomic.Int64

	mu    sync.Mutex
	parts []partState
	live  keySet
	ready bool
}

// partState is the progress of one partition.
type partState struct {
	next      int64 // next offset to hand to the handler
	hwm       int64 // high-water mark seen in the latest fetch
	committed int64 // offset last committed
}

// DefaultGroup returns the lag-reporting group of this process:
// "portcullis-<program>-<hostname>".
func DefaultGroup() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return "portcullis-" + filepath.Base(os.Args[0]) + "-" + host
}

// NewSubscriber checks cfg and returns a subscriber. It does not connect;
// Run does.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("subscriber: no brokers")
	}
	if cfg.Topic == "" {
		cfg.Topic = TopicDecisions
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup()
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DLQTopic == "" {
		cfg.DLQTopic = DLQTopic(cfg.Topic)
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 4096
	}
	if cfg.FetchMaxBytes <= 0 {
		cfg.FetchMaxBytes = 4 << 20
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 500 * time.Millisecond
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = 5 * time.Second
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 10 * time.Second
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		return nil, fmt.Errorf("subscriber: backoff max %s below min %s", cfg.BackoffMax, cfg.BackoffMin)
	}
	if cfg.PartitionCheckInterval <= 0 {
		cfg.PartitionCheckInterval = 30 * time.Second
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "portcullis"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tr := cfg.Security.Transport(&kafka.Transport{ClientID: cfg.ClientID, MetadataTTL: 5 * time.Second, DialTimeout: 3 * time.Second})
	addr := kafka.TCP(cfg.Brokers...)
	s := &Subscriber{
		cfg:    cfg,
		log:    cfg.Logger.With("topic", cfg.Topic),
		tr:     tr,
		client: &kafka.Client{Addr: addr, Transport: tr},
	}
	if cfg.DLQTopic != "-" {
		s.dlq = &kafka.Writer{
			Addr:         addr,
			Topic:        cfg.DLQTopic,
			Balancer:     &kafka.Murmur2Balancer{Consistent: true},
			RequiredAcks: kafka.RequireAll,
			BatchTimeout: time.Millisecond,
			WriteTimeout: 5 * time.Second,
			ReadTimeout:  5 * time.Second,
			MaxAttempts:  3,
			Transport:    tr,
		}
	}
	return s, nil
}

// Stats returns the subscriber's current counters.
func (s *Subscriber) Stats() SubscriberStats {
	st := SubscriberStats{
		Messages:    s.messages.Load(),
		Invalid:     s.invalid.Load(),
		DLQErrors:   s.dlqErrors.Load(),
		FetchErrors: s.fetchErrors.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Ready = s.ready
	if s.live.m != nil {
		st.Live = s.live.len()
	}
	st.Partitions = len(s.parts)
	for _, p := range s.parts {
		if p.hwm > p.next {
			st.Lag += p.hwm - p.next
		}
	}
	return st
}

// Run reads the topic from the earliest offset of every partition up to the
// high-water marks taken at start, hands the live set to h.Snapshot once,
// then streams what follows to h.Changes until ctx ends. It reconnects
// forever. It returns nil when ctx ends, and an error only for misuse.
func (s *Subscriber) Run(ctx context.Context, h Handler) error {
	if h == nil {
		return errors.New("subscriber: nil handler")
	}
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("subscriber: Run called twice")
	}
	defer s.tr.CloseIdleConnections()
	if s.dlq != nil {
		defer func() {
			// Copies are written synchronously, so nothing is pending here;
			// a failure is worth a line but not a Run error.
			if err := s.dlq.Close(); err != nil {
				s.log.Warn("close the dead-letter writer", "dlq", s.cfg.DLQTopic, "err", err)
			}
		}()
	}

	var (
		live []Decision
		next []int64
	)
	for attempt := 0; ; attempt++ {
		var err error
		live, next, err = s.rebuild(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("rebuild of the live set failed, retrying", "attempt", attempt+1, "err", err)
		if !s.sleep(ctx, attempt) {
			return nil
		}
	}
	s.log.Info("live set rebuilt", "live", len(live), "partitions", len(next))
	if !s.retry(ctx, "snapshot", func() error { return h.Snapshot(ctx, live) }) {
		return nil
	}
	live = nil // the handler owns it now; do not keep it alive here
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()

	s.stream(ctx, h, next)
	return nil
}

// retry calls fn until it succeeds or ctx ends, with backoff. It reports
// whether fn succeeded.
func (s *Subscriber) retry(ctx context.Context, what string, fn func() error) bool {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		s.log.Warn("handler failed, retrying", "call", what, "attempt", attempt+1, "err", err)
		if !s.sleep(ctx, attempt) {
			return false
		}
	}
}

// backoff returns the wait before retry number attempt (0-based):
// exponential from BackoffMin, capped at BackoffMax, with jitter in [d/2, d].
func (s *Subscriber) backoff(attempt int) time.Duration {
	d := s.cfg.BackoffMin
	for i := 0; i < attempt && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

// sleep waits for the backoff of attempt; false means ctx ended.
func (s *Subscriber) sleep(ctx context.Context, attempt int) bool {
	t := time.NewTimer(s.backoff(attempt))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

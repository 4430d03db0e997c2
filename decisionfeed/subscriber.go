package decisionfeed

import (
	"context"
	"errors"
	"fmt"
	"iter"
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

// Handler receives the decision feed as bouncers enforce it: one decision
// per address, the union of the decisions standing there (see Run). The
// subscriber calls it from one goroutine, never concurrently. A returned
// error makes the subscriber retry the same call with backoff, so both
// methods must be idempotent.
type Handler interface {
	// Snapshot is called once, after the topic was read up to the high-water
	// marks taken at start, with the live set: the enforced decision of
	// every address where a decision stands. live is valid during the call
	// only, and may be ranged over more than once.
	Snapshot(ctx context.Context, live iter.Seq[Decision]) error
	// Changes is called with what changed since, in topic order per
	// address: an add is the address's new enforced decision (it replaces
	// the one before), a delete says that nothing stands there any more.
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
	// Accept, when set, filters the decisions standing on the feed before
	// their union is taken: a decision it refuses counts as withdrawn from
	// its key. It must be pure (the same answer for the same decision), as
	// it is asked once per message.
	Accept func(*Decision) bool
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
	// DLQSkipped counts invalid messages not copied because the DLQ holds
	// a copy already.
	DLQSkipped uint64
	// Live is the number of addresses where a decision stands.
	Live int
	// Standing is the number of keys under which a decision stands.
	Standing int
	// NoopDeletes counts deletes and tombstones of keys that held nothing
	// (withdrawn before, or never published by that origin).
	NoopDeletes uint64
	// LegacyKeys counts the messages read under a schema v1 key without
	// origin.
	LegacyKeys uint64
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
	// dlqCopies are the records with a copy on the DLQ; dlqSkipped counts
	// the invalid records not copied again.
	dlqCopies  dlqSet
	dlqSkipped atomic.Uint64
	// dlqPausedUntil (unix nanoseconds) skips DLQ copies for a while after
	// one failed, so that a missing DLQ topic cannot stall the feed for
	// seconds per invalid message.
	dlqPausedUntil atomic.Int64

	noopDeletes atomic.Uint64
	legacyKeys  atomic.Uint64

	mu    sync.Mutex
	parts []partState
	set   *standingSet // nil until the first rebuild
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
		DLQSkipped:  s.dlqSkipped.Load(),
		FetchErrors: s.fetchErrors.Load(),
		NoopDeletes: s.noopDeletes.Load(),
		LegacyKeys:  s.legacyKeys.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Ready = s.ready
	if s.set != nil {
		s.set.mu.Lock()
		st.Live, st.Standing = s.set.live, s.set.keys
		s.set.mu.Unlock()
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
//
// Each key holds the decision of one producer on one address
// ("scope:value@origin"; a legacy "scope:value" key holds one more), so
// several may stand on an address at once. The handler gets their union:
// the strongest remedy (ban > captcha > throttle) among those not expired,
// lasting until the latest expiry among them. A delete or tombstone
// withdraws what stood under its own key only.
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

	if s.dlq != nil {
		if err := s.loadDLQ(ctx); err != nil && ctx.Err() == nil {
			s.log.Info("dead-letter topic not read; invalid messages already there may be copied again",
				"dlq", s.cfg.DLQTopic, "err", err)
		}
	}
	var next []int64
	for attempt := 0; ; attempt++ {
		var err error
		next, err = s.rebuild(ctx)
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
	st := s.Stats()
	s.log.Info("live set rebuilt", "live", st.Live, "standing", st.Standing, "partitions", len(next))
	live := s.set.liveSeq(s.cfg.Now().UnixNano())
	if !s.retry(ctx, "snapshot", func() error { return h.Snapshot(ctx, live) }) {
		return nil
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()

	s.stream(ctx, h, next)
	return nil
}

// Standing returns every decision standing on the feed at now, one per
// key, each marked when it is the one enforced for its address, unsorted.
// It is empty until the first rebuild is done (Stats().Ready).
func (s *Subscriber) Standing(now time.Time) []Standing {
	s.mu.Lock()
	set := s.set
	s.mu.Unlock()
	if set == nil {
		return nil
	}
	return set.standing(now.UnixNano())
}

// count counts a change read from the topic.
func (s *Subscriber) count(c *change, noop bool) {
	if noop {
		s.noopDeletes.Add(1)
	}
	if c.d.Legacy {
		s.legacyKeys.Add(1)
	}
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

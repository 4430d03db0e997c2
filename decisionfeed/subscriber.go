package decisionfeed

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
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

// partitionCount asks the brokers how many partitions the topic has.
func (s *Subscriber) partitionCount(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	md, err := s.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{s.cfg.Topic}})
	if err != nil {
		return 0, fmt.Errorf("metadata of %s: %w", s.cfg.Topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != s.cfg.Topic {
			continue
		}
		if t.Error != nil {
			return 0, fmt.Errorf("metadata of %s: %w", s.cfg.Topic, t.Error)
		}
		if len(t.Partitions) == 0 {
			return 0, fmt.Errorf("metadata of %s: no partitions", s.cfg.Topic)
		}
		return len(t.Partitions), nil
	}
	return 0, fmt.Errorf("metadata of %s: topic not found", s.cfg.Topic)
}

// offsets returns the earliest offset and the high-water mark of each partition.
func (s *Subscriber) offsets(ctx context.Context, n int) (first, last []int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reqs := make([]kafka.OffsetRequest, 0, 2*n)
	for p := 0; p < n; p++ {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	res, err := s.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{s.cfg.Topic: reqs}})
	if err != nil {
		return nil, nil, fmt.Errorf("list offsets of %s: %w", s.cfg.Topic, err)
	}
	first, last = make([]int64, n), make([]int64, n)
	seen := 0
	for _, po := range res.Topics[s.cfg.Topic] {
		if po.Partition < 0 || po.Partition >= n {
			continue
		}
		if po.Error != nil {
			return nil, nil, fmt.Errorf("list offsets of %s/%d: %w", s.cfg.Topic, po.Partition, po.Error)
		}
		first[po.Partition], last[po.Partition] = po.FirstOffset, po.LastOffset
		seen++
	}
	if seen != n {
		return nil, nil, fmt.Errorf("list offsets of %s: %d of %d partitions answered", s.cfg.Topic, seen, n)
	}
	return first, last, nil
}

// rebuild reads every partition from its earliest offset up to the
// high-water mark taken at start and returns the live set and the next
// offset of each partition.
func (s *Subscriber) rebuild(ctx context.Context) ([]Decision, []int64, error) {
	n, err := s.partitionCount(ctx)
	if err != nil {
		return nil, nil, err
	}
	first, last, err := s.offsets(ctx, n)
	if err != nil {
		return nil, nil, err
	}
	var total int64
	for p := range n {
		total += last[p] - first[p]
	}
	set := newLiveSet(int(min(total, 1<<22)))
	next := make([]int64, n)
	s.mu.Lock()
	s.parts = make([]partState, n)
	for p := range n {
		s.parts[p] = partState{next: first[p], hwm: last[p], committed: -1}
	}
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for p := range n {
		wg.Go(func() {
			off, err := s.readUpTo(ctx, p, first[p], last[p], set)
			if err != nil {
				errOnce.Do(func() { firstErr = err; cancel() })
				return
			}
			next[p] = off
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, nil, firstErr
	}
	live, keys := set.handOver(s.cfg.Now())
	s.mu.Lock()
	s.live = keys
	for p := range n {
		s.parts[p].next = next[p]
	}
	s.mu.Unlock()
	return live, next, nil
}

// readUpTo reads partition p from offset from until the offset reaches
// end, applying each message to set, and returns the next offset.
func (s *Subscriber) readUpTo(ctx context.Context, p int, from, end int64, set *liveSet) (int64, error) {
	off := from
	dc := newDecoder(s.cfg.Limits)
	for off < end {
		res, err := s.fetch(ctx, p, off)
		if err != nil {
			return off, err
		}
		newOff, err := s.readRecords(ctx, dc, p, off, res, set.apply)
		if err != nil {
			return off, err
		}
		s.setHWM(p, res.HighWatermark)
		if newOff == off && res.HighWatermark > off {
			// Nothing readable at off, yet the log goes on; step past it.
			newOff = off + 1
		}
		off = newOff
	}
	return off, nil
}

// change is one message's effect on the live set: an add or delete of Key.
type change struct {
	value string // the decision value, unique across scopes
	d     Decision
	del   bool
}

// fetch fetches partition p at off, retrying with backoff until it
// succeeds or ctx ends. An offset that fell out of the log is moved to
// the earliest offset.
func (s *Subscriber) fetch(ctx context.Context, p int, off int64) (*kafka.FetchResponse, error) {
	for attempt := 0; ; attempt++ {
		res, err := s.client.Fetch(ctx, &kafka.FetchRequest{
			Topic:     s.cfg.Topic,
			Partition: p,
			Offset:    off,
			MinBytes:  1,
			MaxBytes:  int64(s.cfg.FetchMaxBytes),
			MaxWait:   s.cfg.MaxWait,
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err == nil {
			if attempt > 0 {
				s.log.Info("feed reachable again", "partition", p, "offset", off, "attempts", attempt)
			}
			return res, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.fetchErrors.Add(1)
		if errors.Is(err, kafka.OffsetOutOfRange) {
			return nil, fmt.Errorf("fetch %s/%d at %d: %w", s.cfg.Topic, p, off, err)
		}
		if attempt == 0 {
			s.log.Warn("fetch failed, retrying with backoff", "partition", p, "offset", off, "err", err)
		} else {
			s.log.Debug("fetch failed again", "partition", p, "offset", off, "attempt", attempt+1, "err", err)
		}
		if !s.sleep(ctx, attempt) {
			return nil, ctx.Err()
		}
	}
}

// readRecords reads the records of a fetch response at or after off,
// validates each and hands the valid ones to emit. Invalid messages are
// counted, logged and copied to the DLQ. It returns the next offset.
func (s *Subscriber) readRecords(ctx context.Context, dc *decoder, p int, off int64, res *kafka.FetchResponse, emit func(change)) (int64, error) {
	var key, val []byte
	one := func(r *protocol.Record) error {
		if r.Offset < off {
			return nil
		}
		off = r.Offset + 1
		var err error
		if key, err = readBytes(r.Key, key); err != nil {
			return fmt.Errorf("read key at %s/%d@%d: %w", s.cfg.Topic, p, r.Offset, err)
		}
		tombstone := r.Value == nil
		if val, err = readBytes(r.Value, val); err != nil {
			return fmt.Errorf("read value at %s/%d@%d: %w", s.cfg.Topic, p, r.Offset, err)
		}
		s.messages.Add(1)
		c, err := s.decodeRecord(dc, key, val, tombstone, r.Time)
		if err != nil {
			s.reject(ctx, p, r.Offset, key, val, err)
			return nil
		}
		emit(c)
		return nil
	}
	stream, ok := res.Records.(*protocol.RecordStream)
	if !ok {
		return off, eachRecord(res.Records, one)
	}
	for _, rr := range stream.Records {
		if cb, isControl := rr.(*protocol.ControlBatch); isControl {
			// Transaction markers take offsets but carry no decision.
			if err := eachRecord(cb.Records, func(r *protocol.Record) error {
				off = max(off, r.Offset+1)
				return nil
			}); err != nil {
				return off, fmt.Errorf("read control batch of %s/%d: %w", s.cfg.Topic, p, err)
			}
			continue
		}
		if err := eachRecord(rr, one); err != nil {
			return off, err
		}
	}
	return off, nil
}

// eachRecord calls fn for every record of rr.
func eachRecord(rr protocol.RecordReader, fn func(*protocol.Record) error) error {
	for {
		r, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
}

// readBytes reads all of b into buf, reusing its storage, and closes b,
// which hands kafka-go's buffer pages back to its pool once every record
// of a response is read: far less garbage during a rebuild.
func readBytes(b protocol.Bytes, buf []byte) ([]byte, error) {
	if b == nil {
		return buf[:0], nil
	}
	defer b.Close() //nolint:errcheck // kafka-go's page ref closes with nil
	n := b.Len()
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(b, buf); err != nil {
		return buf[:0], err
	}
	return buf, nil
}

// decodeRecord turns one record into a change, or says why it is invalid.
func (s *Subscriber) decodeRecord(dc *decoder, key, val []byte, tombstone bool, ts time.Time) (change, error) {
	if tombstone {
		scope, value, err := parseKey(key, s.cfg.Limits)
		if err != nil {
			return change{}, fmt.Errorf("tombstone: %w", err)
		}
		d := Decision{
			V: SchemaVersion, ID: "tombstone", Op: OpDelete, Type: TypeBan, Duration: "0s",
			Scope: scope, Value: value, Origin: "tombstone", CreatedAt: ts.UTC(),
		}
		return change{value: value, d: d, del: true}, nil
	}
	d, err := dc.decode(val)
	if err != nil {
		return change{}, err
	}
	if !keyMatches(key, &d) {
		return change{}, fmt.Errorf("key: %q does not match the decision's key %q", key, d.Key())
	}
	return change{value: d.Value, d: d, del: d.Op == OpDelete}, nil
}

// keyMatches reports whether key is d.Key(), without building it.
func keyMatches(key []byte, d *Decision) bool {
	return len(key) == len(d.Scope)+1+len(d.Value) &&
		string(key[:len(d.Scope)]) == string(d.Scope) && key[len(d.Scope)] == ':' &&
		string(key[len(d.Scope)+1:]) == d.Value
}

// parseKey splits and validates a message key "scope:value".
func parseKey(key []byte, lim Limits) (Scope, string, error) {
	for i, c := range key {
		if c != ':' {
			continue
		}
		scope, value := Scope(key[:i]), string(key[i+1:])
		if err := validateValue(scope, value, lim); err != nil {
			return "", "", fmt.Errorf("key %q: %w", key, err)
		}
		return scope, value, nil
	}
	return "", "", fmt.Errorf("key %q: not scope:value", key)
}

// DLQ header names.
const (
	HeaderReason          = "portcullis-reason"
	HeaderSourceTopic     = "portcullis-source-topic"
	HeaderSourcePartition = "portcullis-source-partition"
	HeaderSourceOffset    = "portcullis-source-offset"
	HeaderTruncated       = "portcullis-truncated"
)

// dlqPause is how long DLQ copies are skipped after one failed.
const dlqPause = 30 * time.Second

// dlqMaxValue is the most of an invalid value copied to the DLQ, so that a
// huge message cannot fail the copy too.
const dlqMaxValue = 64 << 10

// reject counts, logs and copies an invalid message to the DLQ.
func (s *Subscriber) reject(ctx context.Context, p int, off int64, key, val []byte, reason error) {
	s.invalid.Add(1)
	s.log.Warn("invalid decision dropped", "partition", p, "offset", off, "reason", reason.Error())
	if s.dlq == nil {
		return
	}
	if time.Now().UnixNano() < s.dlqPausedUntil.Load() {
		s.dlqErrors.Add(1)
		return
	}
	headers := []kafka.Header{
		{Key: HeaderReason, Value: []byte(reason.Error())},
		{Key: HeaderSourceTopic, Value: []byte(s.cfg.Topic)},
		{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(p))},
		{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(off, 10))},
	}
	v := val
	if len(v) > dlqMaxValue {
		v = v[:dlqMaxValue]
		headers = append(headers, kafka.Header{Key: HeaderTruncated, Value: []byte(strconv.Itoa(len(val)))})
	}
	msg := kafka.Message{Key: append([]byte(nil), key...), Value: append([]byte{}, v...), Headers: headers}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.dlq.WriteMessages(wctx, msg); err != nil {
		s.dlqErrors.Add(1)
		s.dlqPausedUntil.Store(time.Now().Add(dlqPause).UnixNano())
		s.log.Error("copy to the dead-letter topic failed; no copies for a while", "dlq", s.cfg.DLQTopic,
			"partition", p, "offset", off, "pause", dlqPause, "err", err)
	}
}

// setHWM records the latest high-water mark of partition p.
func (s *Subscriber) setHWM(p int, hwm int64) {
	s.mu.Lock()
	if p < len(s.parts) && hwm >= 0 {
		s.parts[p].hwm = hwm
	}
	s.mu.Unlock()
}

// chunk is what one fetch of one partition yields in the streaming phase.
type chunk struct {
	p       int
	changes []change
	next    int64
}

// stream follows every partition from next and hands changes to h until
// ctx ends.
func (s *Subscriber) stream(ctx context.Context, h Handler, next []int64) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan chunk, 4*len(next))
	var wg sync.WaitGroup
	for p := range next {
		wg.Go(func() { s.follow(ctx, p, next[p], ch) })
	}
	wg.Go(func() {
		s.watchPartitions(ctx, len(next), func(p int) {
			wg.Go(func() { s.follow(ctx, p, 0, ch) })
		})
	})
	s.dispatch(ctx, h, ch)
	cancel()
	wg.Wait()
	// Commit what was handed over, past the end of ctx.
	cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer ccancel()
	s.commit(cctx)
}

// watchPartitions checks the topic's partition count every
// PartitionCheckInterval and calls start for every partition added since,
// so that decisions produced to it are not missed. (Adding partitions to a
// keyed topic moves keys between partitions: Kafka advises against it, and
// a rebuild cannot order one key's messages across two partitions.)
func (s *Subscriber) watchPartitions(ctx context.Context, have int, start func(p int)) {
	t := time.NewTicker(s.cfg.PartitionCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.partitionCount(ctx)
		if err != nil || n <= have {
			continue
		}
		s.log.Warn("partitions added to the topic; following them", "partitions", n, "was", have)
		s.mu.Lock()
		for range n - have {
			s.parts = append(s.parts, partState{committed: -1})
		}
		s.mu.Unlock()
		for p := have; p < n; p++ {
			start(p)
		}
		have = n
	}
}

// follow fetches partition p from off forever and sends what it reads to ch.
func (s *Subscriber) follow(ctx context.Context, p int, off int64, ch chan<- chunk) {
	dc := newDecoder(s.cfg.Limits)
	bad := 0 // responses in a row whose records could not be read
	for ctx.Err() == nil {
		res, err := s.fetch(ctx, p, off)
		if errors.Is(err, kafka.OffsetOutOfRange) {
			off = s.resetOffset(ctx, p, off)
			continue
		}
		if err != nil {
			return // ctx ended
		}
		var cs []change
		newOff, err := s.readRecords(ctx, dc, p, off, res, func(c change) { cs = append(cs, c) })
		s.setHWM(p, res.HighWatermark)
		if err != nil {
			s.fetchErrors.Add(1)
			if bad == 0 {
				s.log.Warn("reading fetched records failed, fetching again", "partition", p, "offset", off, "err", err)
			}
			if !s.sleep(ctx, bad) {
				return
			}
			bad++
			continue
		}
		bad = 0
		if newOff == off {
			if res.HighWatermark > off {
				newOff = off + 1
			} else {
				continue
			}
		}
		off = newOff
		select {
		case ch <- chunk{p: p, changes: cs, next: off}:
		case <-ctx.Done():
			return
		}
	}
}

// resetOffset handles an offset outside the log: the subscriber goes back
// to the earliest offset and reads again, which is harmless because
// applying a decision twice is.
func (s *Subscriber) resetOffset(ctx context.Context, p int, off int64) int64 {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		res, err := s.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{
			Topics: map[string][]kafka.OffsetRequest{s.cfg.Topic: {kafka.FirstOffsetOf(p)}},
		})
		if err == nil {
			for _, po := range res.Topics[s.cfg.Topic] {
				if po.Partition == p && po.Error == nil {
					s.log.Warn("offset outside the log, reading again from the earliest offset",
						"partition", p, "offset", off, "earliest", po.FirstOffset)
					return po.FirstOffset
				}
			}
		}
		if !s.sleep(ctx, attempt) {
			break
		}
	}
	return off
}

// dispatch hands chunks to h.Changes in batches, in arrival order (so in
// partition order), and commits offsets every CommitInterval.
func (s *Subscriber) dispatch(ctx context.Context, h Handler, ch <-chan chunk) {
	tick := time.NewTicker(s.cfg.CommitInterval)
	defer tick.Stop()
	var (
		batch []Decision
		pend  []chunk
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.commit(ctx)
			continue
		case c := <-ch:
			pend = append(pend[:0], c)
		}
		n := len(pend[0].changes)
	more:
		for n < s.cfg.MaxBatch {
			select {
			case c := <-ch:
				pend = append(pend, c)
				n += len(c.changes)
			default:
				break more
			}
		}
		batch = batch[:0]
		for _, c := range pend {
			for i := range c.changes {
				batch = append(batch, c.changes[i].d)
			}
		}
		if len(batch) > 0 && !s.retry(ctx, "changes", func() error { return h.Changes(ctx, batch) }) {
			return
		}
		s.mu.Lock()
		for _, c := range pend {
			for i := range c.changes {
				if c.changes[i].del {
					s.live.del(c.changes[i].value)
				} else {
					s.live.add(c.changes[i].value)
				}
			}
			s.parts[c.p].next = c.next
		}
		s.mu.Unlock()
	}
}

// commit commits the handed-over offsets of every partition that moved
// since the last commit, under the lag-reporting group.
func (s *Subscriber) commit(ctx context.Context) {
	if s.cfg.Group == "-" {
		return
	}
	s.mu.Lock()
	var cs []kafka.OffsetCommit
	for p, st := range s.parts {
		if st.next != st.committed {
			cs = append(cs, kafka.OffsetCommit{Partition: p, Offset: st.next})
		}
	}
	s.mu.Unlock()
	if len(cs) == 0 {
		return
	}
	res, err := s.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
		GroupID:      s.cfg.Group,
		GenerationID: -1,
		Topics:       map[string][]kafka.OffsetCommit{s.cfg.Topic: cs},
	})
	if err != nil {
		s.log.Debug("offset commit failed; next one will retry", "group", s.cfg.Group, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pc := range res.Topics[s.cfg.Topic] {
		if pc.Error != nil {
			s.log.Debug("offset commit refused", "group", s.cfg.Group, "partition", pc.Partition, "err", pc.Error)
			continue
		}
		for _, c := range cs {
			if c.Partition == pc.Partition && pc.Partition < len(s.parts) {
				s.parts[pc.Partition].committed = c.Offset
			}
		}
	}
}

// liveSet is the live set under construction: the latest add per key.
// Values are unique across scopes (a range holds a '/', an address none),
// so the value identifies the key. The index maps a 64-bit hash of the
// value to its slot, which costs a third of a map keyed by string; the
// rare value whose hash collides with another's goes to spill.
type liveSet struct {
	mu    sync.Mutex
	seed  maphash.Seed
	idx   map[uint64]int32
	spill map[string]int32
	slots []Decision
	free  []int32
	// hashFn replaces the hash in tests that force collisions.
	hashFn func(string) uint64
}

func newLiveSet(capHint int) *liveSet {
	return &liveSet{
		seed:  maphash.MakeSeed(),
		idx:   make(map[uint64]int32, capHint),
		spill: map[string]int32{},
		slots: make([]Decision, 0, capHint),
	}
}

func (l *liveSet) hash(value string) uint64 {
	if l.hashFn != nil {
		return l.hashFn(value)
	}
	return maphash.String(l.seed, value)
}

// apply applies one change. Changes of one partition come in order;
// partitions share no key, so their interleaving does not matter.
func (l *liveSet) apply(c change) {
	h := l.hash(c.value)
	l.mu.Lock()
	defer l.mu.Unlock()
	slot, taken := l.idx[h]
	inIdx := taken && l.slots[slot].Value == c.value // else another value has this hash
	inSpill := false
	if !inIdx && len(l.spill) > 0 {
		slot, inSpill = l.spill[c.value]
	}
	switch {
	case c.del && inIdx:
		delete(l.idx, h)
	case c.del && inSpill:
		delete(l.spill, c.value)
	case c.del:
		return
	case inIdx || inSpill:
		l.slots[slot] = c.d
		return
	default:
		if n := len(l.free); n > 0 {
			slot = l.free[n-1]
			l.free = l.free[:n-1]
			l.slots[slot] = c.d
		} else {
			slot = int32(len(l.slots))
			l.slots = append(l.slots, c.d)
		}
		if taken {
			l.spill[c.value] = slot
		} else {
			l.idx[h] = slot
		}
		return
	}
	l.slots[slot] = Decision{}
	l.free = append(l.free, slot)
}

// handOver drops the free slots and the adds expired at now, and returns
// the live decisions. What is left is a set of the hashes of the live
// keys, which the subscriber keeps to count them.
func (l *liveSet) handOver(now time.Time) ([]Decision, keySet) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.slots[:0]
	for i := range l.slots {
		d := &l.slots[i]
		if d.ID == "" {
			continue
		}
		if d.Expired(now) {
			if _, ok := l.spill[d.Value]; ok {
				delete(l.spill, d.Value)
			} else {
				delete(l.idx, l.hash(d.Value))
			}
			continue
		}
		out = append(out, *d)
	}
	clear(l.slots[len(out):])
	for v := range l.spill {
		l.idx[l.hash(v)] = 0
	}
	keys := keySet{hash: l.hash, m: l.idx}
	l.slots, l.free, l.idx, l.spill = nil, nil, nil, nil
	return out, keys
}

// keySet is the set of live keys after the snapshot, by 64-bit hash of
// the value; it only feeds the live gauge, where a collision in a million
// keys (odds about 1 in 10^7) would be an off-by-one.
type keySet struct {
	hash func(string) uint64
	m    map[uint64]int32
}

func (k keySet) add(v string) { k.m[k.hash(v)] = 0 }
func (k keySet) del(v string) { delete(k.m, k.hash(v)) }
func (k keySet) len() int     { return len(k.m) }

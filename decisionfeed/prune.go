package decisionfeed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// PrunerConfig configures a Pruner. Zero fields take the defaults given
// beside them.
type PrunerConfig struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string
	// Topic is the decisions topic (default TopicDecisions).
	Topic string
	// Limits validate every message (default DefaultLimits()).
	Limits Limits
	// DryRun counts what would be tombstoned and writes nothing.
	DryRun bool
	// FetchMaxBytes is the most bytes asked for in one fetch (default 4 MiB).
	FetchMaxBytes int
	// ClientID names this client to the brokers (default "portcullis-prune").
	ClientID string
	// Now is the clock that decides what has expired (default time.Now).
	Now func() time.Time
}

// PruneStats counts what one pruning pass saw and did.
type PruneStats struct {
	// Records is the number of records read.
	Records int64
	// Live is the number of keys whose latest record is an add in force.
	Live int
	// Expired is the number of keys tombstoned because their latest
	// record is an add that has expired (would be, with DryRun).
	Expired int
	// Deleted is the number of keys tombstoned because their latest
	// record is a delete (would be, with DryRun).
	Deleted int
	// Invalid is the number of keys left alone because their latest
	// record failed validation.
	Invalid int
	// Republished is the number of records written again because they
	// arrived between the read and the tombstone of their key.
	Republished int
}

// Add adds o to s.
func (s *PruneStats) Add(o PruneStats) {
	s.Records += o.Records
	s.Live += o.Live
	s.Expired += o.Expired
	s.Deleted += o.Deleted
	s.Invalid += o.Invalid
	s.Republished += o.Republished
}

// Pruner writes tombstones (records with a nil value) for the keys of the
// decisions topic whose latest record is a delete or an expired add, so
// that compaction drops their history and a bouncer's rebuild reads only
// the live set.
//
// Kafka has no conditional write, so a decision published for a key after
// the pruner read the key and before its tombstone landed would be
// withdrawn by that tombstone. The pruner therefore reads on past its own
// tombstones and writes such a record again after the tombstone: a
// follower sees the decision withdrawn and restored within one pass, and
// compaction keeps it.
type Pruner struct {
	cfg    PrunerConfig
	tr     *kafka.Transport
	client *kafka.Client
}

// NewPruner checks cfg and returns a pruner. It does not connect.
func NewPruner(cfg PrunerConfig) (*Pruner, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("pruner: no brokers")
	}
	if cfg.Topic == "" {
		cfg.Topic = TopicDecisions
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits()
	}
	if cfg.FetchMaxBytes <= 0 {
		cfg.FetchMaxBytes = 4 << 20
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "portcullis-prune"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tr := &kafka.Transport{ClientID: cfg.ClientID, MetadataTTL: 5 * time.Second, DialTimeout: 3 * time.Second}
	return &Pruner{cfg: cfg, tr: tr, client: &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr}}, nil
}

// Close releases the pruner's connections.
func (pr *Pruner) Close() { pr.tr.CloseIdleConnections() }

// Partitions returns the partition count of the topic.
func (pr *Pruner) Partitions(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	md, err := pr.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{pr.cfg.Topic}})
	if err != nil {
		return 0, fmt.Errorf("metadata of %s: %w", pr.cfg.Topic, err)
	}
	for _, t := range md.Topics {
		if t.Name != pr.cfg.Topic {
			continue
		}
		if t.Error != nil {
			return 0, fmt.Errorf("metadata of %s: %w", pr.cfg.Topic, t.Error)
		}
		if len(t.Partitions) == 0 {
			return 0, fmt.Errorf("metadata of %s: no partitions", pr.cfg.Topic)
		}
		return len(t.Partitions), nil
	}
	return 0, fmt.Errorf("metadata of %s: topic not found", pr.cfg.Topic)
}

// Once prunes every partition one time: it reads each to its high-water
// mark, tombstones the dead keys, then reads past its own tombstones to
// write again what raced with them.
func (pr *Pruner) Once(ctx context.Context) (PruneStats, error) {
	n, err := pr.Partitions(ctx)
	if err != nil {
		return PruneStats{}, err
	}
	var (
		mu    sync.Mutex
		total PruneStats
		errs  []error
		wg    sync.WaitGroup
	)
	for p := range n {
		wg.Go(func() {
			pp := pr.Partition(p)
			st, err := pp.Pass(ctx)
			if err == nil && !pr.cfg.DryRun {
				var settle PruneStats
				settle, err = pp.settle(ctx)
				st.Records += settle.Records
				st.Republished += settle.Republished
			}
			mu.Lock()
			defer mu.Unlock()
			total.Add(st)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

// PartitionPruner prunes one partition incrementally: each Pass reads only
// what was written since the last one and keeps the state of every key in
// memory between passes.
type PartitionPruner struct {
	pr   *Pruner
	p    int
	next int64 // next offset to read; -1 before the first pass
	keys map[string]keyState
	// pending holds the offset of each tombstone written and not read back yet.
	pending map[string]int64
	// raced holds, per pending key, the latest record that landed before its tombstone.
	raced map[string]rawRecord
}

// keyState is what the latest record of a key says.
type keyState struct {
	until int64 // add: expiry in unix milliseconds
	kind  uint8
}

// The kinds of keyState.
const (
	kindAdd uint8 = iota
	kindDelete
	kindInvalid
)

// rawRecord is a record to write again as it was.
type rawRecord struct {
	key, value []byte
}

// Partition returns a pruner for partition p that starts at its earliest offset.
func (pr *Pruner) Partition(p int) *PartitionPruner {
	return &PartitionPruner{pr: pr, p: p, next: -1, keys: map[string]keyState{},
		pending: map[string]int64{}, raced: map[string]rawRecord{}}
}

// Pass reads the partition up to its high-water mark, writes the records
// that raced with earlier tombstones again, and tombstones every key whose
// latest record is a delete or an add expired at Now.
func (pp *PartitionPruner) Pass(ctx context.Context) (PruneStats, error) {
	st, err := pp.settle(ctx)
	if err != nil {
		return st, err
	}
	now := pp.pr.cfg.Now().UnixMilli()
	var dead []string
	for k, s := range pp.keys {
		switch {
		case s.kind == kindInvalid:
			st.Invalid++
		case s.kind == kindDelete:
			st.Deleted++
			dead = append(dead, k)
		case s.until <= now:
			st.Expired++
			dead = append(dead, k)
		default:
			st.Live++
		}
	}
	if pp.pr.cfg.DryRun || len(dead) == 0 {
		return st, nil
	}
	const chunk = 4096
	// When the tombstones land right after what was read, nothing can have
	// raced with them and they need not be read back.
	expect, contiguous := pp.next, true
	for i := 0; i < len(dead); i += chunk {
		keys := dead[i:min(i+chunk, len(dead))]
		recs := make([]kafka.Record, len(keys))
		for j, k := range keys {
			recs[j] = kafka.Record{Key: kafka.NewBytes([]byte(k))}
		}
		base, err := pp.produce(ctx, recs)
		if err != nil {
			return st, fmt.Errorf("tombstone %d keys: %w", len(keys), err)
		}
		for j, k := range keys {
			delete(pp.keys, k)
			pp.pending[k] = base + int64(j)
		}
		contiguous = contiguous && base == expect
		expect = base + int64(len(keys))
	}
	if contiguous {
		pp.next = expect
		clear(pp.pending)
	}
	return st, nil
}

// settle reads the partition to its high-water mark and writes again the
// records that raced with this pruner's tombstones.
func (pp *PartitionPruner) settle(ctx context.Context) (PruneStats, error) {
	var st PruneStats
	first, last, err := pp.offsets(ctx)
	if err != nil {
		return st, err
	}
	if pp.next < first {
		pp.next = first
	}
	dc := newDecoder(pp.pr.cfg.Limits)
	for pp.next < last {
		n, err := pp.read(ctx, dc, last)
		st.Records += n
		if err != nil {
			return st, err
		}
	}
	if len(pp.raced) == 0 {
		return st, nil
	}
	recs := make([]kafka.Record, 0, len(pp.raced))
	for k, r := range pp.raced {
		recs = append(recs, kafka.Record{Key: kafka.NewBytes(r.key), Value: kafka.NewBytes(r.value)})
		delete(pp.raced, k)
	}
	if _, err := pp.produce(ctx, recs); err != nil {
		return st, fmt.Errorf("write %d raced records again: %w", len(recs), err)
	}
	st.Republished = len(recs)
	return st, nil
}

// offsets returns the earliest offset and the high-water mark of the partition.
func (pp *PartitionPruner) offsets(ctx context.Context) (first, last int64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	topic := pp.pr.cfg.Topic
	res, err := pp.pr.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.FirstOffsetOf(pp.p), kafka.LastOffsetOf(pp.p)},
	}})
	if err != nil {
		return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", topic, pp.p, err)
	}
	for _, po := range res.Topics[topic] {
		if po.Partition != pp.p {
			continue
		}
		if po.Error != nil {
			return 0, 0, fmt.Errorf("list offsets of %s/%d: %w", topic, pp.p, po.Error)
		}
		return po.FirstOffset, po.LastOffset, nil
	}
	return 0, 0, fmt.Errorf("list offsets of %s/%d: no answer", topic, pp.p)
}

// read fetches once from pp.next and applies what it got, up to end. It
// returns the number of records read.
func (pp *PartitionPruner) read(ctx context.Context, dc *decoder, end int64) (int64, error) {
	topic := pp.pr.cfg.Topic
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := pp.pr.client.Fetch(fctx, &kafka.FetchRequest{
		Topic: topic, Partition: pp.p, Offset: pp.next,
		MinBytes: 1, MaxBytes: int64(pp.pr.cfg.FetchMaxBytes), MaxWait: 100 * time.Millisecond,
	})
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err != nil {
		return 0, fmt.Errorf("fetch %s/%d at %d: %w", topic, pp.p, pp.next, err)
	}
	start := pp.next
	var n int64
	for {
		r, err := res.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("read %s/%d near %d: %w", topic, pp.p, pp.next, err)
		}
		if r.Offset < pp.next || r.Offset >= end {
			closeBytes(r)
			continue
		}
		pp.next = r.Offset + 1
		n++
		if err := pp.apply(dc, r); err != nil {
			return n, fmt.Errorf("read %s/%d@%d: %w", topic, pp.p, r.Offset, err)
		}
	}
	if pp.next == start && res.HighWatermark > start {
		// Nothing readable at next (a transaction marker, say), yet the
		// log goes on: step past it.
		pp.next++
	}
	return n, nil
}

// apply records what one record says about its key.
func (pp *PartitionPruner) apply(dc *decoder, r *protocol.Record) error {
	key, err := readAll(r.Key)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	tombstone := r.Value == nil
	val, err := readAll(r.Value)
	if err != nil {
		return fmt.Errorf("value: %w", err)
	}
	if key == nil {
		return nil // not a decision; the subscriber sends it to the DLQ
	}
	k := string(key)
	if off, ok := pp.pending[k]; ok {
		switch {
		case r.Offset < off:
			// Written after this pruner's read and before its tombstone.
			if tombstone {
				delete(pp.raced, k)
			} else {
				pp.raced[k] = rawRecord{key: key, value: val}
			}
			return nil
		case r.Offset == off:
			delete(pp.pending, k)
			return nil
		default:
			delete(pp.pending, k) // the tombstone was lost; read on normally
		}
	}
	if tombstone {
		delete(pp.keys, k)
		return nil
	}
	d, err := dc.decode(val)
	switch {
	case err != nil:
		pp.keys[k] = keyState{kind: kindInvalid}
	case d.Op == OpDelete:
		pp.keys[k] = keyState{kind: kindDelete}
	default:
		pp.keys[k] = keyState{kind: kindAdd, until: d.Until.UnixMilli()}
	}
	return nil
}

// produce writes recs to the partition and returns the offset of the first.
func (pp *PartitionPruner) produce(ctx context.Context, recs []kafka.Record) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := pp.pr.client.Produce(ctx, &kafka.ProduceRequest{
		Topic: pp.pr.cfg.Topic, Partition: pp.p, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(recs...),
	})
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err != nil {
		return 0, fmt.Errorf("produce to %s/%d: %w", pp.pr.cfg.Topic, pp.p, err)
	}
	return res.BaseOffset, nil
}

// readAll returns the bytes of b (nil for a null) and closes it.
func readAll(b protocol.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close() //nolint:errcheck // kafka-go's page ref closes with nil
	out := make([]byte, b.Len())
	if _, err := io.ReadFull(b, out); err != nil {
		return nil, err
	}
	return out, nil
}

// closeBytes hands a skipped record's buffers back to kafka-go.
func closeBytes(r *protocol.Record) {
	if r.Key != nil {
		_ = r.Key.Close()
	}
	if r.Value != nil {
		_ = r.Value.Close()
	}
}

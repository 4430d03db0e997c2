package decisionfeed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

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

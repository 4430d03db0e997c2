package decisionfeed

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

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
	ref := dlqRef{p: int32(p), off: off}
	if !s.dlqCopies.claim(ref) {
		s.dlqSkipped.Add(1)
		return // a copy is there already, made by this or another bouncer
	}
	if time.Now().UnixNano() < s.dlqPausedUntil.Load() {
		s.dlqCopies.release(ref)
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
		s.dlqCopies.release(ref)
		s.dlqErrors.Add(1)
		s.dlqPausedUntil.Store(time.Now().Add(dlqPause).UnixNano())
		s.log.Error("copy to the dead-letter topic failed; no copies for a while", "dlq", s.cfg.DLQTopic,
			"partition", p, "offset", off, "pause", dlqPause, "err", err)
	}
}

// dlqRef names a record of the decisions topic by partition and offset.
type dlqRef struct {
	p   int32
	off int64
}

// dlqMaxRemembered bounds the copies remembered (16 bytes each): past it,
// a record may be copied again after a restart, never lost.
const dlqMaxRemembered = 1 << 20

// dlqSet is the set of records of the decisions topic that have a copy on
// the DLQ. Every bouncer rejects every bad record and would copy it each
// time it starts; instead it reads the (small) DLQ once at start, notes
// which source records are there (from the source headers of the copies),
// and copies only the others. Limits: two bouncers that reject one record
// within the moment between one's start and the other's copy both copy it;
// a copy that the DLQ's retention deleted is made again by the next bouncer
// to start; a DLQ that cannot be read at start leaves the set empty (the
// copies are then made, as before).
type dlqSet struct {
	mu   sync.Mutex
	refs map[dlqRef]struct{}
}

// claim reports whether ref has no copy yet, and marks it as having one.
func (d *dlqSet) claim(ref dlqRef) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.refs[ref]; ok {
		return false
	}
	if d.refs == nil {
		d.refs = map[dlqRef]struct{}{}
	}
	if len(d.refs) < dlqMaxRemembered {
		d.refs[ref] = struct{}{}
	}
	return true
}

// release forgets ref after its copy failed.
func (d *dlqSet) release(ref dlqRef) {
	d.mu.Lock()
	delete(d.refs, ref)
	d.mu.Unlock()
}

// loadDLQ reads the DLQ topic from its earliest offsets up to its
// high-water marks and claims every source record of the decisions topic
// it holds a copy of. It gives up, with the copies found so far, after
// dlqLoadTimeout.
func (s *Subscriber) loadDLQ(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, dlqLoadTimeout)
	defer cancel()
	topic := s.cfg.DLQTopic
	n, err := s.partitionCountOf(ctx, topic)
	if err != nil {
		return err
	}
	first, last, err := s.offsetsOf(ctx, topic, n)
	if err != nil {
		return err
	}
	for p := range n {
		for off := first[p]; off < last[p]; {
			res, err := s.client.Fetch(ctx, &kafka.FetchRequest{
				Topic: topic, Partition: p, Offset: off, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond,
			})
			if err == nil && res.Error != nil {
				err = res.Error
			}
			if err != nil {
				return fmt.Errorf("read %s/%d at %d: %w", topic, p, off, err)
			}
			next := off
			err = eachRecord(res.Records, func(r *protocol.Record) error {
				next = max(next, r.Offset+1)
				if r.Key != nil {
					_ = r.Key.Close() // nothing to lose: the key is not read
				}
				if r.Value != nil {
					_ = r.Value.Close()
				}
				if ref, ok := s.dlqSource(r.Headers); ok {
					s.dlqCopies.claim(ref)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("read %s/%d at %d: %w", topic, p, off, err)
			}
			if next == off {
				next = off + 1 // nothing readable at off, yet the log goes on
			}
			off = next
		}
	}
	return nil
}

// dlqLoadTimeout bounds the read of the DLQ at start.
const dlqLoadTimeout = 10 * time.Second

// dlqSource returns the source record a DLQ copy's headers name, when it
// is a record of this subscriber's topic.
func (s *Subscriber) dlqSource(hs []kafka.Header) (dlqRef, bool) {
	var (
		topic   string
		p, off  int64
		np, nof bool
	)
	for _, h := range hs {
		var err error
		switch h.Key {
		case HeaderSourceTopic:
			topic = string(h.Value)
		case HeaderSourcePartition:
			p, err = strconv.ParseInt(string(h.Value), 10, 32)
			np = err == nil
		case HeaderSourceOffset:
			off, err = strconv.ParseInt(string(h.Value), 10, 64)
			nof = err == nil
		}
	}
	if topic != s.cfg.Topic || !np || !nof {
		return dlqRef{}, false
	}
	return dlqRef{p: int32(p), off: off}, true
}

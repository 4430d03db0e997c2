package decisionfeed

import (
	"context"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
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

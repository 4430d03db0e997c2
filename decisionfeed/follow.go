package decisionfeed

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

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

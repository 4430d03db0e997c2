package decisionfeed

import (
	"context"
	"sync"
)

// rebuild reads every partition from its earliest offset up to the
// high-water mark taken at start into the set of standing decisions, which
// it keeps, and returns the next offset of each partition.
func (s *Subscriber) rebuild(ctx context.Context) ([]int64, error) {
	n, err := s.partitionCount(ctx)
	if err != nil {
		return nil, err
	}
	first, last, err := s.offsets(ctx, n)
	if err != nil {
		return nil, err
	}
	var total int64
	for p := range n {
		total += last[p] - first[p]
	}
	set := newStandingSet(int(min(total, 1<<22)), s.cfg.Accept)
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
		return nil, firstErr
	}
	set.mu.Lock()
	set.sweep(s.cfg.Now().UnixNano())
	set.mu.Unlock()
	s.mu.Lock()
	s.set = set
	for p := range n {
		s.parts[p].next = next[p]
	}
	s.mu.Unlock()
	return next, nil
}

// rebuildBatch is how many changes a partition's reader puts into the set
// under one lock.
const rebuildBatch = 1024

// readUpTo reads partition p from offset from until the offset reaches
// end, applying each message to set, and returns the next offset.
func (s *Subscriber) readUpTo(ctx context.Context, p int, from, end int64, set *standingSet) (int64, error) {
	off := from
	dc := newDecoder(s.cfg.Limits)
	// Changes go into the shared set a batch per lock: one lock per
	// message makes the partitions' readers queue on it, parking and
	// waking a million times, which on a busy machine costs more wall time
	// than the work.
	batch := make([]change, 0, rebuildBatch)
	flush := func() {
		set.mu.Lock()
		for i := range batch {
			_, _, noop := set.put(&batch[i])
			s.count(&batch[i], noop)
		}
		set.mu.Unlock()
		clear(batch) // let the decisions' strings go
		batch = batch[:0]
	}
	apply := func(c *change) {
		batch = append(batch, *c)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	for off < end {
		res, err := s.fetch(ctx, p, off)
		if err != nil {
			return off, err
		}
		newOff, err := s.readRecords(ctx, dc, p, off, res, apply)
		flush()
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

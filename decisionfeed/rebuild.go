package decisionfeed

import (
	"context"
	"sync"
)

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

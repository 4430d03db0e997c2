package scenario

import (
	"hash/maphash"
	"net/netip"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// Overflow is a bucket that overflowed (or a trigger that fired).
type Overflow struct {
	Scenario *Scenario
	// Source is the address of the event that overflowed the bucket.
	Source netip.Addr
	// Group is the groupby value; empty when grouping by source address.
	Group string
	// Events is the number of events counted in the bucket.
	Events int
	// First and Last are the event times of the first and last counted event.
	First, Last time.Time
}

// Options bound a Set's memory.
type Options struct {
	// MaxBuckets is the most buckets one scenario keeps; when full, one
	// not updated lately is dropped (CLOCK, an approximation of least
	// recently updated). Zero means DefaultMaxBuckets.
	MaxBuckets int
}

// DefaultMaxBuckets is the per-scenario bucket bound used when none is set.
const DefaultMaxBuckets = 100_000

// Stats counts a Set's work.
type Stats struct {
	Events    uint64 // events offered
	Matched   uint64 // (event, scenario) filter matches
	Overflows uint64
	Silenced  uint64 // matches dropped by a blackhole
	Evicted   uint64 // live buckets dropped to respect MaxBuckets
	Buckets   int    // buckets held now, all scenarios
}

// Set runs scenarios over events. It is not safe for concurrent use: feed
// it from one goroutine (shard by source address to use more cores).
type Set struct {
	st     *evalState
	byType map[string][]*runner
	any    []*runner // scenarios whose filter names no event type
	all    []*runner
	hubs   []*runner // hub-format scenarios, for reprocessed overflows
	stats  Stats
}

// NewSet prepares the scenarios to run. The order of scs is the order
// overflows of one event are reported in (see Sort).
func NewSet(scs []*Scenario, opt Options) *Set {
	max := opt.MaxBuckets
	if max <= 0 {
		max = DefaultMaxBuckets
	}
	s := &Set{byType: map[string][]*runner{}}
	lits := newLiterals()
	for _, sc := range scs {
		r := &runner{sc: sc, store: newStore(max)}
		if sc.Hub {
			r.filter = hubFilter(sc.hub)
			r.hub = newHubRunner(max)
			s.hubs = append(s.hubs, r)
		} else {
			r.filter = compile(sc.filter, lits)
		}
		s.all = append(s.all, r)
		if sc.types == nil {
			s.any = append(s.any, r)
		}
	}
	s.st = lits.build()
	// Per type, keep the scenarios in the given order, merging typed and
	// untyped ones.
	for _, r := range s.all {
		for _, t := range r.sc.types {
			s.byType[t] = nil
		}
	}
	for t := range s.byType {
		var list []*runner
		for _, r := range s.all {
			if r.sc.types == nil || contains(r.sc.types, t) {
				list = append(list, r)
			}
		}
		s.byType[t] = list
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Event offers one event to every scenario and appends the overflows it
// causes to out.
func (s *Set) Event(ev *event.Event, out []Overflow) []Overflow {
	s.stats.Events++
	runners, ok := s.byType[ev.Type]
	if !ok {
		runners = s.any
	}
	now := ev.Time.UnixNano()
	s.st.reset(ev)
	first := len(out)
	for _, r := range runners {
		if !r.filter(s.st) {
			continue
		}
		s.stats.Matched++
		if r.hub != nil {
			var res outcome
			out, res = r.hubPour(s.st, now, ev.Source, out)
			s.count(res)
			continue
		}
		var o Overflow
		res := r.pour(&s.st.ev, now, &o)
		s.count(res)
		if res == overflowed {
			out = append(out, o)
		}
	}
	if len(s.hubs) > 0 && len(out) > first {
		out = s.reprocess(now, out, first, 0)
	}
	return out
}

func (s *Set) count(res outcome) {
	switch res {
	case overflowed:
		s.stats.Overflows++
	case silenced:
		s.stats.Silenced++
	}
}

// maxReprocess bounds how many times an overflow may be reprocessed into
// further overflows.
const maxReprocess = 4

// reprocess offers the overflows out[from:] of scenarios marked reprocess
// to the hub scenarios as OVFLW events, as CrowdSec does.
func (s *Set) reprocess(now int64, out []Overflow, from, depth int) []Overflow {
	if depth >= maxReprocess {
		return out
	}
	end := len(out)
	for i := from; i < end; i++ {
		o := out[i]
		if !o.Scenario.Reprocess {
			continue
		}
		st := s.st
		st.hubEv = HubEvent{Type: "OVFLW", Time: o.Last}
		st.hubEv.Meta.SourceIP = o.Source.String()
		st.hubEv.Overflow.Alert = HubAlert{Scenario: o.Scenario.Name, EventsCount: o.Events}
		st.hubDone = true
		st.env.Evt = &st.hubEv
		for _, r := range s.hubs {
			if !r.filter(st) {
				continue
			}
			s.stats.Matched++
			var res outcome
			out, res = r.hubPour(st, now, o.Source, out)
			s.count(res)
		}
	}
	if len(out) > end {
		out = s.reprocess(now, out, end, depth+1)
	}
	return out
}

// Stats returns the counters and the number of buckets held.
func (s *Set) Stats() Stats {
	st := s.stats
	st.Buckets = 0
	for _, r := range s.all {
		st.Buckets += r.store.len()
		st.Evicted += r.store.evicted
	}
	return st
}

type outcome uint8

const (
	poured outcome = iota
	overflowed
	silenced
)

type runner struct {
	sc     *Scenario
	filter pred
	store  *store
	hub    *hubRunner // hub-format scenarios keep their own buckets
}

var distinctSeed = maphash.MakeSeed()

func (r *runner) pour(ev *event.Event, now int64, o *Overflow) outcome {
	sc := r.sc
	var k key
	if sc.groupBy != nil {
		// An empty group value would collide with address keys: give it
		// a name of its own.
		if k.s = sc.groupBy(ev); k.s == "" {
			k.s = "\x00empty"
		}
	} else {
		k.ip = ev.Source.As16()
	}
	st := r.store
	// Collect drained buckets so memory tracks live groups, not history.
	st.gc(now)
	b, _ := st.get(k, now)
	if now < b.last {
		now = b.last // time never runs backwards inside a bucket
	}
	if b.blackhole > now {
		return silenced
	}
	if sc.Type == Window {
		return r.windowPour(b, ev, now, o)
	}
	if sc.Type == Trigger {
		*o = Overflow{Scenario: sc, Source: ev.Source, Group: sc.group(k.s), Events: 1, First: ev.Time, Last: ev.Time}
		b.blackhole = now + int64(sc.Blackhole)
		b.last = now
		b.tat = now
		return overflowed
	}
	leak := int64(sc.LeakSpeed)
	if b.tat <= now {
		// The bucket has drained: start afresh.
		b.tat, b.first, b.count = now, now, 0
		b.resetDistinct()
	}
	if sc.distinct != nil {
		h := maphash.String(distinctSeed, sc.distinct(ev))
		if b.seen(h) {
			b.last = now
			return poured
		}
		b.remember(h)
	}
	b.tat += leak
	b.count++
	b.last = now
	if b.tat-now <= int64(sc.Capacity)*leak {
		return poured
	}
	*o = Overflow{Scenario: sc, Source: ev.Source, Group: sc.group(k.s), Events: int(b.count),
		First: time.Unix(0, b.first).UTC(), Last: ev.Time}
	b.tat, b.count = now, 0
	b.resetDistinct()
	b.blackhole = now + int64(sc.Blackhole)
	return overflowed
}

// windowPour counts ev in a window bucket: the events of the last Window
// are kept (times, and distinct hashes), and the Count-th of them
// overflows it. An event at t counts against earlier ones later than
// t-Window, so Count events spanning less than Window fire.
func (r *runner) windowPour(b *bucket, ev *event.Event, now int64, o *Overflow) outcome {
	sc := r.sc
	w := int64(sc.Window)
	// Drop events that left the window (they arrive in time order within
	// a bucket: now never runs backwards above). The live events are
	// win[wh:]; the slice is compacted once half of it is dead, so a
	// pour costs O(1) amortised.
	for int(b.wh) < len(b.win) && b.win[b.wh].t <= now-w {
		b.wh++
	}
	if int(b.wh) == len(b.win) {
		b.win, b.wh = b.win[:0], 0
	} else if int(b.wh) > len(b.win)/2 {
		n := copy(b.win, b.win[b.wh:])
		b.win, b.wh = b.win[:n], 0
	}
	var h uint64
	if sc.distinct != nil {
		h = maphash.String(distinctSeed, sc.distinct(ev))
		for _, e := range b.win[b.wh:] {
			if e.h == h {
				b.last = now
				return poured
			}
		}
	}
	b.win = append(b.win, winEntry{t: now, h: h})
	b.last = now
	b.tat = now + w // when the window will be empty again, for gc
	live := b.win[b.wh:]
	if len(live) < sc.Count {
		return poured
	}
	*o = Overflow{Scenario: sc, Source: ev.Source, Group: sc.group(b.k.s), Events: len(live),
		First: time.Unix(0, live[0].t).UTC(), Last: ev.Time}
	b.win, b.wh = b.win[:0], 0
	b.blackhole = now + int64(sc.Blackhole)
	return overflowed
}

// group returns the groupby value reported in an overflow.
func (s *Scenario) group(k string) string {
	if k == "\x00empty" {
		return ""
	}
	return k
}

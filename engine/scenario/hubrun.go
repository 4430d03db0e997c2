package scenario

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"
)

// Hub buckets follow CrowdSec's time-machine rules (pkg/leakybucket):
//   - the bucket key is the groupby value; without groupby one bucket holds
//     every matching event of the scenario;
//   - a bucket whose last event is older than its lifetime when an event
//     arrives is discarded first: (capacity+1)×leakspeed for leaky,
//     leakspeed for conditional, duration for counter;
//   - leaky: a token bucket of `capacity` tokens refilled one per leakspeed;
//     the event that finds no token overflows it (the C+1-th of a burst);
//   - trigger overflows on every event; counter on the first event after
//     its duration has passed (reporting the events it counted);
//     conditional on the event after which `condition` holds;
//   - distinct drops an event whose value the bucket has already counted;
//     cancel_on discards the bucket, and the event, when it matches;
//   - an overflow discards the bucket; blackhole then suppresses the
//     overflows of the same key for its duration;
//   - reprocess offers the overflow again to the hub scenarios as an
//     event of type OVFLW.

// hubMaxQueue bounds the events a conditional bucket keeps for its
// condition (CrowdSec's capacity -1 means unbounded).
const hubMaxQueue = 1024

// hubMaxSources bounds the distinct addresses one bucket reports.
const hubMaxSources = 16

type hubBucket struct {
	tat, first, last int64
	count            int
	distinct         map[string]struct{}
	queue            []*HubEvent
	// srcs are the sources of the events CrowdSec's queue would hold: the
	// last capacity+1 (a ring from shead), or all up to hubMaxSources
	// distinct for capacity -1. Buckets grouped by address need none.
	srcs  []netip.Addr
	shead int
	qmax  int
}

// hubKey names a hub bucket: the address when the scenario groups by
// evt.Meta.source_ip (the common case, with no string to build), else the
// groupby value.
type hubKey struct {
	ip netip.Addr
	s  string
}

type hubRunner struct {
	buckets   map[hubKey]*hubBucket
	blackhole map[hubKey]int64
	free      []*hubBucket
	max       int
	pours     int
	evicted   uint64
}

func newHubRunner(max int) *hubRunner {
	return &hubRunner{buckets: map[hubKey]*hubBucket{}, blackhole: map[hubKey]int64{}, max: max}
}

// lifetime is how long a bucket lives after its last event.
func (s *Scenario) lifetime() int64 {
	switch s.Type {
	case Leaky:
		return int64(s.Capacity+1) * int64(s.LeakSpeed)
	case Counter:
		return int64(s.Duration)
	}
	return int64(s.LeakSpeed)
}

func runBool(m *vm.VM, p *vm.Program, env *hubEnv) bool {
	out, err := m.Run(p, env)
	if err != nil {
		return false
	}
	b, _ := out.(bool)
	return b
}

func runString(m *vm.VM, p *vm.Program, env *hubEnv) string {
	out, err := m.Run(p, env)
	if err != nil {
		return ""
	}
	s, _ := out.(string)
	return s
}

// drop removes a bucket, keeping it for reuse.
func (h *hubRunner) drop(k hubKey, b *hubBucket) {
	delete(h.buckets, k)
	if len(h.free) < 1024 {
		h.free = append(h.free, b)
	}
}

// fresh returns an empty bucket, reusing a dropped one.
func (h *hubRunner) fresh(now int64, qmax int) *hubBucket {
	if n := len(h.free); n > 0 {
		b := h.free[n-1]
		h.free = h.free[:n-1]
		clear(b.distinct)
		clear(b.queue)
		*b = hubBucket{tat: now, first: now, qmax: qmax, distinct: b.distinct, queue: b.queue[:0], srcs: b.srcs[:0]}
		return b
	}
	return &hubBucket{tat: now, first: now, qmax: qmax}
}

// hubPour pours the set's current hub event into r's scenario. It appends
// to out one overflow per source address of an overflowing bucket.
func (r *runner) hubPour(st *evalState, now int64, src netip.Addr, out []Overflow) ([]Overflow, outcome) {
	sc, h := r.sc, r.hub
	env := &st.env
	var key hubKey
	switch {
	case sc.hub.groupByIP:
		key.ip = src
	case sc.hub.groupByNative != nil:
		st.hub()
		key.s = sc.hub.groupByNative.value(st)
	case sc.hub.groupBy != nil:
		st.hub()
		key.s = runString(&st.vm, sc.hub.groupBy, env)
	}
	h.pours++
	if h.pours > len(h.buckets)+1024 {
		h.sweep(sc, now)
	}
	b := h.buckets[key]
	if b != nil && now > b.last+sc.lifetime() {
		if sc.Type == Counter {
			out = h.overflow(sc, key, b, b.last, out)
		}
		h.drop(key, b)
		b = nil
	}
	if b == nil {
		if len(h.buckets) >= h.max {
			for k, old := range h.buckets {
				h.drop(k, old)
				h.evicted++
				break
			}
		}
		key.s = strings.Clone(key.s)
		b = h.fresh(now, sc.queueSize())
		h.buckets[key] = b
	}
	if sc.Type == Trigger {
		b.last = now
		b.count = 1
		b.addSource(src, sc.hub.groupByIP)
		n := len(out)
		out = h.overflow(sc, key, b, now, out)
		h.drop(key, b)
		if len(out) == n {
			return out, silenced
		}
		return out, overflowed
	}
	if sc.hub.distinct != nil {
		var v string
		if d := sc.hub.distinctNative; d != nil {
			st.hub()
			v = d.value(st)
		} else {
			st.hub()
			v = runString(&st.vm, sc.hub.distinct, env)
		}
		if b.distinct == nil {
			b.distinct = map[string]struct{}{}
		}
		if _, seen := b.distinct[v]; seen {
			return out, poured
		}
		b.distinct[strings.Clone(v)] = struct{}{}
	}
	if sc.hub.cancel != nil {
		st.hub()
		if runBool(&st.vm, sc.hub.cancel, env) {
			h.drop(key, b)
			return out, poured
		}
	}
	if now > b.last {
		b.last = now
	}
	b.count++
	b.addSource(src, sc.hub.groupByIP)
	over := false
	switch sc.Type {
	case Leaky:
		// Token bucket of Capacity tokens, one back per LeakSpeed: as a
		// theoretical arrival time, the event overflows when it would put
		// the bucket more than Capacity leaks ahead of now.
		leak := int64(sc.LeakSpeed)
		if b.tat < now {
			b.tat = now
		}
		if b.tat+leak-now > int64(sc.Capacity)*leak {
			over = true
		} else {
			b.tat += leak
		}
	case Conditional:
		cp := cloneHub(st.hub())
		max := hubMaxQueue
		if b.qmax > 0 && b.qmax < max {
			max = b.qmax
		}
		if len(b.queue) >= max {
			b.queue = append(b.queue[:0], b.queue[1:]...)
		}
		b.queue = append(b.queue, cp)
		q := HubQueue{Queue: b.queue, L: -1}
		env.Queue = &q
		over = runBool(&st.vm, sc.hub.cond, env)
		env.Queue = nil
	}
	if !over {
		return out, poured
	}
	n := len(out)
	out = h.overflow(sc, key, b, now, out)
	h.drop(key, b)
	if len(out) == n {
		return out, silenced
	}
	return out, overflowed
}

// queueSize is the number of events CrowdSec's bucket queue holds: one
// more than the capacity (its Queue.Add keeps L+1), or cache_size; -1
// for unbounded.
func (s *Scenario) queueSize() int {
	q := s.Capacity
	if s.CacheSize > 0 && (s.CacheSize <= q || q == -1) {
		q = s.CacheSize
	}
	if q < 0 {
		return -1
	}
	return q + 1
}

func (b *hubBucket) addSource(a netip.Addr, byIP bool) {
	if !a.IsValid() || (byIP && len(b.srcs) > 0) {
		return
	}
	if b.qmax < 0 {
		if len(b.srcs) < hubMaxSources && !slices.Contains(b.srcs, a) {
			b.srcs = append(b.srcs, a)
		}
		return
	}
	if len(b.srcs) < b.qmax {
		b.srcs = append(b.srcs, a)
		return
	}
	b.srcs[b.shead] = a
	b.shead = (b.shead + 1) % len(b.srcs)
}

// sources returns the distinct addresses of the queue, oldest first.
func (b *hubBucket) sources() []netip.Addr {
	var out []netip.Addr
	n := len(b.srcs)
	for i := range n {
		a := b.srcs[(b.shead+i)%n]
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// overflow applies the blackhole and appends the bucket's overflows.
func (h *hubRunner) overflow(sc *Scenario, key hubKey, b *hubBucket, at int64, out []Overflow) []Overflow {
	if sc.Blackhole > 0 {
		if until, ok := h.blackhole[key]; ok && until > at {
			return out
		}
		h.blackhole[key] = at + int64(sc.Blackhole)
	}
	for _, a := range b.sources() {
		out = append(out, Overflow{Scenario: sc, Source: a, Group: key.s, Events: b.count,
			First: time.Unix(0, b.first).UTC(), Last: time.Unix(0, at).UTC()})
	}
	return out
}

// sweep drops expired buckets and blackhole entries, so memory follows
// live groups. Counter buckets are kept until an event reports them.
func (h *hubRunner) sweep(sc *Scenario, now int64) {
	h.pours = 0
	life := sc.lifetime()
	for k, b := range h.buckets {
		if sc.Type != Counter && now-reorderSlack > b.last+life {
			h.drop(k, b)
		}
	}
	for k, until := range h.blackhole {
		if until < now-reorderSlack {
			delete(h.blackhole, k)
		}
	}
}

// cloneHub copies an event for a queue: its strings point into a read
// buffer that is reused.
func cloneHub(e *HubEvent) *HubEvent {
	c := *e
	m, p := &c.Meta, &c.Parsed
	for _, s := range []*string{&m.LogType, &m.Service, &m.SourceIP, &m.SubType, &m.HTTPStatus, &m.HTTPPath,
		&m.HTTPVerb, &m.HTTPUserAgent, &m.HTTPArgsLen, &m.TargetUser, &m.TargetFQDN, &m.Username, &m.Machine,
		&p.Verb, &p.Request, &p.HTTPArgs, &p.HTTPVersion, &p.Status, &p.BodyBytesSent, &p.HTTPReferer,
		&p.HTTPUserAgent, &p.RemoteAddr, &p.FileName, &p.FileExt, &p.FileDir, &p.FileFrag, &p.StaticRessource,
		&p.Program, &p.Message, &p.SSHDClientIP, &p.SSHDInvalidUser, &c.Line.Raw, &c.Line.Src} {
		*s = strings.Clone(*s)
	}
	return &c
}

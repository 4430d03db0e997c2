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
	// last capacity+1 (all, up to hubMaxSources distinct, for capacity -1).
	srcs []netip.Addr
	qmax int
}

type hubRunner struct {
	buckets   map[string]*hubBucket
	blackhole map[string]int64
	max       int
	pours     int
	evicted   uint64
}

func newHubRunner(max int) *hubRunner {
	return &hubRunner{buckets: map[string]*hubBucket{}, blackhole: map[string]int64{}, max: max}
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

// hubPour pours the set's current hub event into r's scenario. It appends
// to out one overflow per source address of an overflowing bucket.
func (r *runner) hubPour(st *evalState, now int64, src netip.Addr, out []Overflow) ([]Overflow, outcome) {
	sc, h := r.sc, r.hub
	env := &st.env
	key := ""
	if sc.hub.groupBy != nil {
		key = runString(&st.vm, sc.hub.groupBy, env)
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
		delete(h.buckets, key)
		b = nil
	}
	if b == nil {
		if len(h.buckets) >= h.max {
			for k := range h.buckets {
				delete(h.buckets, k)
				h.evicted++
				break
			}
		}
		key = strings.Clone(key)
		b = &hubBucket{tat: now, first: now, qmax: sc.queueSize()}
		h.buckets[key] = b
	}
	if sc.Type == Trigger {
		b.last = now
		b.count = 1
		b.addSource(src)
		n := len(out)
		out = h.overflow(sc, key, b, now, out)
		delete(h.buckets, key)
		if len(out) == n {
			return out, silenced
		}
		return out, overflowed
	}
	if sc.hub.distinct != nil {
		v := runString(&st.vm, sc.hub.distinct, env)
		if b.distinct == nil {
			b.distinct = map[string]struct{}{}
		}
		if _, seen := b.distinct[v]; seen {
			return out, poured
		}
		b.distinct[strings.Clone(v)] = struct{}{}
	}
	if sc.hub.cancel != nil && runBool(&st.vm, sc.hub.cancel, env) {
		delete(h.buckets, key)
		return out, poured
	}
	if now > b.last {
		b.last = now
	}
	b.count++
	b.addSource(src)
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
		ev := st.hubEv
		cp := cloneHub(&ev)
		if len(b.queue) >= hubMaxQueue {
			b.queue = b.queue[1:]
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
	delete(h.buckets, key)
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

func (b *hubBucket) addSource(a netip.Addr) {
	if !a.IsValid() {
		return
	}
	if b.qmax < 0 {
		if len(b.srcs) < hubMaxSources && !slices.Contains(b.srcs, a) {
			b.srcs = append(b.srcs, a)
		}
		return
	}
	if len(b.srcs) >= b.qmax {
		b.srcs = append(b.srcs[:0], b.srcs[1:]...)
	}
	b.srcs = append(b.srcs, a)
}

// sources returns the distinct addresses of the queue, in first-seen order.
func (b *hubBucket) sources() []netip.Addr {
	var out []netip.Addr
	for _, a := range b.srcs {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// overflow applies the blackhole and appends the bucket's overflows.
func (h *hubRunner) overflow(sc *Scenario, key string, b *hubBucket, at int64, out []Overflow) []Overflow {
	if sc.Blackhole > 0 {
		if until, ok := h.blackhole[key]; ok && until > at {
			return out
		}
		h.blackhole[strings.Clone(key)] = at + int64(sc.Blackhole)
	}
	for _, a := range b.sources() {
		out = append(out, Overflow{Scenario: sc, Source: a, Group: key, Events: b.count,
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
			delete(h.buckets, k)
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

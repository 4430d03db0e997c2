package runner

import (
	"net/netip"
	"sync"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// ActiveByOrigin returns the number of bans in force per origin.
func (r *Runner) ActiveByOrigin() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int)
	for k, n := range r.counts {
		out[k.origin] += n
	}
	return out
}

// sourceDrops turns per-ban drop counts (enforcer.Counters.ByPrefix) into
// totals per ban source that never go down: a ban's counter starts again
// from zero when its element is made anew (a restore, a delete and add),
// and what it had counted stays in the total.
type sourceDrops struct {
	mu     sync.Mutex
	last   map[netip.Prefix]enforcer.Count
	totals map[enforcer.Source]enforcer.Count
}

// DropsBySource reads the backend's drop counters and returns the packets
// and bytes dropped per origin and scenario of the bans, or nil when the
// backend does not count per ban (or holds too many bans to read them
// back). Each call reads the kernel.
func (r *Runner) DropsBySource() (map[enforcer.Source]enforcer.Count, error) {
	cr, ok := r.backend.(enforcer.CounterReader)
	if !ok {
		return nil, nil
	}
	c, err := cr.Counters()
	if err != nil {
		return nil, err
	}
	return r.bySource(c), nil
}

// bySource is DropsBySource for counters already read.
func (r *Runner) bySource(c enforcer.Counters) map[enforcer.Source]enforcer.Count {
	if c.BySource != nil {
		return c.BySource
	}
	if c.ByPrefix == nil {
		return nil
	}
	r.mu.Lock()
	srcs := make(map[netip.Prefix]enforcer.Source, len(c.ByPrefix))
	for p := range c.ByPrefix {
		if e, ok := r.active[p]; ok {
			srcs[p] = enforcer.Source{Origin: e.Origin, Scenario: e.Reason}
		}
	}
	r.mu.Unlock()

	d := &r.drops
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		d.last = map[netip.Prefix]enforcer.Count{}
		d.totals = map[enforcer.Source]enforcer.Count{}
	}
	for p, cur := range c.ByPrefix {
		src, ok := srcs[p]
		if !ok {
			// A ban withdrawn since: its last count is in the totals.
			continue
		}
		if src.Scenario == src.Origin {
			src.Scenario = ""
		}
		prev := d.last[p]
		delta := cur
		if cur.Packets >= prev.Packets && cur.Bytes >= prev.Bytes {
			delta = enforcer.Count{Packets: cur.Packets - prev.Packets, Bytes: cur.Bytes - prev.Bytes}
		}
		d.last[p] = cur
		t := d.totals[src]
		t.Packets += delta.Packets
		t.Bytes += delta.Bytes
		d.totals[src] = t
	}
	out := make(map[enforcer.Source]enforcer.Count, len(d.totals))
	for s, n := range d.totals {
		out[s] = n
	}
	return out
}

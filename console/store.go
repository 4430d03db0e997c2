package console

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gaissmai/bart"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/heartbeat"
)

// decisionStore is the console's copy of the standing decisions, kept by
// the feed subscriber (it is a decisionfeed.Handler). Entries live in a
// slice, and beside it a compact record per entry (expiry, interned origin
// and scenario, type) that filters scan without touching the decisions
// themselves; a prefix table finds the decisions overlapping an address
// or range without a scan. A delete moves the last entry into the hole.
type decisionStore struct {
	mu       sync.RWMutex
	entries  []entry
	compact  []compactRec
	index    map[string]int
	byPrefix bart.Table[[]string] // prefix -> keys standing on it
	origins  interner
	scenario interner
	ready    bool
	notify   func(kind string)
	now      func() time.Time
}

// entry is one standing decision and its parsed prefix.
type entry struct {
	d      decisionfeed.Decision
	prefix netip.Prefix
}

// compactRec is what a filter scan reads of an entry: 16 bytes.
type compactRec struct {
	until    int64 // unix seconds
	origin   uint16
	scenario uint16
	typ      decisionfeed.Type
}

// interner maps the few distinct origins or scenarios to small numbers.
// Past 65,535 names every new one shares the last number; a filter on
// such a name then compares the decisions themselves.
type interner struct {
	ids   map[string]uint16
	names []string
}

const overflowID = 0xffff

func (in *interner) id(s string) uint16 {
	if id, ok := in.ids[s]; ok {
		return id
	}
	if in.ids == nil {
		in.ids = map[string]uint16{}
	}
	if len(in.names) >= overflowID {
		return overflowID
	}
	id := uint16(len(in.names))
	in.ids[s] = id
	in.names = append(in.names, s)
	return id
}

func newDecisionStore(notify func(string), now func() time.Time) *decisionStore {
	return &decisionStore{index: map[string]int{}, notify: notify, now: now}
}

// Snapshot replaces the store with the live set.
func (s *decisionStore) Snapshot(_ context.Context, live []decisionfeed.Decision) error {
	s.mu.Lock()
	s.entries, s.compact = s.entries[:0], s.compact[:0]
	clear(s.index)
	s.byPrefix = bart.Table[[]string]{}
	for i := range live {
		s.putLocked(live[i])
	}
	s.ready = true
	s.mu.Unlock()
	s.notify("decisions")
	return nil
}

// Changes applies adds and deletes in order.
func (s *decisionStore) Changes(_ context.Context, changes []decisionfeed.Decision) error {
	s.mu.Lock()
	for _, d := range changes {
		if d.Op == decisionfeed.OpDelete {
			s.deleteLocked(d.Key())
			continue
		}
		s.putLocked(d)
	}
	s.mu.Unlock()
	s.notify("decisions")
	return nil
}

func (s *decisionStore) putLocked(d decisionfeed.Decision) {
	p, err := d.Prefix()
	if err != nil {
		return // the subscriber validated it; nothing to show otherwise
	}
	key := d.Key()
	e := entry{d: d, prefix: p}
	c := compactRec{until: d.Until.Unix(), origin: s.origins.id(d.Origin), scenario: s.scenario.id(d.Scenario), typ: d.Type}
	if i, ok := s.index[key]; ok {
		s.entries[i], s.compact[i] = e, c
		return
	}
	s.index[key] = len(s.entries)
	s.entries = append(s.entries, e)
	s.compact = append(s.compact, c)
	s.byPrefix.Modify(p, func(keys []string, _ bool) ([]string, bool) { return append(keys, key), false })
}

func (s *decisionStore) deleteLocked(key string) {
	i, ok := s.index[key]
	if !ok {
		return
	}
	p := s.entries[i].prefix
	s.byPrefix.Modify(p, func(keys []string, ok bool) ([]string, bool) {
		if j := slices.Index(keys, key); j >= 0 {
			keys = slices.Delete(keys, j, j+1)
		}
		return keys, len(keys) == 0
	})
	last := len(s.entries) - 1
	if i != last {
		s.entries[i], s.compact[i] = s.entries[last], s.compact[last]
		s.index[s.entries[i].d.Key()] = i
	}
	s.entries[last] = entry{}
	s.entries, s.compact = s.entries[:last], s.compact[:last]
	delete(s.index, key)
}

// decisionQuery filters the standing decisions. Zero fields match all.
type decisionQuery struct {
	// Prefix matches decisions whose prefix overlaps it: an address finds
	// the bans on it and on the ranges holding it, a range finds those
	// inside it and those holding it.
	Prefix   netip.Prefix
	Scenario string // substring
	Origin   string // exact
	Type     decisionfeed.Type
	Limit    int
}

// search returns up to q.Limit standing, unexpired decisions that match,
// the most recently received first, and how many match in all.
func (s *decisionStore) search(q decisionQuery) ([]decisionfeed.Decision, int) {
	now := s.now().Unix()
	s.mu.RLock()
	defer s.mu.RUnlock()
	// The interned names that pass the text filters, computed once.
	var scen []bool
	if q.Scenario != "" {
		scen = make([]bool, len(s.scenario.names))
		for i, n := range s.scenario.names {
			scen[i] = strings.Contains(n, q.Scenario)
		}
	}
	origin, originKnown := uint16(0), true
	if q.Origin != "" {
		origin, originKnown = s.origins.ids[q.Origin]
		if !originKnown {
			return nil, 0
		}
	}
	match := func(i int) bool {
		c := &s.compact[i]
		switch {
		case c.until <= now:
			return false
		case q.Type != "" && c.typ != q.Type:
			return false
		case q.Origin != "" && (c.origin != origin || origin == overflowID && s.entries[i].d.Origin != q.Origin):
			return false
		case scen != nil && (c.scenario == overflowID && !strings.Contains(s.entries[i].d.Scenario, q.Scenario) ||
			c.scenario != overflowID && !scen[c.scenario]):
			return false
		}
		return true
	}
	var out []decisionfeed.Decision
	total := 0
	take := func(i int) {
		if !match(i) {
			return
		}
		total++
		if len(out) < q.Limit {
			out = append(out, s.entries[i].d)
		}
	}
	if q.Prefix.IsValid() {
		var idx []int
		for _, it := range []func(yield func(netip.Prefix, []string) bool){s.byPrefix.Supernets(q.Prefix), s.byPrefix.Subnets(q.Prefix)} {
			// The query's own prefix is both a supernet and a subnet:
			// Compact below drops the repeat.
			for _, keys := range it {
				for _, k := range keys {
					idx = append(idx, s.index[k])
				}
			}
		}
		slices.Sort(idx)
		idx = slices.Compact(idx)
		for k := len(idx) - 1; k >= 0; k-- {
			take(idx[k])
		}
		return out, total
	}
	for i := len(s.compact) - 1; i >= 0; i-- {
		take(i)
	}
	return out, total
}

// counts returns the standing decisions by origin and by type.
func (s *decisionStore) counts() (byOrigin, byType map[string]int, total int) {
	now := s.now().Unix()
	s.mu.RLock()
	defer s.mu.RUnlock()
	perOrigin := make([]int, len(s.origins.names)+1)
	perType := map[decisionfeed.Type]int{}
	for i := range s.compact {
		c := &s.compact[i]
		if c.until <= now {
			continue
		}
		perOrigin[min(int(c.origin), len(s.origins.names))]++
		perType[c.typ]++
		total++
	}
	byOrigin, byType = map[string]int{}, map[string]int{}
	for i, n := range perOrigin {
		if n == 0 {
			continue
		}
		name := "(other)"
		if i < len(s.origins.names) && i != overflowID {
			name = s.origins.names[i]
		}
		byOrigin[name] += n
	}
	for t, n := range perType {
		byType[string(t)] = n
	}
	return byOrigin, byType, total
}

func (s *decisionStore) isReady() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ready
}

// alertStore keeps the latest alerts (a ring of cap entries) and running
// aggregates: per minute over the last day, per scenario and per country
// since start, per scenario per hour over the last day.
type alertStore struct {
	mu       sync.RWMutex
	ring     []storedAlert
	next     uint64 // sequence number of the next alert
	perMin   [minutesKept]int
	minuteAt [minutesKept]int64 // unix minute each perMin slot counts
	scenario map[string]int
	country  map[string]int
	hourly   map[string]*[24]hourCount
}

// storedAlert is an alert and its sequence number (its id in the console).
type storedAlert struct {
	Seq uint64
	engine.Alert
}

type hourCount struct {
	hour  int64
	count int
}

const minutesKept = 24 * 60

func newAlertStore(capacity int) *alertStore {
	return &alertStore{ring: make([]storedAlert, 0, capacity), scenario: map[string]int{},
		country: map[string]int{}, hourly: map[string]*[24]hourCount{}}
}

func (s *alertStore) add(a engine.Alert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sa := storedAlert{Seq: s.next, Alert: a}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, sa)
	} else {
		s.ring[s.next%uint64(cap(s.ring))] = sa
	}
	s.next++
	m := a.LastSeen.Unix() / 60
	slot := m % minutesKept
	if s.minuteAt[slot] != m {
		s.minuteAt[slot], s.perMin[slot] = m, 0
	}
	s.perMin[slot]++
	s.scenario[a.Scenario]++
	country := a.Country
	if country == "" {
		country = "--"
	}
	s.country[country]++
	h := a.LastSeen.Unix() / 3600
	hc := s.hourly[a.Scenario]
	if hc == nil {
		hc = new([24]hourCount)
		s.hourly[a.Scenario] = hc
	}
	if hc[h%24].hour != h {
		hc[h%24] = hourCount{hour: h}
	}
	hc[h%24].count++
}

// alertQuery filters alerts; zero fields match all.
type alertQuery struct {
	Scenario string // substring
	Country  string // exact, upper case
	IP       netip.Prefix
	Since    time.Time
	Limit    int
}

// search returns the newest matching alerts first, and how many match.
func (s *alertStore) search(q alertQuery) ([]storedAlert, int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []storedAlert
	total := 0
	n := uint64(len(s.ring))
	for k := uint64(0); k < n; k++ {
		seq := s.next - 1 - k
		a := &s.ring[seq%uint64(cap(s.ring))]
		if !q.Since.IsZero() && a.LastSeen.Before(q.Since) {
			continue
		}
		if q.Scenario != "" && !strings.Contains(a.Scenario, q.Scenario) {
			continue
		}
		if q.Country != "" && a.Country != q.Country {
			continue
		}
		if q.IP.IsValid() {
			ip, err := netip.ParseAddr(a.IP)
			if err != nil || !q.IP.Contains(ip.Unmap()) {
				continue
			}
		}
		total++
		if len(out) < q.Limit {
			out = append(out, *a)
		}
	}
	return out, total
}

// get returns the alert with sequence number seq, if still kept.
func (s *alertStore) get(seq uint64) (storedAlert, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if seq >= s.next || s.next-seq > uint64(len(s.ring)) {
		return storedAlert{}, false
	}
	return s.ring[seq%uint64(cap(s.ring))], true
}

// ranked is a name and its count, for top-N tables.
type ranked struct {
	Name  string
	Count int
}

func top(m map[string]int, n int) []ranked {
	out := make([]ranked, 0, len(m))
	for k, v := range m {
		out = append(out, ranked{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Name < out[j].Name
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// overview returns alerts per bucket of bucketMin minutes over the last
// day ending at now (oldest first), and the top scenarios and countries.
func (s *alertStore) overview(now time.Time, bucketMin int) (series []int, scenarios, countries []ranked, total uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	nowMin := now.Unix() / 60
	series = make([]int, minutesKept/bucketMin)
	for k := int64(0); k < minutesKept; k++ {
		m := nowMin - k
		slot := ((m % minutesKept) + minutesKept) % minutesKept
		if s.minuteAt[slot] != m {
			continue
		}
		series[len(series)-1-int(k)/bucketMin] += s.perMin[slot]
	}
	return series, top(s.scenario, 10), top(s.country, 10), s.next
}

// scenarioHours returns a scenario's alerts per hour over the last day
// ending at now, oldest first.
func (s *alertStore) scenarioHours(name string, now time.Time) [24]int {
	var out [24]int
	s.mu.RLock()
	defer s.mu.RUnlock()
	hc := s.hourly[name]
	if hc == nil {
		return out
	}
	nowH := now.Unix() / 3600
	for k := int64(0); k < 24; k++ {
		h := nowH - k
		if c := hc[h%24]; c.hour == h {
			out[23-k] = c.count
		}
	}
	return out
}

// bouncerStore keeps the latest heartbeat of each bouncer.
type bouncerStore struct {
	mu    sync.RWMutex
	beats map[string]heartbeat.Beat
}

func (s *bouncerStore) put(b heartbeat.Beat) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.beats == nil {
		s.beats = map[string]heartbeat.Beat{}
	}
	s.beats[b.Key()] = b
}

func (s *bouncerStore) list() []heartbeat.Beat {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]heartbeat.Beat, 0, len(s.beats))
	for _, b := range s.beats {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

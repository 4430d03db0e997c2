package console

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/heartbeat"
)

// decisionStore is the console's copy of the standing decisions, kept by
// the feed subscriber (it is a decisionfeed.Handler). Entries live in a
// slice so that a search scans memory in order; the index maps a key to
// its slot and a delete moves the last entry into the hole.
type decisionStore struct {
	mu      sync.RWMutex
	entries []entry
	index   map[string]int
	ready   bool
	notify  func(kind string)
	now     func() time.Time
}

// entry is one standing decision and its parsed prefix.
type entry struct {
	d      decisionfeed.Decision
	prefix netip.Prefix
}

func newDecisionStore(notify func(string), now func() time.Time) *decisionStore {
	return &decisionStore{index: map[string]int{}, notify: notify, now: now}
}

// Snapshot replaces the store with the live set.
func (s *decisionStore) Snapshot(_ context.Context, live []decisionfeed.Decision) error {
	s.mu.Lock()
	s.entries = s.entries[:0]
	clear(s.index)
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
	e := entry{d: d, prefix: p}
	if i, ok := s.index[d.Key()]; ok {
		s.entries[i] = e
		return
	}
	s.index[d.Key()] = len(s.entries)
	s.entries = append(s.entries, e)
}

func (s *decisionStore) deleteLocked(key string) {
	i, ok := s.index[key]
	if !ok {
		return
	}
	last := len(s.entries) - 1
	if i != last {
		s.entries[i] = s.entries[last]
		s.index[s.entries[i].d.Key()] = i
	}
	s.entries[last] = entry{}
	s.entries = s.entries[:last]
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
// soonest-created last, and how many match in all.
func (s *decisionStore) search(q decisionQuery) ([]decisionfeed.Decision, int) {
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []decisionfeed.Decision
	total := 0
	for i := range s.entries {
		e := &s.entries[i]
		if e.d.Expired(now) {
			continue
		}
		if q.Prefix.IsValid() && !q.Prefix.Overlaps(e.prefix) {
			continue
		}
		if q.Type != "" && e.d.Type != q.Type {
			continue
		}
		if q.Origin != "" && e.d.Origin != q.Origin {
			continue
		}
		if q.Scenario != "" && !strings.Contains(e.d.Scenario, q.Scenario) {
			continue
		}
		total++
		if len(out) < q.Limit {
			out = append(out, e.d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, total
}

// counts returns the standing decisions by origin and by type.
func (s *decisionStore) counts() (byOrigin, byType map[string]int, total int) {
	now := s.now()
	byOrigin, byType = map[string]int{}, map[string]int{}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i := range s.entries {
		d := &s.entries[i].d
		if d.Expired(now) {
			continue
		}
		byOrigin[d.Origin]++
		byType[string(d.Type)]++
		total++
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

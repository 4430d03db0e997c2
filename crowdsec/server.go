package crowdsec

import (
	"bufio"
	"cmp"
	"container/heap"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// delTTL is how long a deletion is kept for the bouncers that have not
// polled since; one that polls later is answered as at startup.
const delTTL = time.Hour

// Limits on the stream filters, so that one request cannot cost the server
// more than a bounded amount of work per decision.
const (
	// MaxFilterEntries is the most entries one filter parameter
	// (origins, scenarios_containing, scenarios_not_containing, scopes) may list.
	MaxFilterEntries = 64
	// MaxFilterEntryBytes is the longest one such entry may be.
	MaxFilterEntryBytes = 256
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// APIKeys are the accepted X-Api-Key values, one per bouncer; required.
	APIKeys []string
	// StateFile keeps what every bouncer was sent across restarts (see
	// Server); empty keeps it in memory only.
	StateFile string
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// entry is one live decision and the LAPI id it was given. The id is a
// number of the server's sequence, so the ids of decisions that appeared
// after a bouncer's previous call are exactly those above its cursor. An
// entry never changes once made, so it may be read without the lock;
// removed is written and read under the lock only.
type entry struct {
	d       decisionfeed.Decision
	id      int64
	removed bool
}

// delEvent is a decision that was deleted or expired, numbered in the
// same sequence as the adds.
type delEvent struct {
	seq int64
	at  time.Time // when it was deleted, or its expiry
	e   *entry
}

// Server serves the LAPI bouncer endpoints from the decision feed. It is a
// decisionfeed.Handler and an http.Handler; it answers 503 until the feed's
// snapshot has arrived.
//
// Every add and every deletion takes the next number of one sequence; a
// bouncer (API key) is a cursor in it, the sequence number of its last
// answer. A stream call answers the adds above the cursor that still stand
// and the deletions above it of decisions at or below it (those the bouncer
// was sent). With a StateFile, the live decisions with their ids, the recent
// deletions and the cursors survive a restart: the feed's snapshot is then
// compared with the saved decisions, so a bouncer that streams across the
// restart is sent exactly what changed meanwhile. The file is written before
// an answer hands out a decision it does not hold yet, so every decision a
// bouncer was sent is in it; cursors are written at most a few seconds late,
// which at worst sends a bouncer some decisions a second time.
//
// Request work (filters, encoding) runs outside the lock; under it a call
// only copies pointers to the candidate decisions.
type Server struct {
	keys  [][]byte
	now   func() time.Time
	state string

	mu      sync.Mutex
	ready   bool
	seq     int64
	live    map[string]*entry              // by decision key
	byValue map[string]map[*entry]struct{} // by scope:value, for queries
	ranges  map[*entry]struct{}            // the live range decisions
	adds    []*entry                       // by id; removed ones are dropped now and then
	expiry  expiryHeap                     // live entries by until
	dels    []delEvent                     // by seq, the last delTTL
	delsMin int64                          // deletions at or below this seq were dropped
	cursors map[string]int64               // bouncer id (hash of its key) -> sequence number
	dirty   bool                           // cursors changed since the state was written
	saved   int64                          // seq of the state last written

	saveMu sync.Mutex // serialises writes of the state file

	statsMu  sync.Mutex
	requests map[reqKey]uint64
}

// NewServer checks cfg and returns a server with an empty live set, or the
// one of cfg.StateFile when it exists (still answering 503 until the feed's
// snapshot arrives).
func NewServer(cfg ServerConfig) (*Server, error) {
	if len(cfg.APIKeys) == 0 {
		return nil, fmt.Errorf("crowdsec server: no API key configured")
	}
	s := &Server{
		now:     cfg.Now,
		state:   cfg.StateFile,
		live:    map[string]*entry{},
		byValue: map[string]map[*entry]struct{}{},
		ranges:  map[*entry]struct{}{},
		cursors: map[string]int64{},

		requests: map[reqKey]uint64{},
	}
	for _, k := range cfg.APIKeys {
		if k == "" {
			return nil, fmt.Errorf("crowdsec server: empty API key")
		}
		s.keys = append(s.keys, []byte(k))
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.state != "" {
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Snapshot replaces the live set. A decision that stands already (same
// feed id) keeps its LAPI id, so bouncers are not sent it again; one that
// no longer stands becomes a deletion.
func (s *Server) Snapshot(_ context.Context, live []decisionfeed.Decision) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	seen := make(map[string]struct{}, len(live))
	for _, d := range live {
		seen[d.Key()] = struct{}{}
		s.addLocked(d)
	}
	for k, e := range s.live {
		if _, ok := seen[k]; !ok {
			at := now
			if e.d.Until.Before(now) {
				at = e.d.Until
			}
			s.removeLocked(k, e, at)
		}
	}
	s.ready = true
	return nil
}

// Changes applies adds and deletes in order.
func (s *Server) Changes(_ context.Context, changes []decisionfeed.Decision) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, d := range changes {
		if d.Op == decisionfeed.OpDelete {
			k := d.Key()
			if e, ok := s.live[k]; ok {
				s.removeLocked(k, e, now)
			}
			continue
		}
		s.addLocked(d)
	}
	s.expireLocked(now)
	return nil
}

// addLocked stores d under the next id, unless the same decision (a
// retried call, a reconnect's snapshot) stands already. A new decision for
// a key replaces the old one without a deletion, as CrowdSec's bouncers
// take the newer decision for a value.
func (s *Server) addLocked(d decisionfeed.Decision) {
	k := d.Key()
	if old, ok := s.live[k]; ok {
		if old.d.ID == d.ID {
			return
		}
		s.unindexLocked(k, old)
	}
	s.seq++
	s.insertLocked(k, &entry{d: d, id: s.seq})
}

// insertLocked makes e live under key k.
func (s *Server) insertLocked(k string, e *entry) {
	s.live[k] = e
	vk := string(e.d.Scope) + ":" + e.d.Value
	if s.byValue[vk] == nil {
		s.byValue[vk] = map[*entry]struct{}{}
	}
	s.byValue[vk][e] = struct{}{}
	if e.d.Scope == decisionfeed.ScopeRange {
		s.ranges[e] = struct{}{}
	}
	s.adds = append(s.adds, e)
	heap.Push(&s.expiry, e)
}

// unindexLocked takes e, live under k, out of the live set.
func (s *Server) unindexLocked(k string, e *entry) {
	e.removed = true
	delete(s.live, k)
	vk := string(e.d.Scope) + ":" + e.d.Value
	delete(s.byValue[vk], e)
	if len(s.byValue[vk]) == 0 {
		delete(s.byValue, vk)
	}
	delete(s.ranges, e)
}

// removeLocked deletes e (live under k) at the time at, as a deletion
// bouncers are told about.
func (s *Server) removeLocked(k string, e *entry, at time.Time) {
	s.unindexLocked(k, e)
	s.seq++
	s.dels = append(s.dels, delEvent{seq: s.seq, at: at, e: e})
}

// expireLocked turns the decisions that expired by now into deletions,
// forgets deletions older than delTTL, and drops removed entries from the
// id index once they are half of it.
func (s *Server) expireLocked(now time.Time) {
	for len(s.expiry) > 0 && s.expiry[0].d.Expired(now) {
		e := heap.Pop(&s.expiry).(*entry)
		if !e.removed {
			s.removeLocked(e.d.Key(), e, e.d.Until)
		}
	}
	i := 0
	for i < len(s.dels) && now.Sub(s.dels[i].at) > delTTL {
		s.delsMin = s.dels[i].seq
		i++
	}
	if i > 0 {
		s.dels = slices.Clone(s.dels[i:])
	}
	if len(s.adds) > 64 && len(s.adds) > 2*len(s.live) {
		// A new slice: readers holding the old one keep a consistent view.
		kept := make([]*entry, 0, len(s.live)+len(s.live)/2)
		for _, e := range s.adds {
			if !e.removed {
				kept = append(kept, e)
			}
		}
		s.adds = kept
	}
	if len(s.expiry) > 64 && len(s.expiry) > 2*len(s.live) {
		kept := s.expiry[:0:0]
		for _, e := range s.expiry {
			if !e.removed {
				kept = append(kept, e)
			}
		}
		s.expiry = kept
		heap.Init(&s.expiry)
	}
}

// expiryHeap orders entries by expiry, soonest first.
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].d.Until.Before(h[j].d.Until) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }

// Push implements heap.Interface.
func (h *expiryHeap) Push(x any) { *h = append(*h, x.(*entry)) }

// Pop implements heap.Interface.
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// ServeHTTP routes the two LAPI bouncer endpoints, and counts every answer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	endpoint := "other"
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case "/v1/decisions/stream":
		endpoint = "stream"
	case "/v1/decisions":
		endpoint = "decisions"
	}
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	s.serve(sw, r)
	s.count(endpoint, sw.code)
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

// WriteHeader implements http.ResponseWriter.
func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// serve answers a request.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeJSON(w, http.StatusMethodNotAllowed, message{"method not allowed"})
		return
	}
	key, ok := s.apiKey(r)
	if !ok {
		writeJSON(w, http.StatusForbidden, message{"access forbidden"})
		return
	}
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case "/v1/decisions/stream":
		s.stream(w, r, key)
	case "/v1/decisions":
		s.query(w, r)
	default:
		writeJSON(w, http.StatusNotFound, message{"not found"})
	}
}

// message is LAPI's error body.
type message struct {
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

// apiKey returns the request's X-Api-Key when it is one of the configured keys.
func (s *Server) apiKey(r *http.Request) (string, bool) {
	got := []byte(r.Header.Get("X-Api-Key"))
	if len(got) == 0 {
		return "", false
	}
	for _, k := range s.keys {
		if subtle.ConstantTimeCompare(got, k) == 1 {
			return string(k), true
		}
	}
	return "", false
}

// filter is the stream's selection: scopes, origins and scenario substrings.
type filter struct {
	scopes      []decisionfeed.Scope
	origins     []string
	containing  []string
	notContains []string
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// listParam reads a comma-separated filter parameter within the bounds
// MaxFilterEntries and MaxFilterEntryBytes.
func listParam(q url.Values, name string) ([]string, error) {
	v := q.Get(name)
	if n := strings.Count(v, ",") + 1; v != "" && n > MaxFilterEntries {
		return nil, fmt.Errorf("%s: %d entries, limit %d", name, n, MaxFilterEntries)
	}
	out := splitList(v)
	for _, e := range out {
		if len(e) > MaxFilterEntryBytes {
			return nil, fmt.Errorf("%s: an entry of %d bytes, limit %d", name, len(e), MaxFilterEntryBytes)
		}
	}
	return out, nil
}

// parseFilter reads the stream's query parameters. Scopes other than ip and
// range (as, country) are accepted and match nothing, as the feed has none.
// A list above the bounds is an error naming the parameter and the limit.
func parseFilter(r *http.Request) (filter, error) {
	q := r.URL.Query()
	var (
		f   filter
		err error
	)
	if f.origins, err = listParam(q, "origins"); err != nil {
		return f, err
	}
	if f.containing, err = listParam(q, "scenarios_containing"); err != nil {
		return f, err
	}
	if f.notContains, err = listParam(q, "scenarios_not_containing"); err != nil {
		return f, err
	}
	scopes, err := listParam(q, "scopes")
	if err != nil {
		return f, err
	}
	if q.Get("scopes") != "" {
		f.scopes = []decisionfeed.Scope{}
		for _, sc := range scopes {
			switch strings.ToLower(sc) {
			case "ip":
				f.scopes = append(f.scopes, decisionfeed.ScopeIP)
			case "range":
				f.scopes = append(f.scopes, decisionfeed.ScopeRange)
			}
		}
	} else {
		f.scopes = []decisionfeed.Scope{decisionfeed.ScopeIP} // LAPI's default: Ip only
	}
	return f, nil
}

func (f *filter) match(d *decisionfeed.Decision) bool {
	if !slices.Contains(f.scopes, d.Scope) {
		return false
	}
	if len(f.origins) > 0 && !slices.Contains(f.origins, d.Origin) {
		return false
	}
	if len(f.containing) > 0 && !slices.ContainsFunc(f.containing, func(s string) bool { return strings.Contains(d.Scenario, s) }) {
		return false
	}
	return !slices.ContainsFunc(f.notContains, func(s string) bool { return strings.Contains(d.Scenario, s) })
}

// boolParam returns the boolean query parameter name, or def when it is
// absent; a value that is not a boolean is answered with 400 and ok false.
func boolParam(w http.ResponseWriter, q url.Values, name string, def bool) (v, ok bool) {
	s := q.Get(name)
	if s == "" {
		return def, true
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, message{fmt.Sprintf("%s %q: not a boolean", name, s)})
		return false, false
	}
	return v, true
}

// lockReady locks s.mu once the live set is loaded and reports true; before
// that it answers 503 and returns false without the lock.
func (s *Server) lockReady(w http.ResponseWriter) bool {
	s.mu.Lock()
	if !s.ready {
		s.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, message{"decision feed not loaded yet"})
		return false
	}
	return true
}

// bouncerID names a bouncer in the state without its API key: the first
// 16 bytes of the key's SHA-256, in hex.
func bouncerID(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:16])
}

// stream answers GET /v1/decisions/stream for the bouncer holding key.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, key string) {
	startup, ok := boolParam(w, r.URL.Query(), "startup", false)
	if !ok {
		return
	}
	f, err := parseFilter(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, message{err.Error()})
		return
	}
	if !s.lockReady(w) {
		return
	}
	now := s.now()
	s.expireLocked(now)
	id := bouncerID(key)
	cur, known := s.cursors[id]
	if startup || !known || cur < s.delsMin {
		cur = 0 // everything standing is new to this bouncer
	}
	// Under the lock only pointers are copied: the adds above the cursor
	// (the id index is in id order) and the deletions above it.
	var adds []*entry
	for _, e := range s.adds[sort.Search(len(s.adds), func(i int) bool { return s.adds[i].id > cur }):] {
		if !e.removed {
			adds = append(adds, e)
		}
	}
	var dels []delEvent
	if cur > 0 {
		for _, ev := range s.dels[sort.Search(len(s.dels), func(i int) bool { return s.dels[i].seq > cur }):] {
			if ev.e.id <= cur {
				dels = append(dels, ev)
			}
		}
	}
	s.cursors[id] = s.seq
	s.dirty = true
	unsaved := s.state != "" && s.saved < s.seq
	s.mu.Unlock()

	if unsaved {
		// Every decision a bouncer is sent must be in the state file, so
		// that its deletion can be told after a restart.
		if err := s.Save(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, message{"lapi state not saved"})
			return
		}
	}
	out := Stream{New: []Decision{}, Deleted: []Decision{}}
	for _, e := range adds {
		if !e.d.Expired(now) && f.match(&e.d) {
			out.New = append(out.New, toLAPI(&e.d, e.id, now))
		}
	}
	for _, ev := range dels {
		if !f.match(&ev.e.d) {
			continue
		}
		d := toLAPI(&ev.e.d, ev.e.id, now)
		// Deleted just now still lies in the past, as CrowdSec's deleted
		// decisions always do.
		d.Duration = formatDuration(min(ev.at.Sub(now), -time.Second))
		out.Deleted = append(out.Deleted, d)
	}
	byID := func(a, b Decision) int { return cmp.Compare(a.ID, b.ID) }
	slices.SortFunc(out.New, byID)
	slices.SortFunc(out.Deleted, byID)
	writeStream(w, &out)
}

// writeStream writes a stream body one decision at a time: a startup
// answer over a million decisions is some 200 MB of JSON, not worth
// holding in memory a second time.
func writeStream(w http.ResponseWriter, st *Stream) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	for i, part := range []struct {
		name string
		ds   []Decision
	}{{"new", st.New}, {"deleted", st.Deleted}} {
		if i == 0 {
			_, _ = bw.WriteString(`{"` + part.name + `":[`)
		} else {
			_, _ = bw.WriteString(`],"` + part.name + `":[`)
		}
		for j := range part.ds {
			b, err := json.Marshal(&part.ds[j])
			if err != nil {
				return // a struct of strings and an int always encodes
			}
			if j > 0 {
				_ = bw.WriteByte(',')
			}
			_, _ = bw.Write(b) // the client went away; nothing to do
		}
	}
	_, _ = bw.WriteString("]}\n")
	_ = bw.Flush()
}

// query answers GET /v1/decisions: the live decisions matching ip (ranges
// containing it too), range (ranges containing it, or contained in it with
// contains=false), scope and value, and type. No match is a JSON null, as
// LAPI answers.
func (s *Server) query(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var (
		ipP, rangeP netip.Prefix
		hasIP       = q.Get("ip") != ""
		hasRange    = q.Get("range") != ""
	)
	if hasIP {
		a, err := netip.ParseAddr(q.Get("ip"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, message{fmt.Sprintf("ip %q: not an address", q.Get("ip"))})
			return
		}
		ipP = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	}
	if hasRange {
		p, err := netip.ParsePrefix(q.Get("range"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, message{fmt.Sprintf("range %q: not a CIDR range", q.Get("range"))})
			return
		}
		rangeP = p.Masked()
	}
	contains, ok := boolParam(w, q, "contains", true)
	if !ok {
		return
	}
	scope, value, typ := strings.ToLower(q.Get("scope")), q.Get("value"), q.Get("type")
	if !s.lockReady(w) {
		return
	}
	now := s.now()
	// The candidates, copied under the lock and filtered outside it: an
	// address can only be matched by its own decisions and by ranges, a
	// range (contains) only by ranges and its own address, a scope and
	// value only by their decisions; other queries look at every decision.
	var cands []*entry
	byValue := func(vk string) {
		for e := range s.byValue[vk] {
			cands = append(cands, e)
		}
	}
	switch {
	case hasIP:
		byValue(string(decisionfeed.ScopeIP) + ":" + ipP.Addr().String())
		for e := range s.ranges {
			cands = append(cands, e)
		}
	case scope != "" && value != "":
		byValue(scope + ":" + value)
	case hasRange && contains:
		if rangeP.IsSingleIP() {
			byValue(string(decisionfeed.ScopeIP) + ":" + rangeP.Addr().Unmap().String())
		}
		for e := range s.ranges {
			cands = append(cands, e)
		}
	default:
		cands = make([]*entry, 0, len(s.live))
		for _, e := range s.live {
			cands = append(cands, e)
		}
	}
	s.mu.Unlock()
	var out []Decision
	for _, e := range cands {
		d := &e.d
		if d.Expired(now) || (scope != "" && scope != string(d.Scope)) || (value != "" && value != d.Value) || (typ != "" && typ != string(d.Type)) {
			continue
		}
		if hasIP || hasRange {
			p, err := d.Prefix()
			if err != nil {
				continue
			}
			if hasIP && (p.Addr().Is4() != ipP.Addr().Is4() || !p.Contains(ipP.Addr())) {
				continue
			}
			if hasRange && !coversRange(p, rangeP, contains) {
				continue
			}
		}
		out = append(out, toLAPI(d, e.id, now))
	}
	slices.SortFunc(out, func(a, b Decision) int { return cmp.Compare(a.ID, b.ID) })
	writeJSON(w, http.StatusOK, out) // nil encodes as null
}

// coversRange reports whether decision prefix p contains r (contains) or
// lies inside r (!contains).
func coversRange(p, r netip.Prefix, contains bool) bool {
	if p.Addr().Is4() != r.Addr().Is4() {
		return false
	}
	if contains {
		return p.Bits() <= r.Bits() && p.Contains(r.Addr())
	}
	return r.Bits() <= p.Bits() && r.Contains(p.Addr())
}

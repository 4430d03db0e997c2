package crowdsec

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// tombstoneTTL is how long the deletion time of a key is kept, so that a
// bouncer polling later still gets a deletion time in the past.
const tombstoneTTL = time.Hour

// ServerConfig configures a Server.
type ServerConfig struct {
	// APIKeys are the accepted X-Api-Key values, one per bouncer; required.
	APIKeys []string
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// entry is one live decision and the LAPI id it was given.
type entry struct {
	d  decisionfeed.Decision
	id int64
}

// sentState is what one bouncer (API key) was sent, by decision key.
type sentState struct {
	gen uint64
	m   map[string]*sentEntry
}

// sentEntry is one decision a bouncer was sent, and the generation of the
// last stream call that found it still live.
type sentEntry struct {
	d     Decision
	until time.Time
	gen   uint64
}

// Server serves the LAPI bouncer endpoints from the decision feed. It is a
// decisionfeed.Handler and an http.Handler; it answers 503 until the feed's
// snapshot has arrived.
type Server struct {
	keys [][]byte
	now  func() time.Time

	mu        sync.Mutex
	ready     bool
	nextID    int64
	live      map[string]*entry
	ranges    map[string]struct{}   // keys of the range decisions in live
	gone      map[string]time.Time  // key -> when it was deleted
	sent      map[string]*sentState // API key -> what that bouncer was sent
	lastPrune time.Time

	statsMu  sync.Mutex
	requests map[reqKey]uint64
}

// NewServer checks cfg and returns a server with an empty live set.
func NewServer(cfg ServerConfig) (*Server, error) {
	if len(cfg.APIKeys) == 0 {
		return nil, fmt.Errorf("crowdsec server: no API key configured")
	}
	s := &Server{
		now:    cfg.Now,
		live:   map[string]*entry{},
		ranges: map[string]struct{}{},
		gone:   map[string]time.Time{},
		sent:   map[string]*sentState{},

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
	return s, nil
}

// Snapshot replaces the live set.
func (s *Server) Snapshot(_ context.Context, live iter.Seq[decisionfeed.Decision]) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.live
	s.live = make(map[string]*entry, len(old))
	s.ranges = map[string]struct{}{}
	for d := range live {
		s.addLocked(d, old)
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
		k := d.Target()
		if d.Op == decisionfeed.OpDelete {
			if _, ok := s.live[k]; ok {
				delete(s.live, k)
				delete(s.ranges, k)
				s.gone[k] = now
			}
			continue
		}
		s.addLocked(d, s.live)
	}
	if now.Sub(s.lastPrune) >= time.Minute {
		s.pruneLocked(now)
	}
	return nil
}

// addLocked stores d, keeping the id it had in prev when it is the same
// decision (a retried call or a reconnect's snapshot), so bouncers are not
// sent it again.
func (s *Server) addLocked(d decisionfeed.Decision, prev map[string]*entry) {
	k := d.Target()
	if d.Scope == decisionfeed.ScopeRange {
		s.ranges[k] = struct{}{}
	} else {
		delete(s.ranges, k)
	}
	if e, ok := prev[k]; ok && e.d.ID == d.ID {
		s.live[k] = e
		return
	}
	s.nextID++
	s.live[k] = &entry{d: d, id: s.nextID}
	delete(s.gone, k)
}

// pruneLocked drops expired decisions and old tombstones.
func (s *Server) pruneLocked(now time.Time) {
	s.lastPrune = now
	for k, e := range s.live {
		if e.d.Expired(now) {
			delete(s.live, k)
			delete(s.ranges, k)
		}
	}
	for k, t := range s.gone {
		if now.Sub(t) > tombstoneTTL {
			delete(s.gone, k)
		}
	}
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

// parseFilter reads the stream's query parameters. Scopes other than ip and
// range (as, country) are accepted and match nothing, as the feed has none.
func parseFilter(r *http.Request) filter {
	q := r.URL.Query()
	f := filter{
		origins:     splitList(q.Get("origins")),
		containing:  splitList(q.Get("scenarios_containing")),
		notContains: splitList(q.Get("scenarios_not_containing")),
	}
	if v := q.Get("scopes"); v != "" {
		f.scopes = []decisionfeed.Scope{}
		for _, sc := range splitList(v) {
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
	return f
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

// stream answers GET /v1/decisions/stream for the bouncer holding key.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, key string) {
	startup, ok := boolParam(w, r.URL.Query(), "startup", false)
	if !ok {
		return
	}
	f := parseFilter(r)
	if !s.lockReady(w) {
		return
	}
	now := s.now()
	st := s.sent[key]
	if st == nil || startup {
		st = &sentState{m: make(map[string]*sentEntry, len(s.live))}
		s.sent[key] = st
	}
	// Entries seen in this pass get the new generation; those left with an
	// older one were deleted or expired (or filtered out) since.
	st.gen++
	out := Stream{New: []Decision{}, Deleted: []Decision{}}
	for k, e := range s.live {
		if e.d.Expired(now) || !f.match(&e.d) {
			continue
		}
		if p, ok := st.m[k]; ok && p.d.ID == e.id {
			p.gen = st.gen
			continue
		}
		d := toLAPI(&e.d, e.id, now)
		st.m[k] = &sentEntry{d: d, until: e.d.Until, gen: st.gen}
		out.New = append(out.New, d)
	}
	for k, p := range st.m {
		if p.gen == st.gen {
			continue
		}
		until := p.until
		if t, ok := s.gone[k]; ok && t.Before(until) {
			until = t
		}
		// Deleted just now still lies in the past, as CrowdSec's deleted
		// decisions always do.
		dur := min(until.Sub(now), -time.Second)
		p.d.Duration = formatDuration(dur)
		out.Deleted = append(out.Deleted, p.d)
		delete(st.m, k)
	}
	s.mu.Unlock()
	byID := func(a, b Decision) int { return int(a.ID - b.ID) }
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
	// The candidates: an address can only be matched by its own key and by
	// ranges, a range (contains) only by ranges and its own address, a
	// scope and value only by their key; other queries scan the live set.
	var keys []string
	switch {
	case hasIP:
		keys = append(keys, string(decisionfeed.ScopeIP)+":"+ipP.Addr().String())
		keys = s.appendRanges(keys)
	case scope != "" && value != "":
		keys = append(keys, scope+":"+value)
	case hasRange && contains:
		if rangeP.IsSingleIP() {
			keys = append(keys, string(decisionfeed.ScopeIP)+":"+rangeP.Addr().Unmap().String())
		}
		keys = s.appendRanges(keys)
	default:
		keys = make([]string, 0, len(s.live))
		for k := range s.live {
			keys = append(keys, k)
		}
	}
	var out []Decision
	for _, k := range keys {
		e, ok := s.live[k]
		if !ok {
			continue
		}
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
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Decision) int { return int(a.ID - b.ID) })
	writeJSON(w, http.StatusOK, out) // nil encodes as null
}

// appendRanges appends the keys of the live range decisions.
func (s *Server) appendRanges(keys []string) []string {
	for k := range s.ranges {
		keys = append(keys, k)
	}
	return keys
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

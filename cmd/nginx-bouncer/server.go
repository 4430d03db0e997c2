package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// HeaderDecision names the decision behind a 403 or 401 answer, as
// "TYPE; reason=SCENARIO; origin=ORIGIN", for auth_request_set and logs.
const HeaderDecision = "X-Portcullis-Decision"

// HeaderFailMode is set on every /check answer given before the feed
// delivered its snapshot, and on /ready.
const HeaderFailMode = "X-Portcullis-Fail-Mode"

// Verdicts, the label values of the checks counter.
const (
	verdictAllow         = "allow"
	verdictBan           = "ban"
	verdictCaptcha       = "captcha"
	verdictUnreadyOpen   = "unready_open"
	verdictUnreadyClosed = "unready_closed"
)

// server answers nginx's auth_request subrequests from the prefix set.
// It keeps no state per client: memory depends on the decisions only.
type server struct {
	set      *prefixset.Set
	trusted  []netip.Prefix
	failMode FailMode
	ready    *atomic.Bool
	banPage  *template.Template
	metrics  *metrics
	logger   *slog.Logger
	// unixPeer is set when nginx connects over a unix socket: the peer
	// is then nginx itself and its X-Real-IP is believed.
	unixPeer bool

	// lastWarn rate-limits the log line about unusable client headers
	// (Unix nanoseconds of the last one); every occurrence is counted.
	lastWarn atomic.Int64
	bufs     sync.Pool

	// kinds caches the answer of each kind of decision (header value,
	// per-scenario counter) so that a check allocates nothing.
	kinds   atomic.Pointer[map[decisionKey]*decisionInfo]
	kindsMu sync.Mutex
}

// warnEvery is the least time between two logged header warnings.
const warnEvery = 10 * time.Second

func newServer(set *prefixset.Set, cfg *Config, ready *atomic.Bool, banPage *template.Template, m *metrics, logger *slog.Logger) *server {
	trusted := make([]netip.Prefix, 0, len(cfg.TrustedProxies))
	for _, p := range cfg.TrustedProxies {
		a := p.Addr().Unmap()
		bits := p.Bits()
		if p.Addr().Is4In6() {
			bits -= 96
		}
		trusted = append(trusted, netip.PrefixFrom(a, bits).Masked())
	}
	return &server{
		set:      set,
		trusted:  trusted,
		failMode: cfg.FailMode,
		ready:    ready,
		banPage:  banPage,
		metrics:  m,
		logger:   logger,
		bufs:     sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /check", s.check)
	mux.HandleFunc("GET /ban", s.ban)
	mux.HandleFunc("GET /ready", s.readiness)
	return mux
}

// check answers auth_request: 204 allow, 403 ban, 401 captcha, and before
// the snapshot 204 (fail open) or 503 (fail closed). Headers only.
func (s *server) check(w http.ResponseWriter, r *http.Request) {
	ip := s.clientAddr(r)
	h := w.Header()
	if !s.ready.Load() {
		h.Set(HeaderFailMode, string(s.failMode))
		if s.failMode == FailClosed {
			s.metrics.unreadyClosed.Inc()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		s.metrics.unreadyOpen.Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	start := time.Now()
	m, found := s.set.Lookup(ip, start)
	s.metrics.lookup.Observe(time.Since(start).Seconds())
	if !found {
		s.metrics.allow.Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	d := s.decision(m)
	// Set directly: the value slice is shared and never modified, which
	// spares an allocation per answer (Header.Set would make one).
	h[HeaderDecision] = d.header
	if m.Remedy == prefixset.RemedyCaptcha {
		s.metrics.captcha.Inc()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	s.metrics.ban.Inc()
	d.served.Inc()
	w.WriteHeader(http.StatusForbidden)
}

func decisionHeader(m prefixset.Match) string {
	return m.Remedy.String() + "; reason=" + m.Reason + "; origin=" + m.Origin
}

// decisionKey is one kind of decision a check can answer with.
type decisionKey struct {
	remedy         prefixset.Remedy
	reason, origin string
}

// decisionInfo is what an answer for a kind of decision needs, made once.
type decisionInfo struct {
	header []string
	served prometheus.Counter
}

// maxDecisionKinds bounds the cache of decision kinds; beyond it answers
// are built per request.
const maxDecisionKinds = 4096

// decision returns the header value and counter for m's kind, from a
// copy-on-write cache read without locks.
func (s *server) decision(m prefixset.Match) *decisionInfo {
	k := decisionKey{m.Remedy, m.Reason, m.Origin}
	if cache := s.kinds.Load(); cache != nil {
		if d, ok := (*cache)[k]; ok {
			return d
		}
	}
	d := &decisionInfo{header: []string{decisionHeader(m)}, served: s.metrics.bansServed.WithLabelValues(m.Reason)}
	s.kindsMu.Lock()
	defer s.kindsMu.Unlock()
	old := s.kinds.Load()
	if old != nil && len(*old) >= maxDecisionKinds {
		return d
	}
	var prev map[decisionKey]*decisionInfo
	if old != nil {
		prev = *old
		if cached, ok := prev[k]; ok {
			return cached // another check added it meanwhile
		}
	}
	next := make(map[decisionKey]*decisionInfo, len(prev)+1)
	for kk, v := range prev {
		next[kk] = v
	}
	next[k] = d
	s.kinds.Store(&next)
	return d
}

// banPageData is what the ban page template sees.
type banPageData struct {
	// IP is the client address the bouncer resolved.
	IP string
	// Banned is false when no live ban covers IP (any more).
	Banned bool
	// Type is "ban" or "captcha"; Scenario is the decision's reason and
	// Origin its source.
	Type, Scenario, Origin string
	// Until is when the decision expires.
	Until time.Time
}

// ban renders the ban page for the client, which nginx serves with the
// 403 status through error_page.
func (s *server) ban(w http.ResponseWriter, r *http.Request) {
	ip := s.clientAddr(r)
	data := banPageData{IP: ip.String()}
	if m, ok := s.set.Lookup(ip, time.Now()); ok {
		data.Banned = true
		data.Type, data.Scenario, data.Origin, data.Until = m.Remedy.String(), m.Reason, m.Origin, m.Until
	}
	buf := s.bufs.Get().(*bytes.Buffer)
	defer s.bufs.Put(buf)
	buf.Reset()
	if err := s.banPage.Execute(buf, data); err != nil {
		s.logger.Error("render ban page", "err", err)
		http.Error(w, "ban page unavailable", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// readinessBody is the JSON answer of GET /ready.
type readinessBody struct {
	Ready    bool     `json:"ready"`
	FailMode FailMode `json:"fail_mode"`
	Prefixes int      `json:"prefixes"`
}

// readiness answers 200 once the feed's snapshot is loaded, 503 before.
func (s *server) readiness(w http.ResponseWriter, _ *http.Request) {
	body := readinessBody{Ready: s.ready.Load(), FailMode: s.failMode, Prefixes: s.set.Len()}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set(HeaderFailMode, string(s.failMode))
	if !body.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}

// clientAddr returns the address to judge. The peer's X-Real-IP, else the
// right-most X-Forwarded-For hop that is not a trusted proxy, is believed
// only when the peer is a trusted proxy; an unusable header falls back to
// the peer address with a counted warning.
func (s *server) clientAddr(r *http.Request) netip.Addr {
	var peer netip.Addr
	if !s.unixPeer {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			s.warn("peer", r.RemoteAddr, "not an address:port")
			return netip.Addr{}
		}
		peer = ap.Addr().Unmap().WithZone("")
		if !s.isTrusted(peer) {
			return peer
		}
	}
	if v := r.Header.Values("X-Real-Ip"); len(v) > 0 {
		if len(v) > 1 {
			s.warn("x-real-ip", strings.Join(v, ", "), "repeated header")
			return peer
		}
		a, ok := parseHop(v[0])
		if !ok {
			s.warn("x-real-ip", v[0], "not an IP address")
			return peer
		}
		return a
	}
	xff := r.Header.Values("X-Forwarded-For")
	if len(xff) == 0 {
		return peer
	}
	// Several header lines are one list, in order (RFC 9110, 5.3).
	var left netip.Addr
	for i := len(xff) - 1; i >= 0; i-- {
		a, done, ok := s.rightmostUntrusted(xff[i])
		if !ok {
			s.warn("x-forwarded-for", strings.Join(xff, ", "), "a hop is not an IP address")
			return peer
		}
		if done {
			return a
		}
		if a.IsValid() {
			left = a
		}
	}
	if !left.IsValid() {
		return peer // only empty elements
	}
	// Every hop is a trusted proxy: the left-most one is the client.
	return left
}

// rightmostUntrusted walks one X-Forwarded-For line from the right. It
// returns the first hop that is not trusted (done), or the left-most hop
// when all are trusted; ok is false when a hop does not parse.
func (s *server) rightmostUntrusted(line string) (addr netip.Addr, done, ok bool) {
	for line != "" {
		hop := line
		if i := strings.LastIndexByte(line, ','); i >= 0 {
			hop, line = line[i+1:], line[:i]
		} else {
			line = ""
		}
		if strings.TrimSpace(hop) == "" {
			continue // empty list elements are allowed (RFC 9110, 5.6.1)
		}
		a, valid := parseHop(hop)
		if !valid {
			return netip.Addr{}, false, false
		}
		addr = a
		if !s.isTrusted(a) {
			return a, true, true
		}
	}
	return addr, false, true
}

// parseHop parses one address as proxies write it: "ADDR", "ADDR:PORT" or
// "[ADDR]:PORT", surrounded by optional spaces.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func (s *server) isTrusted(a netip.Addr) bool {
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// maxWarnValue bounds how much of an offending header a log line quotes.
const maxWarnValue = 128

// warn counts an unusable client address header and logs it at most once
// per warnEvery, so a flood of bad headers cannot flood the log.
func (s *server) warn(header, value, reason string) {
	s.metrics.badAddress.WithLabelValues(header).Inc()
	now := time.Now().UnixNano()
	last := s.lastWarn.Load()
	if now-last < int64(warnEvery) || !s.lastWarn.CompareAndSwap(last, now) {
		return
	}
	if len(value) > maxWarnValue {
		value = value[:maxWarnValue] + "…"
	}
	s.logger.Warn("client address header unusable; judging the peer address",
		"header", header, "value", fmt.Sprintf("%q", value), "reason", reason)
}

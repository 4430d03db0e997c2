// Package console is Portcullis' web console: an overview of alerts,
// decisions and bouncers, a decision search with add and delete, alert
// browsing and per-scenario activity, kept live with server-sent events.
// Pages are rendered on the server (html/template escapes everything that
// came from the feed) with one small embedded script; no asset comes from
// the network. Access needs a login from a password file; sessions are
// HttpOnly, SameSite=Strict cookies, every write carries a per-session
// CSRF token, a readonly role cannot write, and failed logins are rate
// limited per client address and counted.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/heartbeat"
)

//go:embed templates/*.html static/*
var assets embed.FS

// Publisher publishes decisions; *decisionfeed.Publisher is one.
type Publisher interface {
	Publish(ctx context.Context, ds ...decisionfeed.Decision) error
}

// Config configures a Server.
type Config struct {
	// Users are the accounts (LoadUsers).
	Users map[string]user
	// Publisher receives the decisions added and deleted from the console.
	Publisher Publisher
	// Secure marks cookies Secure (set when serving TLS).
	Secure bool
	// SessionTTL is how long a login lasts (default 12h).
	SessionTTL time.Duration
	// AlertsKept is how many recent alerts are kept (default 100,000).
	AlertsKept int
	// Logger receives the console's logs (default: discard).
	Logger *slog.Logger
	// Registerer receives the console's metrics (nil: none).
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server is the console: the stores the feeds fill, and the HTTP handler.
type Server struct {
	cfg       Config
	log       *slog.Logger
	tmpl      *template.Template
	decisions *decisionStore
	alerts    *alertStore
	bouncers  bouncerStore
	sessions  sessions
	limiter   loginLimiter
	events    broadcaster
	mux       *http.ServeMux

	loginFailures prometheus.Counter
	loginsLimited prometheus.Counter
	writes        *prometheus.CounterVec
}

// pageLimit is the most rows a search shows.
const pageLimit = 100

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if len(cfg.Users) == 0 {
		return nil, errors.New("console: no users")
	}
	if cfg.Publisher == nil {
		return nil, errors.New("console: no publisher")
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.AlertsKept == 0 {
		cfg.AlertsKept = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, tmpl: tmpl, alerts: newAlertStore(cfg.AlertsKept),
		sessions: sessions{m: map[string]*session{}, ttl: cfg.SessionTTL}}
	s.decisions = newDecisionStore(s.events.publish, cfg.Now)
	s.loginFailures = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "console",
		Name: "login_failures_total", Help: "Failed console logins (wrong name or password)."})
	s.loginsLimited = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "console",
		Name: "logins_rate_limited_total", Help: "Console login attempts refused by the per-address rate limit."})
	s.writes = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "portcullis", Subsystem: "console",
		Name: "writes_total", Help: "Decisions published from the console, by op, and writes refused, by reason."}, []string{"result"})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.loginFailures, s.loginsLimited, s.writes} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("console metrics: %w", err)
			}
		}
	}
	s.routes()
	return s, nil
}

// Decisions returns the handler the decisions subscriber feeds.
func (s *Server) Decisions() decisionfeed.Handler { return s.decisions }

// Alert records an alert from the alerts topic.
func (s *Server) Alert(a engine.Alert) {
	s.alerts.add(a)
	s.events.publish("alerts")
}

// Heartbeat records a bouncer heartbeat.
func (s *Server) Heartbeat(b heartbeat.Beat) {
	s.bouncers.put(b)
	s.events.publish("bouncers")
}

// ServeHTTP serves the console.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.Handle("GET /static/", http.FileServerFS(assets))
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.authed(s.logout))
	m.HandleFunc("GET /{$}", s.authed(s.overview))
	m.HandleFunc("GET /decisions", s.authed(s.decisionsPage))
	m.HandleFunc("POST /decisions/add", s.authed(s.admin(s.addDecision)))
	m.HandleFunc("POST /decisions/delete", s.authed(s.admin(s.deleteDecision)))
	m.HandleFunc("GET /alerts", s.authed(s.alertsPage))
	m.HandleFunc("GET /alerts/{seq}", s.authed(s.alertPage))
	m.HandleFunc("GET /scenarios", s.authed(s.scenariosPage))
	m.HandleFunc("GET /events", s.authed(s.eventStream))
	s.mux = m
}

const cookieName = "portcullis_session"

type ctxKey struct{}

// authed lets logged-in users through; others go to the login page (GET)
// or get 401.
func (s *Server) authed(next func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(cookieName)
		var sess *session
		ok := false
		if err == nil {
			sess, ok = s.sessions.get(c.Value, s.cfg.Now())
		}
		if !ok {
			if r.Method == http.MethodGet && r.URL.Path != "/events" {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost && !s.sameOrigin(r, sess) {
			s.writes.WithLabelValues("refused_csrf").Inc()
			http.Error(w, "cross-site request refused", http.StatusForbidden)
			return
		}
		next(w, r, sess)
	}
}

// sameOrigin checks a write: the form's CSRF token is the session's, and
// an Origin header, when the browser sends one, names this host.
func (s *Server) sameOrigin(r *http.Request, sess *session) bool {
	if o := r.Header.Get("Origin"); o != "" {
		scheme := "http://"
		if r.TLS != nil {
			scheme = "https://"
		}
		if o != scheme+r.Host {
			return false
		}
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		return false
	}
	tok := r.PostForm.Get("csrf")
	return len(tok) == len(sess.csrf) && tok == sess.csrf
}

// admin lets only admins through.
func (s *Server) admin(next func(http.ResponseWriter, *http.Request, *session)) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, sess *session) {
		if sess.user.role != RoleAdmin {
			s.writes.WithLabelValues("refused_readonly").Inc()
			http.Error(w, "read-only users cannot change decisions", http.StatusForbidden)
			return
		}
		next(w, r, sess)
	}
}

func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "login.html", map[string]any{"Error": ""}, nil)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if !s.limiter.allow(clientAddr(r)) {
		s.loginsLimited.Inc()
		w.Header().Set("Retry-After", "12")
		w.WriteHeader(http.StatusTooManyRequests)
		s.render(w, r, "login.html", map[string]any{"Error": "Too many attempts; wait a minute."}, nil)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	u, ok := check(s.cfg.Users, r.PostForm.Get("user"), r.PostForm.Get("password"))
	if !ok {
		s.loginFailures.Inc()
		s.log.Warn("console login failed", "user", r.PostForm.Get("user"), "client", clientAddr(r))
		w.WriteHeader(http.StatusUnauthorized)
		s.render(w, r, "login.html", map[string]any{"Error": "Wrong user or password."}, nil)
		return
	}
	id, _ := s.sessions.create(u, s.cfg.Now())
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true, Secure: s.cfg.Secure,
		SameSite: http.SameSiteStrictMode, MaxAge: int(s.cfg.SessionTTL / time.Second)})
	s.log.Info("console login", "user", u.name, "role", u.role, "client", clientAddr(r))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, _ *session) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.sessions.drop(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.cfg.Secure, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// render executes a page, or only its live fragment when the script asks
// for it (?fragment=1).
func (s *Server) render(w http.ResponseWriter, r *http.Request, page string, data map[string]any, sess *session) {
	if sess != nil {
		data["User"] = sess.user.name
		data["Admin"] = sess.user.role == RoleAdmin
		data["CSRF"] = sess.csrf
	}
	data["Page"] = strings.TrimSuffix(page, ".html")
	name := page
	if r.URL.Query().Get("fragment") == "1" {
		name = strings.TrimSuffix(page, ".html") + "-live"
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := s.tmpl.ExecuteTemplate(w, name, data); err != nil {
		s.log.Error("render page", "page", name, "err", err)
	}
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session) {
	now := s.cfg.Now()
	series, scen, countries, total := s.alerts.overview(now, 10)
	byOrigin, byType, live := s.decisions.counts()
	s.render(w, r, "overview.html", map[string]any{
		"Chart": barChart(series, now), "Scenarios": scen, "Countries": countries, "AlertsTotal": total,
		"ByOrigin": top(byOrigin, 20), "ByType": top(byType, 5), "Live": live,
		"Bouncers": s.bouncers.list(), "Now": now, "FeedReady": s.decisions.isReady(),
	}, sess)
}

// formError is a one-line problem with a form or query value, shown on
// the page, never echoing more than the field's name.
type formError struct{ field, reason string }

func (e formError) Error() string { return e.field + ": " + e.reason }

func parseDecisionQuery(q map[string][]string) (decisionQuery, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	dq := decisionQuery{Scenario: get("scenario"), Origin: get("origin"), Type: decisionfeed.Type(get("type")), Limit: pageLimit}
	for _, f := range []struct{ name, v string }{{"scenario", dq.Scenario}, {"origin", dq.Origin}, {"type", string(dq.Type)}, {"q", get("q")}} {
		if len(f.v) > 256 {
			return dq, formError{f.name, "longer than 256 characters"}
		}
	}
	switch dq.Type {
	case "", decisionfeed.TypeBan, decisionfeed.TypeCaptcha, decisionfeed.TypeThrottle:
	default:
		return dq, formError{"type", "not ban, captcha or throttle"}
	}
	if a := get("q"); a != "" {
		p, err := parsePrefix(a)
		if err != nil {
			return dq, formError{"address", "not an IP address or CIDR range"}
		}
		dq.Prefix = p
	}
	return dq, nil
}

// parsePrefix reads an address (as a one-address prefix) or a range.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (s *Server) decisionsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	data := map[string]any{"Query": r.URL.Query(), "Flash": r.URL.Query().Get("flash")}
	q, err := parseDecisionQuery(r.URL.Query())
	if err != nil {
		data["Error"] = err.Error()
		w.WriteHeader(http.StatusBadRequest)
	} else {
		rows, total := s.decisions.search(q)
		data["Rows"], data["Total"] = rows, total
	}
	data["Now"] = s.cfg.Now()
	s.render(w, r, "decisions.html", data, sess)
}

// maxConsoleDuration bounds a decision added from the console.
const maxConsoleDuration = 365 * 24 * time.Hour

func (s *Server) addDecision(w http.ResponseWriter, r *http.Request, sess *session) {
	f := r.PostForm
	p, err := parsePrefix(strings.TrimSpace(f.Get("target")))
	if err != nil {
		s.fail(w, "target", "not an IP address or CIDR range")
		return
	}
	dur, err := time.ParseDuration(f.Get("duration"))
	if err != nil || dur <= 0 || dur > maxConsoleDuration {
		s.fail(w, "duration", "want a duration between 1s and 8760h, e.g. 4h")
		return
	}
	typ := decisionfeed.Type(f.Get("type"))
	reason := strings.TrimSpace(f.Get("reason"))
	if len(reason) > 200 {
		s.fail(w, "reason", "longer than 200 characters")
		return
	}
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, typ, p, dur, "console", s.cfg.Now())
	d.Reason = "console user " + sess.user.name
	if reason != "" {
		d.Reason += ": " + reason
	}
	if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
		s.fail(w, "decision", err.Error())
		return
	}
	if err := s.cfg.Publisher.Publish(r.Context(), d); err != nil {
		s.log.Error("console publish", "user", sess.user.name, "err", err)
		http.Error(w, "publish failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	s.writes.WithLabelValues("add").Inc()
	s.log.Info("console decision added", "user", sess.user.name, "value", d.Value, "type", d.Type, "duration", d.Duration)
	http.Redirect(w, r, "/decisions?flash=added+"+d.Value, http.StatusSeeOther)
}

func (s *Server) deleteDecision(w http.ResponseWriter, r *http.Request, sess *session) {
	f := r.PostForm
	key := f.Get("key")
	s.decisions.mu.RLock()
	i, ok := s.decisions.index[key]
	var d decisionfeed.Decision
	if ok {
		d = s.decisions.entries[i].d
	}
	s.decisions.mu.RUnlock()
	if !ok {
		s.fail(w, "key", "no standing decision has this key (already deleted or expired?)")
		return
	}
	if f.Get("confirm") != "yes" {
		s.fail(w, "confirm", "deleting needs the confirmation")
		return
	}
	p, err := d.Prefix()
	if err != nil {
		s.fail(w, "key", err.Error())
		return
	}
	del := decisionfeed.NewDecision(decisionfeed.OpDelete, d.Type, p, 0, d.Origin, s.cfg.Now())
	del.Reason = "console user " + sess.user.name
	if err := s.cfg.Publisher.Publish(r.Context(), del); err != nil {
		s.log.Error("console publish", "user", sess.user.name, "err", err)
		http.Error(w, "publish failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	s.writes.WithLabelValues("delete").Inc()
	s.log.Info("console decision deleted", "user", sess.user.name, "key", key)
	http.Redirect(w, r, "/decisions?flash=deleted+"+d.Value, http.StatusSeeOther)
}

func (s *Server) fail(w http.ResponseWriter, field, reason string) {
	s.writes.WithLabelValues("refused_invalid").Inc()
	http.Error(w, formError{field, reason}.Error(), http.StatusBadRequest)
}

func (s *Server) alertsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	qv := r.URL.Query()
	q := alertQuery{Scenario: qv.Get("scenario"), Country: strings.ToUpper(qv.Get("country")), Limit: pageLimit}
	data := map[string]any{"Query": qv}
	if len(q.Scenario) > 256 || len(q.Country) > 2 {
		data["Error"] = "scenario or country too long"
	}
	if ip := qv.Get("ip"); ip != "" {
		p, err := parsePrefix(ip)
		if err != nil {
			data["Error"] = "address: not an IP address or CIDR range"
		}
		q.IP = p
	}
	if since := qv.Get("since"); since != "" {
		d, err := time.ParseDuration(since)
		if err != nil || d < 0 {
			data["Error"] = "since: not a duration such as 1h"
		} else {
			q.Since = s.cfg.Now().Add(-d)
		}
	}
	if data["Error"] == nil {
		rows, total := s.alerts.search(q)
		data["Rows"], data["Total"] = rows, total
	} else {
		w.WriteHeader(http.StatusBadRequest)
	}
	s.render(w, r, "alerts.html", data, sess)
}

func (s *Server) alertPage(w http.ResponseWriter, r *http.Request, sess *session) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	a, ok := s.alerts.get(seq)
	if !ok {
		http.NotFound(w, r)
		return
	}
	var standing []decisionfeed.Decision
	if ip, err := netip.ParseAddr(a.IP); err == nil {
		ip = ip.Unmap()
		standing, _ = s.decisions.search(decisionQuery{Prefix: netip.PrefixFrom(ip, ip.BitLen()), Limit: pageLimit})
	}
	s.render(w, r, "alert.html", map[string]any{"A": a, "Standing": standing}, sess)
}

// scenarioRow is one line of the scenarios page.
type scenarioRow struct {
	Name     string
	Alerts   int
	Remedy   string
	Duration string
	Hours    [24]int
}

func (s *Server) scenariosPage(w http.ResponseWriter, r *http.Request, sess *session) {
	now := s.cfg.Now()
	s.alerts.mu.RLock()
	names := top(s.alerts.scenario, 1000)
	remedy := map[string][2]string{}
	for k := range s.alerts.ring {
		a := &s.alerts.ring[k]
		if a.Decision != nil {
			remedy[a.Scenario] = [2]string{string(a.Decision.Type), a.Decision.Duration}
		}
	}
	s.alerts.mu.RUnlock()
	rows := make([]scenarioRow, 0, len(names))
	for _, n := range names {
		rm := remedy[n.Name]
		rows = append(rows, scenarioRow{Name: n.Name, Alerts: n.Count, Remedy: rm[0], Duration: rm[1], Hours: s.alerts.scenarioHours(n.Name, now)})
	}
	s.render(w, r, "scenarios.html", map[string]any{"Rows": rows}, sess)
}

// broadcaster fans change notices out to the event streams, coalescing
// bursts: a subscriber's channel holds one pending notice per kind.
type broadcaster struct {
	mu   sync.Mutex
	subs map[chan string]struct{}
}

func (b *broadcaster) publish(kind string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- kind:
		default: // a notice is pending already; the page will refresh
		}
	}
}

func (b *broadcaster) subscribe() (chan string, func()) {
	ch := make(chan string, 4)
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[chan string]struct{}{}
	}
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

// eventStream sends "change" events (server-sent events) when decisions,
// alerts or bouncers change, at most four a second.
func (s *Server) eventStream(w http.ResponseWriter, r *http.Request, _ *session) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	ch, cancel := s.events.subscribe()
	defer cancel()
	_, _ = fmt.Fprint(w, ": portcullis console\n\n")
	fl.Flush()
	keep := time.NewTicker(25 * time.Second)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case kind := <-ch:
			time.Sleep(250 * time.Millisecond) // coalesce a burst
			seen := map[string]bool{kind: true}
			for drained := false; !drained; {
				select {
				case k := <-ch:
					seen[k] = true
				default:
					drained = true
				}
			}
			for k := range seen {
				if _, err := fmt.Fprintf(w, "event: change\ndata: %s\n\n", k); err != nil {
					return
				}
			}
			fl.Flush()
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// Serve serves the console on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, MaxHeaderBytes: 32 << 10}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

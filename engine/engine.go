// Package engine is the detection pipeline: the parse stage (engine/parse)
// turns lines into events, and the detect stage (Engine) drops whitelisted
// sources, runs the scenarios and turns their overflows into alerts and
// decisions through the profiles. The two stages are separate so events can
// be re-keyed by source address between them when several instances share
// the input.
package engine

import (
	"container/list"
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/profile"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

// AlertVersion is the schema version of Alert messages.
const AlertVersion = 1

// Origin is the origin of the engine's decisions.
const Origin = "engine"

// Alert is one scenario overflow, the alert-notifications message (DESIGN.md).
type Alert struct {
	V         int       `json:"v"`
	IP        string    `json:"ip"`
	Scenario  string    `json:"scenario"`
	Country   string    `json:"country"`
	Events    int       `json:"events"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Decision is the remedy decided for this alert; nil when the scenario
	// asks for none or a decision at least as long is already running on
	// the address.
	Decision  *AlertDecision `json:"decision"`
	Simulated bool           `json:"simulated"`
	// Host is the engine host name, when configured.
	Host string `json:"host,omitempty"`
}

// AlertDecision summarises the decision an alert led to.
type AlertDecision struct {
	Type     decisionfeed.Type `json:"type"`
	Duration string            `json:"duration"`
}

// Sink receives the engine's output, in order: each alert, then the
// decision it caused (if any). Methods are called from the goroutine that
// calls Engine.Event.
type Sink interface {
	Alert(Alert)
	Decision(decisionfeed.Decision)
}

// Config assembles an Engine.
type Config struct {
	// Scenarios to run, in report order (scenario.Sort).
	Scenarios []*scenario.Scenario
	// Profiles decide remedies; required.
	Profiles *profile.Profiles
	// Sink receives alerts and decisions; required.
	Sink Sink
	// Host is put in decisions and alerts (the engine's host name).
	Host string
	// MaxBuckets bounds each scenario's buckets (scenario.DefaultMaxBuckets if 0).
	MaxBuckets int
	// MaxOffenders bounds the addresses remembered for escalation and
	// de-duplication (DefaultMaxOffenders if 0).
	MaxOffenders int
}

// DefaultMaxOffenders is the offender memory bound used when none is set.
const DefaultMaxOffenders = 100_000

// Stats counts the detect stage's work.
type Stats struct {
	Events      uint64 // events offered
	NoSource    uint64 // events without a valid source address, dropped
	Whitelisted uint64 // events from whitelisted sources, dropped
	Alerts      uint64
	Decisions   uint64
	Repeats     uint64 // overflows of a scenario whose decision is still running, not reported
	Invalid     uint64 // decisions that failed validation, not sent
	GeoErrors   uint64 // country lookups that failed
	Scenarios   scenario.Stats
}

// Engine is the detect stage. It is not safe for concurrent use: feed it
// from one goroutine. Overflows are reported as the event that causes them
// arrives, so nothing is held back at the end of input.
type Engine struct {
	set       *scenario.Set
	maxBkt    int
	prof      *profile.Profiles
	sink      Sink
	host      string
	offenders *offenders
	scratch   []scenario.Overflow
	stats     Stats
}

// New builds an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Profiles == nil {
		return nil, errors.New("engine: no profiles")
	}
	if cfg.Sink == nil {
		return nil, errors.New("engine: no sink")
	}
	if len(cfg.Scenarios) == 0 {
		return nil, errors.New("engine: no scenarios")
	}
	max := cfg.MaxOffenders
	if max <= 0 {
		max = DefaultMaxOffenders
	}
	return &Engine{
		set:       scenario.NewSet(cfg.Scenarios, scenario.Options{MaxBuckets: cfg.MaxBuckets}),
		maxBkt:    cfg.MaxBuckets,
		prof:      cfg.Profiles,
		sink:      cfg.Sink,
		host:      cfg.Host,
		offenders: newOffenders(max),
	}, nil
}

// Reload replaces the scenarios and profiles between two events. Buckets
// of scenarios whose definition did not change are kept (scenario.Set.Reload),
// and so is the memory of offenders (running decisions, escalation). It
// returns how many scenarios kept their buckets.
func (e *Engine) Reload(scs []*scenario.Scenario, prof *profile.Profiles) (int, error) {
	if prof == nil || len(scs) == 0 {
		return 0, errors.New("engine reload: no scenarios or no profiles")
	}
	e.set = e.set.Reload(scs, scenario.Options{MaxBuckets: e.maxBkt})
	e.prof = prof
	return e.set.Stats().Kept, nil
}

// Stats returns the counters.
func (e *Engine) Stats() Stats {
	st := e.stats
	st.Scenarios = e.set.Stats()
	return st
}

// Event runs one event through the whitelist and the scenarios.
func (e *Engine) Event(ev *event.Event) {
	e.stats.Events++
	if !ev.Source.IsValid() || ev.Source.IsUnspecified() {
		e.stats.NoSource++
		return
	}
	if e.prof.Whitelisted(ev.Source) {
		e.stats.Whitelisted++
		return
	}
	e.scratch = e.set.Event(ev, e.scratch[:0])
	for i := range e.scratch {
		e.overflow(&e.scratch[i])
		e.scratch[i] = scenario.Overflow{}
	}
}

func (e *Engine) overflow(o *scenario.Overflow) {
	sc := o.Scenario
	now := o.Last
	off := e.offenders.get(o.Source, now)
	if off.runningFor(sc.Name, now) {
		e.stats.Repeats++
		return
	}
	rem := e.prof.Remedy(sc.Name)
	a := Alert{
		V: AlertVersion, IP: o.Source.String(), Scenario: sc.Name, Events: o.Events,
		FirstSeen: o.First, LastSeen: o.Last, Host: e.host,
	}
	if cc, err := e.prof.Country(o.Source); err != nil {
		e.stats.GeoErrors++
	} else {
		a.Country = cc
	}
	if !sc.Labels.Remediation {
		e.stats.Alerts++
		e.sink.Alert(a)
		return
	}
	// A new offence unless a decision is running on the address; it
	// counts once a decision is published (simulation does not escalate).
	offences := off.offences
	if !off.banned(now) {
		offences = off.nextOffence(now, e.prof.EscalationWindow())
	}
	dur := e.prof.Escalate(rem.Duration, offences)
	until := now.Add(dur)
	off.run(sc.Name, until)
	a.Simulated = rem.IsSimulated()
	if !a.Simulated && off.banned(now) && (dur <= off.dur || !until.After(off.until)) {
		// A decision at least as long is already running on the address:
		// only a more severe remedy replaces it.
		e.stats.Alerts++
		e.sink.Alert(a)
		return
	}
	a.Decision = &AlertDecision{Type: rem.Type, Duration: dur.String()}
	e.stats.Alerts++
	e.sink.Alert(a)
	if a.Simulated {
		return
	}
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, rem.Type, target(sc, o.Source), dur, Origin, now)
	d.Scenario = sc.Name
	d.Country = a.Country
	d.Host = e.host
	if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
		e.stats.Invalid++
		return
	}
	off.until, off.dur = until, dur
	off.offences, off.last = offences, now
	e.stats.Decisions++
	e.sink.Decision(d)
}

// target is what a decision on src covers: the address, or its IPv6
// prefix when the scenario asks for one (ipv6_prefix).
func target(sc *scenario.Scenario, src netip.Addr) netip.Prefix {
	if sc.IPv6Prefix > 0 && src.Is6() && !src.Is4In6() && sc.IPv6Prefix < 128 {
		if p, err := src.Prefix(sc.IPv6Prefix); err == nil {
			return p
		}
	}
	return netip.PrefixFrom(src, src.BitLen())
}

// ShortDuration formats d the way operators write it: 4h, 90m, 1h30m.
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// offender is what the engine remembers about an address that overflowed.
type offender struct {
	addr     netip.Addr
	until    time.Time     // end of the decision last published on it
	dur      time.Duration // and its duration
	offences int           // offences within the escalation window
	last     time.Time     // time of the last offence
	running  []running     // per scenario, until when its remedy runs
}

type running struct {
	scenario string
	until    time.Time
}

func (o *offender) banned(now time.Time) bool { return o.until.After(now) }

// nextOffence returns the count a new offence at now makes: offences
// older than the window are forgotten.
func (o *offender) nextOffence(now time.Time, window time.Duration) int {
	if window > 0 && now.Sub(o.last) > window {
		return 1
	}
	return o.offences + 1
}

func (o *offender) runningFor(sc string, now time.Time) bool {
	for _, r := range o.running {
		if r.scenario == sc {
			return r.until.After(now)
		}
	}
	return false
}

func (o *offender) run(sc string, until time.Time) {
	for i := range o.running {
		if o.running[i].scenario == sc {
			o.running[i].until = until
			return
		}
	}
	o.running = append(o.running, running{scenario: sc, until: until})
}

// offenders is a bounded LRU of offender records.
type offenders struct {
	max int
	m   map[netip.Addr]*list.Element
	lru list.List
}

func newOffenders(max int) *offenders {
	return &offenders{max: max, m: map[netip.Addr]*list.Element{}}
}

func (o *offenders) get(a netip.Addr, now time.Time) *offender {
	if el, ok := o.m[a]; ok {
		o.lru.MoveToFront(el)
		return el.Value.(*offender)
	}
	if o.lru.Len() >= o.max {
		old := o.lru.Back()
		o.lru.Remove(old)
		delete(o.m, old.Value.(*offender).addr)
	}
	off := &offender{addr: a, last: now}
	o.m[a] = o.lru.PushFront(off)
	return off
}

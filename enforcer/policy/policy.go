// Package policy is the one place that decides, for every bouncer, which
// decisions are enforced and which addresses are never banned.
//
// Filters choose decisions by type, origin and scenario (a bouncer at the
// edge may enforce only bans from the engine and the CLI, nginx only
// captchas). Protection refuses a ban that covers an address the bouncer
// must keep reaching or must never cut off: the configured whitelist,
// loopback, the host's own addresses, and the bouncer's dependencies (its
// Kafka brokers and upstreams, as resolved, re-resolved periodically;
// every address a dependency ever resolved to stays protected, so a ban
// stays refused while the brokers move). The runner (enforcer/runner)
// consults a Policy for every decision and counts what it refuses.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
)

// Refusal reasons: why a ban was refused, as logged and counted.
const (
	RefusedWhitelist   = "whitelist"
	RefusedLoopback    = "loopback"
	RefusedHostAddress = "host_address"
	RefusedDependency  = "dependency"
)

// Filter reasons: why a decision was not enforced at all.
const (
	FilteredType     = "type"
	FilteredOrigin   = "origin"
	FilteredScenario = "scenario"
)

// Loopback are the loopback ranges, never banned by any bouncer.
var Loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// Options are what a bouncer tells its policy beyond the configuration.
type Options struct {
	// Supported are the decision types the bouncer can enforce; empty
	// means ban only.
	Supported []decisionfeed.Type
	// Dependencies are what the bouncer must keep reaching, as "host:port"
	// or "host" (brokers, an API upstream). Names are resolved at New and
	// every HostAddressesRefresh.
	Dependencies []string
	// HostAddrs returns the host's own addresses; nil means
	// InterfaceAddrs.
	HostAddrs func() ([]netip.Addr, error)
	// Resolve looks a host name up; nil means the system resolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Logger receives one line per refused decision (nil: discarded).
	Logger *slog.Logger
}

// Policy applies a Config. It is safe for concurrent use; Filter and
// Protected do not block on Refresh.
type Policy struct {
	cfg       Config
	opt       Options
	types     map[decisionfeed.Type]bool
	origins   map[string]bool
	scenarios map[string]bool
	prefixes  []string // scenario prefixes, from entries ending in *
	whitelist *bart.Lite
	loopback  *bart.Lite
	logger    *slog.Logger

	prot atomic.Pointer[protected]

	mu      sync.Mutex
	deps    map[netip.Addr]string // every address a dependency resolved to, and which
	logged  map[string]struct{}
	refused atomic.Int64
}

// protected is an immutable snapshot of the addresses read at run time.
type protected struct {
	hosts *bart.Lite
	deps  *bart.Lite
	names map[netip.Addr]string
}

// maxLogged bounds the decisions remembered as logged; beyond it the memory
// is cleared and a decision may be logged once more.
const maxLogged = 1 << 14

// New returns the policy of cfg, reading the host's addresses and
// resolving the dependencies once. A host whose addresses cannot be read
// is an error; a dependency that does not resolve yet is logged and
// resolved again at the next Refresh.
func New(ctx context.Context, cfg Config, opt Options) (*Policy, error) {
	if len(opt.Supported) == 0 {
		opt.Supported = []decisionfeed.Type{decisionfeed.TypeBan}
	}
	if err := cfg.Validate(opt.Supported); err != nil {
		return nil, err
	}
	if opt.HostAddrs == nil {
		opt.HostAddrs = InterfaceAddrs
	}
	if opt.Resolve == nil {
		opt.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	p := &Policy{
		cfg:       cfg,
		opt:       opt,
		types:     map[decisionfeed.Type]bool{},
		whitelist: &bart.Lite{},
		loopback:  &bart.Lite{},
		logger:    opt.Logger,
		deps:      map[netip.Addr]string{},
		logged:    map[string]struct{}{},
	}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	types := cfg.Types
	if len(types) == 0 {
		types = opt.Supported
	}
	for _, t := range types {
		p.types[t] = true
	}
	if len(cfg.Origins) > 0 {
		p.origins = map[string]bool{}
		for _, o := range cfg.Origins {
			p.origins[o] = true
		}
	}
	if len(cfg.Scenarios) > 0 {
		p.scenarios = map[string]bool{}
		for _, s := range cfg.Scenarios {
			if pre, ok := strings.CutSuffix(s, "*"); ok {
				p.prefixes = append(p.prefixes, pre)
			} else {
				p.scenarios[s] = true
			}
		}
	}
	for _, w := range cfg.Whitelist {
		p.whitelist.Insert(enforcer.MustCanonical(w))
	}
	for _, l := range Loopback {
		p.loopback.Insert(l)
	}
	p.prot.Store(&protected{hosts: &bart.Lite{}, deps: &bart.Lite{}})
	if _, err := p.Refresh(ctx); err != nil {
		var re *resolveError
		if !errors.As(err, &re) {
			return nil, err
		}
		p.logger.Warn("dependency not resolved; retrying at the next refresh", "err", err)
	}
	return p, nil
}

// Types returns the decision types the policy enforces.
func (p *Policy) Types() []decisionfeed.Type {
	out := make([]decisionfeed.Type, 0, len(p.types))
	for _, t := range knownTypes {
		if p.types[t] {
			out = append(out, t)
		}
	}
	return out
}

// RefreshInterval is how often Refresh is meant to be called (0: never).
func (p *Policy) RefreshInterval() time.Duration { return p.cfg.HostAddressesRefresh }

// Filter returns why an add decision is not to be enforced (FilteredType,
// FilteredOrigin, FilteredScenario), or "" when it passes the filters.
func (p *Policy) Filter(d *decisionfeed.Decision) string {
	switch {
	case !p.types[d.Type]:
		return FilteredType
	case p.origins != nil && !p.origins[d.Origin]:
		return FilteredOrigin
	case p.scenarios != nil && !p.scenarioMatches(d.Scenario):
		return FilteredScenario
	}
	return ""
}

// Accept reports whether d passes the filters, in the shape of a feed
// subscriber's per-decision filter.
func (p *Policy) Accept(d *decisionfeed.Decision) bool { return p.Filter(d) == "" }

func (p *Policy) scenarioMatches(s string) bool {
	if s == "" {
		return false
	}
	if p.scenarios[s] {
		return true
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(s, pre) {
			return true
		}
	}
	return false
}

// Protected returns why a ban of prefix (canonical, see enforcer.Canonical)
// must be refused, or "" when it may be enforced. A range is refused when
// it overlaps a protected address or range.
func (p *Policy) Protected(prefix netip.Prefix) string {
	why, _ := p.protectedBy(prefix)
	return why
}

// protectedBy is Protected with what is protected, for the log.
func (p *Policy) protectedBy(prefix netip.Prefix) (reason, what string) {
	if p.whitelist.OverlapsPrefix(prefix) {
		return RefusedWhitelist, ""
	}
	if p.loopback.OverlapsPrefix(prefix) {
		return RefusedLoopback, ""
	}
	pr := p.prot.Load()
	if pr.deps.OverlapsPrefix(prefix) {
		for a, name := range pr.names {
			if prefix.Contains(a) {
				return RefusedDependency, name + " (" + a.String() + ")"
			}
		}
		return RefusedDependency, ""
	}
	if pr.hosts.OverlapsPrefix(prefix) {
		return RefusedHostAddress, ""
	}
	return "", ""
}

// Refused logs, once per decision key and reason, that a ban was refused,
// and counts it. The runner calls it for every refusal.
func (p *Policy) Refused(key string, prefix netip.Prefix, reason string) {
	p.refused.Add(1)
	k := key + "\x00" + reason
	p.mu.Lock()
	_, seen := p.logged[k]
	if !seen {
		if len(p.logged) >= maxLogged {
			clear(p.logged)
		}
		p.logged[k] = struct{}{}
	}
	p.mu.Unlock()
	if seen {
		return
	}
	attrs := []any{"key", key, "prefix", prefix.String(), "reason", reason}
	if _, what := p.protectedBy(prefix); what != "" {
		attrs = append(attrs, "protects", what)
	}
	p.logger.Warn("refused ban of a protected address", attrs...)
}

// RefusedCount returns how many refusals Refused was told of.
func (p *Policy) RefusedCount() int64 { return p.refused.Load() }

// resolveError is a dependency that did not resolve.
type resolveError struct {
	dep string
	err error
}

func (e *resolveError) Error() string { return "resolve " + e.dep + ": " + e.err.Error() }
func (e *resolveError) Unwrap() error { return e.err }

// resolveTimeout bounds the lookup of one dependency.
const resolveTimeout = 2 * time.Second

// Refresh reads the host's addresses and resolves the dependencies again,
// and reports whether the protected addresses changed. Dependency
// addresses only accumulate; a failed read or lookup keeps what was known.
func (p *Policy) Refresh(ctx context.Context) (changed bool, err error) {
	old := p.prot.Load()
	hosts := old.hosts
	var errs []error
	if p.cfg.ProtectHostAddresses {
		addrs, herr := p.opt.HostAddrs()
		if herr != nil {
			errs = append(errs, fmt.Errorf("host addresses: %w", herr))
		} else {
			hosts = &bart.Lite{}
			for _, a := range addrs {
				if pf, aerr := enforcer.CanonicalAddr(a); aerr == nil {
					hosts.Insert(pf)
				}
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	grew := false
	for _, dep := range p.opt.Dependencies {
		addrs, rerr := p.resolve(ctx, dep)
		if rerr != nil {
			errs = append(errs, rerr)
			continue
		}
		for _, a := range addrs {
			a = a.Unmap().WithZone("")
			if _, ok := p.deps[a]; !ok && a.IsValid() {
				p.deps[a] = dep
				grew = true
			}
		}
	}
	next := &protected{hosts: hosts, deps: old.deps, names: old.names}
	if grew {
		next.deps = &bart.Lite{}
		next.names = make(map[netip.Addr]string, len(p.deps))
		for a, name := range p.deps {
			next.deps.Insert(netip.PrefixFrom(a, a.BitLen()))
			next.names[a] = name
		}
	}
	changed = grew || !old.hosts.Equal(hosts)
	p.prot.Store(next)
	return changed, errors.Join(errs...)
}

func (p *Policy) resolve(ctx context.Context, dep string) ([]netip.Addr, error) {
	host := dep
	if h, _, err := net.SplitHostPort(dep); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := p.opt.Resolve(ctx, host)
	if err != nil {
		return nil, &resolveError{dep: dep, err: err}
	}
	return addrs, nil
}

// Dependencies returns every address a dependency resolved to so far, with
// the dependency's name, sorted by address.
func (p *Policy) Dependencies() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.deps))
	addrs := make([]netip.Addr, 0, len(p.deps))
	for a := range p.deps {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		out = append(out, p.deps[a]+"="+a.String())
	}
	return out
}

// InterfaceAddrs returns the addresses of every interface of the host (of
// the calling process's network namespace).
func InterfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

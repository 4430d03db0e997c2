// Package profile decides what an overflowing scenario costs the offender:
// the remedy and ban duration per scenario, escalation for repeat
// offenders, per-scenario simulation, the whitelist (always holding the
// host's own addresses) and optional country enrichment from a
// MaxMind-format database.
package profile

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/gaissmai/bart"
	"github.com/oschwald/maxminddb-golang/v2"
	"gopkg.in/yaml.v3"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine/internal/strictyaml"
)

// Remedy is what one scenario's overflow asks for. In a scenario entry,
// zero fields inherit the default remedy.
type Remedy struct {
	// Type is the decision type: ban, captcha or throttle.
	Type decisionfeed.Type `yaml:"type"`
	// Duration is the base decision duration, before escalation.
	Duration time.Duration `yaml:"duration"`
	// Simulated alerts without publishing a decision.
	Simulated *bool `yaml:"simulated"`
}

// Escalation lengthens decisions for repeat offenders: the n-th offence
// within Window lasts Duration * Multiplier^(n-1), at most MaxDuration.
type Escalation struct {
	Multiplier  float64       `yaml:"multiplier"`
	MaxDuration time.Duration `yaml:"max_duration"`
	Window      time.Duration `yaml:"window"`
}

// GeoIP configures country enrichment.
type GeoIP struct {
	// CountryMMDB is a MaxMind-format database with country.iso_code
	// (GeoLite2-Country, DB-IP lite). Empty disables enrichment.
	CountryMMDB string `yaml:"country_mmdb"`
}

// Config is the profiles file.
type Config struct {
	Default    Remedy            `yaml:"default"`
	Scenarios  map[string]Remedy `yaml:"scenarios"`
	Escalation Escalation        `yaml:"escalation"`
	// Whitelist holds addresses and CIDR ranges never acted on. The host's
	// own addresses are added at New whatever the file says.
	Whitelist []string `yaml:"whitelist"`
	// WhitelistPrivate (default true) adds PrivateRanges to the whitelist:
	// loopback, RFC 1918, link-local and unique-local addresses are never
	// acted on, as with CrowdSec's default whitelist. `whitelist_private:
	// false` turns that off.
	WhitelistPrivate *bool `yaml:"whitelist_private"`
	GeoIP            GeoIP `yaml:"geoip"`
}

// Names of the shipped scenarios that have their own default durations.
const (
	SSHBruteForce     = "crowdsecurity/ssh-bf"
	SSHSlowBruteForce = "crowdsecurity/ssh-slow-bf"
	HTTPCrawl         = "crowdsecurity/http-crawl-non_statics"
	WordPressBF       = "crowdsecurity/http-bf-wordpress_bf"
	CVE202141773      = "crowdsecurity/http-cve-2021-41773"
	CVE202142013      = "crowdsecurity/http-cve-2021-42013"
	Log4Shell         = "crowdsecurity/apache_log4j2_cve-2021-44228"
	CVE20179841       = "crowdsecurity/CVE-2017-9841"
	BadUserAgent      = "crowdsecurity/http-bad-user-agent"
	HTTPProbing       = "crowdsecurity/http-probing"
	SensitiveFiles    = "crowdsecurity/http-sensitive-files"
	L7Flood           = "portcullis/http-l7-flood"
)

// DefaultConfig returns the seed's durations: ssh-bf 4h, crawl 1h,
// wordpress 4h, CVE probes 48h, bad user agent 24h, L7 flood 12h; others
// 4h. Escalation doubles up to a week over a week's memory. It equals the
// shipped config/profiles.yaml.
func DefaultConfig() Config {
	d := func(h int) Remedy { return Remedy{Duration: time.Duration(h) * time.Hour} }
	return Config{
		Default: Remedy{Type: decisionfeed.TypeBan, Duration: 4 * time.Hour, Simulated: new(bool)},
		Scenarios: map[string]Remedy{
			SSHBruteForce:     d(4),
			SSHSlowBruteForce: d(4),
			HTTPCrawl:         d(1),
			WordPressBF:       d(4),
			CVE202141773:      d(48),
			CVE202142013:      d(48),
			Log4Shell:         d(48),
			CVE20179841:       d(48),
			BadUserAgent:      d(24),
			HTTPProbing:       d(4),
			SensitiveFiles:    d(4),
			L7Flood:           d(12),
		},
		Escalation:       Escalation{Multiplier: 2, MaxDuration: 7 * 24 * time.Hour, Window: 7 * 24 * time.Hour},
		Whitelist:        []string{"127.0.0.0/8", "::1"},
		WhitelistPrivate: func() *bool { b := true; return &b }(),
	}
}

// Load reads a profiles file over DefaultConfig and validates it. Errors
// name the file and line.
func Load(file string) (Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("read profiles: %w", err)
	}
	return Parse(file, data)
}

// Parse decodes profiles from data (named file in errors) over
// DefaultConfig: a scenario entry in the file replaces the shipped entry of
// that scenario (its missing fields inherit the file's default), other
// shipped entries stay, and the whitelist is the file's alone (New always
// adds the host's addresses).
func Parse(file string, data []byte) (Config, error) {
	cfg := DefaultConfig()
	cfg.Whitelist = nil
	root, err := strictyaml.Decode(file, data, &cfg)
	if err != nil {
		return Config{}, err
	}
	if err := cfg.validate(file, root); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks the configuration without touching the system.
func (c *Config) Validate() error { return c.validate("profiles", nil) }

func (c *Config) validate(file string, root *yaml.Node) error {
	bad := func(path []string, format string, args ...any) error {
		if root == nil {
			return fmt.Errorf("%s: %s", file, fmt.Sprintf(format, args...))
		}
		return strictyaml.Errorf(file, root, path, format, args...)
	}
	max := decisionfeed.DefaultLimits().MaxDuration
	check := func(path []string, r Remedy, isDefault bool) error {
		switch r.Type {
		case decisionfeed.TypeBan, decisionfeed.TypeCaptcha, decisionfeed.TypeThrottle:
		case "":
			if isDefault {
				return bad(append(path, "type"), "type: missing (ban, captcha or throttle)")
			}
		default:
			return bad(append(path, "type"), "type: %q is not ban, captcha or throttle", r.Type)
		}
		if r.Duration < 0 || r.Duration > max || (isDefault && r.Duration < time.Second) {
			return bad(append(path, "duration"), "duration: %s is not between 1s and %s", r.Duration, max)
		}
		if r.Duration != 0 && r.Duration < time.Second {
			return bad(append(path, "duration"), "duration: %s is shorter than 1s", r.Duration)
		}
		return nil
	}
	if err := check([]string{"default"}, c.Default, true); err != nil {
		return err
	}
	for name, r := range c.Scenarios {
		if name == "" {
			return bad([]string{"scenarios"}, "scenarios: empty scenario name")
		}
		if err := check([]string{"scenarios", name}, r, false); err != nil {
			return err
		}
	}
	e := c.Escalation
	if e.Multiplier < 1 || e.Multiplier > 100 {
		return bad([]string{"escalation", "multiplier"}, "multiplier: %v is not between 1 and 100", e.Multiplier)
	}
	if e.MaxDuration < 0 || e.MaxDuration > max {
		return bad([]string{"escalation", "max_duration"}, "max_duration: %s is not between 0 and %s", e.MaxDuration, max)
	}
	if e.Window < 0 {
		return bad([]string{"escalation", "window"}, "window: negative")
	}
	for i, w := range c.Whitelist {
		if _, err := parsePrefix(w); err != nil {
			return bad([]string{"whitelist", fmt.Sprint(i)}, "whitelist: %v", err)
		}
	}
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR range", s)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Profiles applies a validated Config.
type Profiles struct {
	cfg       Config
	whitelist bart.Lite
	geo       *maxminddb.Reader
}

// New builds the whitelist (adding every address of the host's
// interfaces) and opens the country database if one is configured.
func New(cfg Config) (*Profiles, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Profiles{cfg: cfg}
	if cfg.PrivateWhitelisted() {
		for _, pfx := range PrivateRanges {
			p.allow(pfx)
		}
	}
	for _, w := range cfg.Whitelist {
		pfx, _ := parsePrefix(w) // validated
		p.allow(pfx)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list host addresses for the whitelist: %w", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				ip = ip.Unmap()
				p.allow(netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	if cfg.GeoIP.CountryMMDB != "" {
		r, err := maxminddb.Open(cfg.GeoIP.CountryMMDB)
		if err != nil {
			return nil, fmt.Errorf("open country database %s: %w", cfg.GeoIP.CountryMMDB, err)
		}
		p.geo = r
	}
	return p, nil
}

func (p *Profiles) allow(pfx netip.Prefix) { p.whitelist.Insert(pfx) }

// PrivateRanges are the ranges WhitelistPrivate adds: loopback, RFC 1918,
// link-local (IPv4 and IPv6) and IPv6 unique-local addresses.
var PrivateRanges = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fc00::/7"),
}

// PrivateWhitelisted reports whether the private ranges are whitelisted.
func (c *Config) PrivateWhitelisted() bool { return c.WhitelistPrivate == nil || *c.WhitelistPrivate }

// Close releases the country database.
func (p *Profiles) Close() error {
	if p.geo != nil {
		if err := p.geo.Close(); err != nil {
			return fmt.Errorf("close country database: %w", err)
		}
	}
	return nil
}

// Whitelisted reports whether a is covered by the whitelist.
func (p *Profiles) Whitelisted(a netip.Addr) bool { return p.whitelist.Lookup(a.Unmap()) }

// Country returns the ISO 3166 alpha-2 code of a, or "" when unknown or
// no database is configured.
func (p *Profiles) Country(a netip.Addr) (string, error) {
	if p.geo == nil {
		return "", nil
	}
	var code string
	if err := p.geo.Lookup(a).DecodePath(&code, "country", "iso_code"); err != nil {
		return "", fmt.Errorf("country of %s: %w", a, err)
	}
	if len(code) != 2 || code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z' {
		return "", nil // not an ISO code: do not put it in a decision
	}
	return code, nil
}

// Remedy returns the remedy for a scenario, defaults filled in.
func (p *Profiles) Remedy(scenario string) Remedy { return p.cfg.RemedyFor(scenario) }

// RemedyFor is the remedy the configuration gives a scenario: its entry
// over the default.
func (c *Config) RemedyFor(scenario string) Remedy {
	r := c.Default
	if s, ok := c.Scenarios[scenario]; ok {
		if s.Type != "" {
			r.Type = s.Type
		}
		if s.Duration != 0 {
			r.Duration = s.Duration
		}
		if s.Simulated != nil {
			r.Simulated = s.Simulated
		}
	}
	return r
}

// IsSimulated reports whether the remedy only alerts.
func (r Remedy) IsSimulated() bool { return r.Simulated != nil && *r.Simulated }

// Escalate returns the duration of an offender's n-th offence (n >= 1).
func (p *Profiles) Escalate(base time.Duration, n int) time.Duration {
	e := p.cfg.Escalation
	d := float64(base)
	for i := 1; i < n && e.Multiplier > 1; i++ {
		d *= e.Multiplier
		if e.MaxDuration > 0 && d >= float64(e.MaxDuration) {
			return max(base, e.MaxDuration)
		}
	}
	out := time.Duration(d)
	if e.MaxDuration > 0 && out > e.MaxDuration {
		out = max(base, e.MaxDuration)
	}
	return out
}

// EscalationWindow is how long an offence counts toward escalation.
func (p *Profiles) EscalationWindow() time.Duration { return p.cfg.Escalation.Window }

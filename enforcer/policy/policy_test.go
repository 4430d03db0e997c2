package policy

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/config"
)

var (
	banAndCaptcha = []decisionfeed.Type{decisionfeed.TypeBan, decisionfeed.TypeCaptcha}
	noHosts       = func() ([]netip.Addr, error) { return nil, nil }
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"unknown type", func(c *Config) { c.Types = []decisionfeed.Type{"kick"} }, `types: "kick" is not a decision type (ban, captcha, throttle)`},
		{"unsupported type", func(c *Config) { c.Types = []decisionfeed.Type{"throttle"} }, `types: "throttle" is not enforced by this bouncer (it enforces ban, captcha)`},
		{"unknown origin", func(c *Config) { c.Origins = []string{"engine", "cscli"} }, `origins: "cscli" is not an origin (engine, cli, blocklist, crowdsec, console)`},
		{"empty scenario", func(c *Config) { c.Scenarios = []string{""} }, `scenarios: "" is not a scenario name or a prefix ending in *`},
		{"inner star", func(c *Config) { c.Scenarios = []string{"a*b"} }, `scenarios: "a*b" is not a scenario name or a prefix ending in *`},
		{"space", func(c *Config) { c.Scenarios = []string{"a b"} }, `scenarios: "a b" is not a scenario name or a prefix ending in *`},
		{"bad whitelist", func(c *Config) { c.Whitelist = Prefixes{{}} }, `whitelist[0]: invalid prefix`},
		{"negative refresh", func(c *Config) { c.HostAddressesRefresh = -1 }, `host_addresses_refresh: -1ns is negative`},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		if err := c.Validate(banAndCaptcha); err == nil || err.Error() != tc.want {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
	c := DefaultConfig()
	c.Types = banAndCaptcha
	c.Origins = []string{"engine", "cli"}
	c.Scenarios = []string{"crowdsecurity/*", "blocklist/firehol"}
	if err := c.Validate(banAndCaptcha); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func newPolicy(t *testing.T, cfg Config, opt Options) *Policy {
	t.Helper()
	if opt.HostAddrs == nil {
		opt.HostAddrs = noHosts
	}
	p, err := New(context.Background(), cfg, opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func dec(typ decisionfeed.Type, origin, scenario string) *decisionfeed.Decision {
	return &decisionfeed.Decision{Op: decisionfeed.OpAdd, Type: typ, Origin: origin, Scenario: scenario}
}

// TestFilter is the edge/nginx split of the issue: the edge enforces only
// bans from the engine and the CLI, nginx only captchas.
func TestFilter(t *testing.T) {
	edgeCfg := DefaultConfig()
	edgeCfg.Types = []decisionfeed.Type{decisionfeed.TypeBan}
	edgeCfg.Origins = []string{"engine", "cli"}
	edge := newPolicy(t, edgeCfg, Options{Supported: banAndCaptcha})
	nginxCfg := DefaultConfig()
	nginxCfg.Types = []decisionfeed.Type{decisionfeed.TypeCaptcha}
	nginxCfg.Scenarios = []string{"crowdsecurity/*", "custom/one"}
	nginx := newPolicy(t, nginxCfg, Options{Supported: banAndCaptcha})
	kernel := newPolicy(t, DefaultConfig(), Options{})

	for _, tc := range []struct {
		d                   *decisionfeed.Decision
		edge, nginx, kernel string
	}{
		{dec("ban", "engine", "crowdsecurity/ssh-bf"), "", FilteredType, ""},
		{dec("ban", "cli", ""), "", FilteredType, ""},
		{dec("ban", "blocklist", "blocklist/x"), FilteredOrigin, FilteredType, ""},
		{dec("captcha", "engine", "crowdsecurity/http-crawl"), FilteredType, "", FilteredType},
		{dec("captcha", "engine", "custom/one"), FilteredType, "", FilteredType},
		{dec("captcha", "engine", "custom/two"), FilteredType, FilteredScenario, FilteredType},
		{dec("captcha", "cli", ""), FilteredType, FilteredScenario, FilteredType},
		{dec("throttle", "engine", "crowdsecurity/x"), FilteredType, FilteredType, FilteredType},
	} {
		name := string(tc.d.Type) + "/" + tc.d.Origin + "/" + tc.d.Scenario
		if got := edge.Filter(tc.d); got != tc.edge {
			t.Errorf("edge %s: %q, want %q", name, got, tc.edge)
		}
		if got := nginx.Filter(tc.d); got != tc.nginx {
			t.Errorf("nginx %s: %q, want %q", name, got, tc.nginx)
		}
		if got := kernel.Filter(tc.d); got != tc.kernel {
			t.Errorf("kernel %s: %q, want %q", name, got, tc.kernel)
		}
		if edge.Accept(tc.d) != (tc.edge == "") {
			t.Errorf("edge Accept(%s) disagrees with Filter", name)
		}
	}
	if got := kernel.Types(); !slices.Equal(got, []decisionfeed.Type{"ban"}) {
		t.Errorf("kernel types = %v", got)
	}
}

func TestProtected(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Whitelist = Prefixes{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	p := newPolicy(t, cfg, Options{
		HostAddrs: func() ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("fe80::1%eth0")}, nil
		},
		Dependencies: []string{"192.0.2.77:9092", "[2001:db8:b::1]:9092", "kafka.example:9093"},
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			if host != "kafka.example" {
				return nil, errors.New("no such host")
			}
			return []netip.Addr{netip.MustParseAddr("192.0.2.200")}, nil
		},
	})
	for in, want := range map[string]string{
		"198.51.100.7/32":    RefusedWhitelist,
		"198.51.0.0/16":      RefusedWhitelist, // a range overlapping the whitelist
		"198.51.100.128/25":  RefusedWhitelist,
		"2001:db8:ffff::/64": RefusedWhitelist,
		"127.0.0.1/32":       RefusedLoopback,
		"127.5.0.0/16":       RefusedLoopback,
		"::1/128":            RefusedLoopback,
		"203.0.113.5/32":     RefusedHostAddress,
		"203.0.113.0/24":     RefusedHostAddress,
		"fe80::1/128":        RefusedHostAddress,
		"192.0.2.77/32":      RefusedDependency,
		"192.0.2.0/24":       RefusedDependency,
		"192.0.2.200/32":     RefusedDependency,
		"2001:db8:b::/48":    RefusedDependency,
		"192.0.2.78/32":      "",
		"203.0.113.6/32":     "",
		"2001:db8::1/128":    "",
		"10.0.0.0/8":         "",
	} {
		if got := p.Protected(netip.MustParsePrefix(in)); got != want {
			t.Errorf("Protected(%s) = %q, want %q", in, got, want)
		}
	}
	if got := p.Dependencies(); !slices.Equal(got, []string{"192.0.2.77:9092=192.0.2.77", "kafka.example:9093=192.0.2.200", "[2001:db8:b::1]:9092=2001:db8:b::1"}) {
		t.Errorf("Dependencies = %v", got)
	}
}

// TestDependenciesStayProtected checks that a broker that moves leaves its
// old address protected, that a failed lookup keeps what was known, and
// that Refresh says when the protected set changed.
func TestDependenciesStayProtected(t *testing.T) {
	var mu sync.Mutex
	answer, fail := []netip.Addr{netip.MustParseAddr("192.0.2.10")}, false
	cfg := DefaultConfig()
	cfg.ProtectHostAddresses = false
	p := newPolicy(t, cfg, Options{
		Dependencies: []string{"kafka-1:9092"},
		HostAddrs:    func() ([]netip.Addr, error) { t.Error("host addresses read although not protected"); return nil, nil },
		Resolve: func(context.Context, string) ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return nil, errors.New("server misbehaving")
			}
			return answer, nil
		},
	})
	old, moved := netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("192.0.2.11/32")
	if p.Protected(old) != RefusedDependency || p.Protected(moved) != "" {
		t.Fatal("initial resolution not protected")
	}
	if changed, err := p.Refresh(context.Background()); changed || err != nil {
		t.Fatalf("Refresh with nothing new = %v, %v", changed, err)
	}
	mu.Lock()
	answer = []netip.Addr{netip.MustParseAddr("192.0.2.11")}
	mu.Unlock()
	if changed, err := p.Refresh(context.Background()); !changed || err != nil {
		t.Fatalf("Refresh after the broker moved = %v, %v", changed, err)
	}
	if p.Protected(old) != RefusedDependency || p.Protected(moved) != RefusedDependency {
		t.Fatal("after the move, old and new addresses must both be protected")
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	changed, err := p.Refresh(context.Background())
	if changed || err == nil || !strings.Contains(err.Error(), "resolve kafka-1:9092: server misbehaving") {
		t.Fatalf("Refresh with a failing resolver = %v, %v", changed, err)
	}
	if p.Protected(moved) != RefusedDependency {
		t.Fatal("a failed lookup dropped the protection")
	}
}

func TestNewToleratesUnresolvedDependency(t *testing.T) {
	var logs bytes.Buffer
	p := newPolicy(t, DefaultConfig(), Options{
		Dependencies: []string{"kafka.invalid:9092"},
		Resolve:      func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("no such host") },
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if len(p.Dependencies()) != 0 || !strings.Contains(logs.String(), "dependency not resolved") {
		t.Fatalf("deps %v, logs %q", p.Dependencies(), logs.String())
	}
	_, err := New(context.Background(), DefaultConfig(), Options{HostAddrs: func() ([]netip.Addr, error) { return nil, errors.New("netlink: denied") }})
	if err == nil || err.Error() != "host addresses: netlink: denied" {
		t.Fatalf("New with unreadable host addresses = %v", err)
	}
}

func TestHostAddressesFollowTheHost(t *testing.T) {
	var mu sync.Mutex
	hosts := []netip.Addr{netip.MustParseAddr("203.0.113.1")}
	p := newPolicy(t, DefaultConfig(), Options{HostAddrs: func() ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(hosts), nil
	}})
	a, b := netip.MustParsePrefix("203.0.113.1/32"), netip.MustParsePrefix("203.0.113.2/32")
	mu.Lock()
	hosts = []netip.Addr{netip.MustParseAddr("203.0.113.2")}
	mu.Unlock()
	if changed, err := p.Refresh(context.Background()); !changed || err != nil {
		t.Fatalf("Refresh = %v, %v", changed, err)
	}
	if p.Protected(a) != "" || p.Protected(b) != RefusedHostAddress {
		t.Fatal("host protection does not follow the host's addresses")
	}
}

func TestRefusedLogsOncePerDecision(t *testing.T) {
	var logs bytes.Buffer
	p := newPolicy(t, DefaultConfig(), Options{
		Dependencies: []string{"192.0.2.9:9092"},
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
	})
	pf := netip.MustParsePrefix("192.0.2.0/24")
	for range 3 {
		p.Refused("range:192.0.2.0/24", pf, RefusedDependency)
	}
	p.Refused("ip:127.0.0.1", netip.MustParsePrefix("127.0.0.1/32"), RefusedLoopback)
	if n := strings.Count(logs.String(), "refused ban of a protected address"); n != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `protects="192.0.2.9:9092 (192.0.2.9)"`) {
		t.Errorf("the log does not name the dependency:\n%s", logs.String())
	}
	if p.RefusedCount() != 4 {
		t.Errorf("RefusedCount = %d, want 4", p.RefusedCount())
	}
}

func TestFlags(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Whitelist = Prefixes{netip.MustParsePrefix("192.0.2.1/32")}
	cfg.Origins = []string{"blocklist"}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := RegisterFlags(fs)
	err := fs.Parse([]string{"--whitelist", "198.51.100.0/24,2001:db8::1", "--whitelist", "::ffff:10.0.0.1", "--types", "ban, captcha", "--scenarios", "crowdsecurity/*"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	want := Prefixes{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("10.0.0.1/32")}
	if !slices.Equal(cfg.Whitelist, want) || !slices.Equal(cfg.Types, banAndCaptcha) ||
		!slices.Equal(cfg.Origins, []string{"blocklist"}) || !slices.Equal(cfg.Scenarios, []string{"crowdsecurity/*"}) {
		t.Fatalf("after flags: %+v", cfg)
	}
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f = RegisterFlags(fs)
	_ = fs.Parse([]string{"--whitelist", "office"})
	if err := f.Apply(&cfg); err == nil || err.Error() != `--whitelist: "office" is not an IP address` {
		t.Fatalf("bad --whitelist: %v", err)
	}
}

func TestYAML(t *testing.T) {
	var c struct {
		Policy Config `yaml:",inline"`
	}
	c.Policy = DefaultConfig()
	src := "whitelist: [192.0.2.10, 198.51.100.9/24, '::ffff:10.1.2.3']\ntypes: [captcha]\norigins: [engine]\nscenarios: [crowdsecurity/*]\nprotect_host_addresses: false\n"
	if err := config.Decode("nginx.yaml", []byte(src), &c); err != nil {
		t.Fatal(err)
	}
	want := Prefixes{netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("10.1.2.3/32")}
	if !slices.Equal(c.Policy.Whitelist, want) || c.Policy.ProtectHostAddresses || c.Policy.Types[0] != "captcha" {
		t.Fatalf("decoded %+v", c.Policy)
	}
	err := config.Decode("nginx.yaml", []byte("types: [ban]\nwhitelist:\n  - 192.0.2.0/24\n  - office\n"), &c)
	if err == nil || err.Error() != `nginx.yaml: line 4: whitelist: "office" is not an IP address` {
		t.Fatalf("bad entry: %v", err)
	}
}

package main

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/internal/config"
)

func TestDecodeConfig(t *testing.T) {
	cfg := DefaultConfig()
	src := `listen: 127.0.0.1:9000
trusted_proxies: [10.0.0.0/8, "::1"]
fail_mode: closed
brokers: [k1:9092, k2:9092]
topic: decisions
sweep_interval: 30s
`
	if err := config.Decode("c.yaml", []byte(src), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "127.0.0.1:9000" || cfg.FailMode != FailClosed || cfg.Topic != "decisions" ||
		cfg.SweepInterval != 30*time.Second || len(cfg.Brokers) != 2 ||
		len(cfg.TrustedProxies) != 2 || cfg.TrustedProxies[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("decoded %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	for _, tc := range []struct{ src, want string }{
		{"listen: a:1\nnope: 1\n", "c.yaml: line 2: field nope not found"},
		{"trusted_proxies: [10.0.0.1, banana]\n", `c.yaml: line 1: "banana" is not an address or prefix`},
		{"trusted_proxies: 10.0.0.1\n", "c.yaml: line 1: want a list"},
		{"sweep_interval: soon\n", "c.yaml: line 1:"},
		{"", "c.yaml: empty document"},
		{"listen: a:1\n---\nlisten: b:2\n", "c.yaml: line 2: a second YAML document"},
	} {
		c := DefaultConfig()
		err := config.Decode("c.yaml", []byte(tc.src), &c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decode %q: %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.Listen = "8090" }, "listen:"},
		{func(c *Config) { c.FailMode = "maybe" }, `fail_mode: "maybe"`},
		{func(c *Config) { c.Brokers = nil }, "brokers: none"},
		{func(c *Config) { c.Brokers = []string{"k1"} }, "brokers[0]:"},
		{func(c *Config) { c.TrustedProxies = PrefixList{{}} }, "trusted_proxies[0]"},
		{func(c *Config) { c.Topic = "" }, "topic: empty"},
		{func(c *Config) { c.Group = "" }, "group: empty"},
		{func(c *Config) { c.MetricsListen = "x" }, "metrics_listen:"},
		{func(c *Config) { c.SweepInterval = 0 }, "sweep_interval:"},
		{func(c *Config) { c.Listen = "unix:relative.sock" }, "listen:"},
		{func(c *Config) { c.BanFile = "bans" }, "ban_file: path"},
	} {
		c := DefaultConfig()
		c.Brokers = []string{"k:9092"}
		tc.mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate: %v, want %q", err, tc.want)
		}
	}
}

func TestValidateAcceptsUnixAndBanFile(t *testing.T) {
	c := DefaultConfig()
	c.Brokers = []string{"k:9092"}
	c.Listen = "unix:/run/portcullis/nginx-bouncer.sock"
	c.BanFile = "/dev/shm/portcullis-nginx.bans"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParseArgs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("listen: 127.0.0.1:7000\nfail_mode: closed\nbrokers: [file:9092]\ntopic: from-file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PORTCULLIS_BROKERS", "env:9092")
	cfg, _, err := parseArgs([]string{"--config", file, "--fail-mode", "open", "--trusted-proxy", "10.0.0.1, 192.0.2.0/24"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The file beats defaults, the environment beats the file (DESIGN.md:
	// flag > environment > file > default); flags beat both.
	if cfg.Listen != "127.0.0.1:7000" || cfg.FailMode != FailOpen || cfg.Topic != "from-file" ||
		strings.Join(cfg.Brokers, ",") != "env:9092" ||
		len(cfg.TrustedProxies) != 2 || cfg.TrustedProxies[0] != netip.MustParsePrefix("10.0.0.1/32") {
		t.Errorf("parsed %+v", cfg)
	}
	cfg, _, err = parseArgs([]string{"--config", file, "--brokers", "flag:9092"}, io.Discard)
	if err != nil || strings.Join(cfg.Brokers, ",") != "flag:9092" {
		t.Errorf("--brokers over the environment: %v %v", cfg, err)
	}
	t.Setenv("PORTCULLIS_BROKERS", "")
	cfg, _, err = parseArgs([]string{"--config", file}, io.Discard)
	if err != nil || strings.Join(cfg.Brokers, ",") != "file:9092" {
		t.Errorf("the file without the environment: %v %v", cfg, err)
	}
	t.Setenv("PORTCULLIS_BROKERS", "env:9092")
	cfg, _, err = parseArgs(nil, io.Discard)
	if err != nil || strings.Join(cfg.Brokers, ",") != "env:9092" || cfg.FailMode != FailOpen {
		t.Errorf("defaults: %+v %v", cfg, err)
	}
	for _, args := range [][]string{
		{"--fail-mode", "shut"},
		{"--trusted-proxy", "10.0.0.300"},
		{"--config", filepath.Join(dir, "missing.yaml")},
		{"extra"},
	} {
		if _, _, err := parseArgs(args, io.Discard); err == nil {
			t.Errorf("parseArgs(%q): no error", args)
		}
	}
}

// FuzzDecodeConfig checks that any file decodes to a configuration or an
// error naming the file, and never panics.
func FuzzDecodeConfig(f *testing.F) {
	for _, s := range []string{
		"listen: 127.0.0.1:8090\n",
		"trusted_proxies: [10.0.0.0/8, \"::1\"]\nfail_mode: closed\n",
		"brokers: [k:9092]\nsweep_interval: 1m\n",
		"trusted_proxies: {a: b}\n",
		"---\n---\n",
		"listen: [\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := DefaultConfig()
		if err := config.Decode("f.yaml", data, &c); err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		_ = c.Validate()
	})
}

// TestPolicyConfig: the shared policy keys decode at the top level of the
// file, and bad entries are one-line errors naming the setting.
func TestPolicyConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nginx-bouncer.yaml")
	src := "brokers: [k1:9092]\nwhitelist: [198.51.100.0/24, 192.0.2.7]\ntypes: [captcha]\norigins: [engine]\nscenarios: [crowdsecurity/*]\n"
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := parseArgs([]string{"--config", p, "--whitelist", "2001:db8::/48"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Policy.Whitelist) != 3 || cfg.Policy.Whitelist[1] != netip.MustParsePrefix("192.0.2.7/32") ||
		len(cfg.Policy.Types) != 1 || cfg.Policy.Origins[0] != "engine" || cfg.Policy.Scenarios[0] != "crowdsecurity/*" {
		t.Fatalf("policy = %+v", cfg.Policy)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--types", "throttle"}, `config: types: "throttle" is not enforced by this bouncer (it enforces ban, captcha)`},
		{[]string{"--origins", "engine,bots"}, `config: origins: "bots" is not an origin (engine, cli, blocklist, crowdsec, console)`},
		{[]string{"--whitelist", "10.0.0.0/40"}, `--whitelist: "10.0.0.0/40" is not a CIDR range`},
	} {
		if _, _, err := parseArgs(tc.args, io.Discard); err == nil || err.Error() != tc.want {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if err := os.WriteFile(p, []byte("whitelist:\n  - office\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := parseArgs([]string{"--config", p}, io.Discard); err == nil || err.Error() != p+`: line 2: whitelist: "office" is not an IP address` {
		t.Errorf("bad whitelist entry: %v", err)
	}
}

// TestShippedConfig: config/nginx-bouncer.yaml decodes and validates.
func TestShippedConfig(t *testing.T) {
	cfg, _, err := parseArgs([]string{"--config", "../../config/nginx-bouncer.yaml"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Policy.Whitelist) != 1 || len(cfg.Policy.Types) != 2 {
		t.Fatalf("policy = %+v", cfg.Policy)
	}
}

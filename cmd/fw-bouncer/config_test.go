package main

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer/xdp"
	"github.com/portcullis-ips/portcullis/internal/bouncertest"
)

func TestConfigFileAndFlags(t *testing.T) {
	p := bouncertest.WriteFile(t, "fw-bouncer.yaml", `mode: xdp
brokers: [198.51.100.20:9092]
topic: decisions-a
whitelist: [192.0.2.10, 198.51.100.0/24]
coalesce: 2ms
xdp:
  interfaces: [eth9]
  mode: generic
  pin_path: /sys/fs/bpf/portcullis-test
`)
	o, err := parseArgs([]string{"--config", p, "--iface", "vic-a,vic-b", "--whitelist", "2001:db8:1::/48",
		"--xdp-mode", "native"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.Mode != "xdp" || c.Topic != "decisions-a" || c.Coalesce != 2*time.Millisecond {
		t.Errorf("mode/topic/coalesce = %q %q %s", c.Mode, c.Topic, c.Coalesce)
	}
	if !slices.Equal(c.Brokers, []string{"198.51.100.20:9092"}) {
		t.Errorf("brokers = %v, want the file's", c.Brokers)
	}
	if !slices.Equal(c.XDP.Interfaces, []string{"vic-a", "vic-b"}) || c.XDP.Mode != xdp.ModeNative ||
		c.XDP.PinPath != "/sys/fs/bpf/portcullis-test" {
		t.Errorf("xdp = %+v", c.XDP)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.10/32"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("2001:db8:1::/48"),
	}
	if got := c.Policy.Whitelist; !slices.Equal(got, want) {
		t.Errorf("whitelist = %v, want %v", got, want)
	}

	o, err = parseArgs([]string{"--config", p, "--brokers", "127.0.0.1:9093", "--topic", "t2", "--dry-run"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.cfg.Brokers, []string{"127.0.0.1:9093"}) || o.cfg.Topic != "t2" || !o.cfg.DryRun {
		t.Errorf("flags did not override the file: %+v", o.cfg)
	}
}

func TestConfigErrorsNameFileAndLine(t *testing.T) {
	for name, tc := range map[string]struct{ body, want string }{
		"unknown key":     {"mode: xdp\nbrokerz: [a:1]\n", "line 2: field brokerz not found"},
		"unknown nested":  {"xdp:\n  interfaces: [eth0]\n  pin: /x\n", "line 3: field pin not found"},
		"bad whitelist":   {"whitelist:\n  - 192.0.2.0/33\n", `line 2: whitelist: "192.0.2.0/33" is not a CIDR range`},
		"bad duration":    {"coalesce: soon\n", "line 1"},
		"second document": {"mode: xdp\n---\nmode: xdp\n", "line 2: a second YAML document"},
		"empty":           {"", "empty document"},
	} {
		p := bouncertest.WriteFile(t, "fw-bouncer.yaml", tc.body)
		_, err := parseArgs([]string{"--config", p, "--iface", "eth0"}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), p+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want %q naming %s", name, err, tc.want, p)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown mode":   {[]string{"--mode", "pf", "--iface", "eth0"}, `mode: unknown mode "pf" (want xdp`},
		"no interface":   {[]string{"--mode", "xdp"}, "xdp: interfaces: none given"},
		"bad broker":     {[]string{"--iface", "eth0", "--brokers", "nohost"}, `brokers[0]: "nohost" is not host:port`},
		"bad whitelist":  {[]string{"--iface", "eth0", "--whitelist", "198.51.100.300"}, `--whitelist: "198.51.100.300" is not an IP address`},
		"bad xdp mode":   {[]string{"--iface", "eth0", "--xdp-mode", "turbo"}, "xdp: mode"},
		"bad metrics":    {[]string{"--iface", "eth0", "--metrics-listen", "9100"}, `metrics_listen: "9100" is not host:port`},
		"stray argument": {[]string{"--iface", "eth0", "now"}, `unexpected argument "now"`},
		"iptables iface": {[]string{"--mode", "iptables", "--iface", "eth0"}, "--iface: mode iptables filters every interface"},
		"nft table name": {[]string{"--mode", "nftables", "--config", bouncertest.WriteFile(t, "fw-bouncer.yaml", "nftables:\n  table: mine\n")}, `nftables: table: "mine" does not start with "portcullis"`},
	} {
		_, err := parseArgs(tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error = %v, want %q", name, err, tc.want)
		}
	}
}

func TestIfaceGoesToTheModesSection(t *testing.T) {
	o, err := parseArgs([]string{"--mode", "nftables", "--iface", "eth0,eth1"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.cfg.NFTables.Ingress, []string{"eth0", "eth1"}) || len(o.cfg.XDP.Interfaces) != 0 {
		t.Errorf("nftables ingress = %v, xdp interfaces = %v", o.cfg.NFTables.Ingress, o.cfg.XDP.Interfaces)
	}
	o, err = parseArgs([]string{"--mode", "iptables"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Mode != "iptables" || !o.cfg.IPTables.IPv6 {
		t.Errorf("iptables config = %+v", o.cfg.IPTables)
	}
}

func TestHelpListsModesAndExamples(t *testing.T) {
	var out strings.Builder
	_, err := parseArgs([]string{"--help"}, &out, io.Discard)
	if err == nil {
		t.Fatal("--help returned no error")
	}
	for _, want := range []string{"NAME\n    fw-bouncer", "MODES\n    xdp ", "\n    nftables ", "\n    iptables ", "EXAMPLES", "fw-bouncer cleanup", "-iface", "-dry-run"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

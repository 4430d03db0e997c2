package iptables

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
)

func TestConfigValidate(t *testing.T) {
	enforcertest.TestValidate(t, DefaultConfig, []enforcertest.ValidateCase[Config]{
		{Mod: func(c *Config) { c.Flavor = "ebtables" }, Want: `flavor: "ebtables" is not auto, legacy or nft`},
		{Mod: func(c *Config) { c.Name = "crowdsec" }, Want: `name: "crowdsec" does not start with "portcullis"`},
		{Mod: func(c *Config) { c.Name = "portcullis-much-too-long" }, Want: `name: "portcullis-much-too-long" is longer than 20 bytes or holds blanks`},
		{Mod: func(c *Config) { c.Hooks = nil }, Want: "hooks: empty; at least INPUT is needed"},
		{Mod: func(c *Config) { c.Hooks = []string{"INPUT", "PREROUTING"} }, Want: `hooks: "PREROUTING" is not one of INPUT, FORWARD, DOCKER-USER`},
		{Mod: func(c *Config) { c.Hooks = []string{"INPUT", "INPUT"} }, Want: `hooks: "INPUT" listed twice`},
		{Mod: func(c *Config) { c.DenyAction = "tarpit" }, Want: `deny_action: "tarpit" is neither drop nor reject`},
		{Mod: func(c *Config) { c.Log.Enabled = true; c.Log.Prefix = "a prefix far longer than the LOG target takes" },
			Want: "log.prefix: longer than 29 bytes or holds a quote or newline"},
		{Mod: func(c *Config) { c.MaxElements = 10 }, Want: "max_elements: 10 is below 1024"},
	})
}

func TestNames(t *testing.T) {
	cfg := DefaultConfig()
	if got := cfg.chain(); got != "PORTCULLIS" {
		t.Errorf("chain = %q", got)
	}
	if got := cfg.setName(6, true); got != "portcullis-v6-tmp" {
		t.Errorf("setName(6, tmp) = %q", got)
	}
	for flavor, want := range map[string][2]string{
		"auto": {"iptables", "ip6tables"}, "legacy": {"iptables-legacy", "ip6tables-legacy"}, "nft": {"iptables-nft", "ip6tables-nft"},
	} {
		cfg.Flavor = flavor
		if v4, v6 := cfg.binaries(); v4 != want[0] || v6 != want[1] {
			t.Errorf("binaries(%s) = %s, %s", flavor, v4, v6)
		}
	}
}

func TestTimeoutSecs(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		until time.Time
		secs  uint32
		live  bool
	}{
		{time.Time{}, 0, true},
		{now.Add(-time.Second), 0, false},
		{now, 0, false},
		{now.Add(1500 * time.Millisecond), 2, true},
		{now.Add(4 * time.Hour), 14400, true},
		{now.Add(100 * 24 * time.Hour), 2147483, true},
	}
	for _, c := range cases {
		secs, live := timeoutSecs(c.until, now)
		if secs != c.secs || live != c.live {
			t.Errorf("timeoutSecs(now%+v) = %d, %v; want %d, %v", c.until.Sub(now), secs, live, c.secs, c.live)
		}
	}
	long := now.Add(100 * 24 * time.Hour)
	in := instOf(long, now)
	if !in.current(long, now) || !in.current(long, now.Add(MaxTimeout/2-time.Hour)) {
		t.Error("a freshly installed capped ban is not current")
	}
	if in.current(long, now.Add(MaxTimeout/2+time.Hour)) {
		t.Error("a capped ban past half its kernel timeout is current: it would run out in the kernel")
	}
	short := now.Add(time.Hour)
	if in := instOf(short, now); !in.current(short, now.Add(50*time.Minute)) || in.current(short.Add(time.Second), now) {
		t.Error("a short ban: current must hold until near expiry and fail for another expiry")
	}
	if in := instOf(time.Time{}, now); !in.current(time.Time{}, now.Add(1000*time.Hour)) {
		t.Error("a permanent ban is not current")
	}
}

// TestAddMessage decodes the batched add and checks every attribute the
// kernel's ip_set_ad reads.
func TestAddMessage(t *testing.T) {
	items := []ipsetAdd{
		{netip.MustParsePrefix("192.0.2.7/32"), 3600},
		{netip.MustParsePrefix("2001:db8::/48"), 0},
	}
	msg, err := addMessage("portcullis-v4", items)
	if err != nil {
		t.Fatal(err)
	}
	if want := mnl.HeaderType(unix.NFNL_SUBSYS_IPSET<<8 | nl.IPSET_CMD_ADD); msg.Header.Type != want {
		t.Fatalf("type %#x, want %#x", msg.Header.Type, want)
	}
	if msg.Header.Flags&unix.NLM_F_EXCL != 0 {
		t.Fatal("NLM_F_EXCL set: re-adding would fail instead of refreshing")
	}
	ad, err := mnl.NewAttributeDecoder(msg.Data[4:])
	if err != nil {
		t.Fatal(err)
	}
	var name string
	var proto uint8
	var lineno bool
	type got struct {
		addr netip.Addr
		cidr uint8
		secs uint32
	}
	var entries []got
	for ad.Next() {
		switch ad.Type() {
		case nl.IPSET_ATTR_PROTOCOL:
			proto = ad.Uint8()
		case nl.IPSET_ATTR_SETNAME:
			name = ad.String()
		case nl.IPSET_ATTR_LINENO:
			lineno = true
		case nl.IPSET_ATTR_ADT:
			ad.Nested(func(adt *mnl.AttributeDecoder) error {
				for adt.Next() {
					if adt.Type() != nl.IPSET_ATTR_DATA {
						t.Errorf("ADT child of type %d", adt.Type())
					}
					var g got
					adt.Nested(func(d *mnl.AttributeDecoder) error {
						for d.Next() {
							switch d.Type() {
							case nl.IPSET_ATTR_TIMEOUT:
								g.secs = binary.BigEndian.Uint32(d.Bytes())
							case nl.IPSET_ATTR_CIDR:
								g.cidr = d.Uint8()
							case nl.IPSET_ATTR_IP:
								d.Nested(func(ip *mnl.AttributeDecoder) error {
									for ip.Next() {
										g.addr, _ = netip.AddrFromSlice(ip.Bytes())
									}
									return nil
								})
							}
						}
						return nil
					})
					entries = append(entries, g)
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	if name != "portcullis-v4" || proto != nl.IPSET_PROTOCOL || !lineno {
		t.Fatalf("header attributes: set %q, protocol %d, lineno %v", name, proto, lineno)
	}
	want := []got{
		{netip.MustParseAddr("192.0.2.7"), 32, 3600},
		{netip.MustParseAddr("2001:db8::"), 48, 0},
	}
	if len(entries) != len(want) {
		t.Fatalf("decoded %d entries, want %d", len(entries), len(want))
	}
	for i := range want {
		if entries[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, entries[i], want[i])
		}
	}
}

func TestMissing(t *testing.T) {
	const full = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:PORTCULLIS - [0:0]
-A INPUT -j PORTCULLIS
-A PORTCULLIS -m set --match-set portcullis-v4 src -j DROP
COMMIT
`
	for _, c := range []struct {
		name, save string
		hooks      []string
		want       string
	}{
		{"intact", full, []string{"INPUT"}, ""},
		{"docker hook absent", full, []string{"INPUT", "DOCKER-USER"}, ""},
		{"flushed", "*filter\n:INPUT ACCEPT [0:0]\n:PORTCULLIS - [0:0]\nCOMMIT\n", []string{"INPUT"}, "rule_removed"},
		{"chain gone", "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", []string{"INPUT"}, "rule_removed"},
		{"jump gone", strings.Replace(full, "-A INPUT -j PORTCULLIS\n", "", 1), []string{"INPUT"}, "jump_removed"},
		{"forward jump gone", full, []string{"INPUT", "FORWARD"}, "jump_removed"},
		{"other set", strings.Replace(full, "portcullis-v4 src", "other src", 1), []string{"INPUT"}, "rule_removed"},
	} {
		if got := missing([]byte(c.save), "PORTCULLIS", "portcullis-v4", 1, c.hooks); got != c.want {
			t.Errorf("%s: missing = %q, want %q", c.name, got, c.want)
		}
	}
}

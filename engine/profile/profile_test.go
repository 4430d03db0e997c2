package profile

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine/internal/enginetest"
)

// The shipped profiles file says exactly what DefaultConfig says.
func TestShippedProfilesEqualDefault(t *testing.T) {
	got, err := Load("../../config/profiles.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(DefaultConfig(), got); d != "" {
		t.Errorf("config/profiles.yaml differs from DefaultConfig (-default +file):\n%s", d)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"default:\n  type: ban\n  duration: 4h\n  colour: red\n", "p.yaml:4: field colour not found in type profile.Remedy"},
		{"scenarios:\n  a/b:\n    duration: soon\n", "p.yaml:3: cannot unmarshal !!str `soon` into time.Duration"},
		{"scenarios:\n  a/b:\n    type: jail\n", `p.yaml:3: type: "jail" is not ban, captcha or throttle`},
		{"scenarios:\n  a/b:\n    duration: 500ms\n", "p.yaml:3: duration: 500ms is shorter than 1s"},
		{"default:\n  type: ban\n  duration: 100000h\n", "p.yaml:3: duration: 100000h0m0s is not between 1s and 87600h0m0s"},
		{"escalation:\n  multiplier: 0.5\n", "p.yaml:2: multiplier: 0.5 is not between 1 and 100"},
		{"whitelist:\n  - 10.0.0.0/8\n  - not-an-ip\n", `p.yaml:3: whitelist: "not-an-ip" is neither an address nor a CIDR range`},
		{"whitelist: 10.0.0.1\n", "p.yaml:1: cannot unmarshal !!str `10.0.0.1` into []string"},
	}
	for _, tt := range tests {
		_, err := Parse("p.yaml", []byte(tt.yaml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%q:\n got %v\nwant %s", tt.yaml, err, tt.want)
		}
	}
}

func TestRemedyMerge(t *testing.T) {
	cfg, err := Parse("p.yaml", []byte(`
default: {type: ban, duration: 2h}
scenarios:
  crowdsecurity/http-probing: {simulated: true}
  x/captcha: {type: captcha}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeProfiles(t, p)
	check := func(name string, typ decisionfeed.Type, d time.Duration, sim bool) {
		t.Helper()
		r := p.Remedy(name)
		if r.Type != typ || r.Duration != d || r.IsSimulated() != sim {
			t.Errorf("%s: %s %s simulated=%v, want %s %s %v", name, r.Type, r.Duration, r.IsSimulated(), typ, d, sim)
		}
	}
	check("crowdsecurity/ssh-bf", decisionfeed.TypeBan, 4*time.Hour, false)      // shipped default kept
	check("crowdsecurity/http-probing", decisionfeed.TypeBan, 2*time.Hour, true) // entry replaced, duration from default
	check("x/captcha", decisionfeed.TypeCaptcha, 2*time.Hour, false)
	check("unlisted/scenario", decisionfeed.TypeBan, 2*time.Hour, false)
}

func TestEscalate(t *testing.T) {
	p, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		base time.Duration
		n    int
		want time.Duration
	}{
		{4 * time.Hour, 1, 4 * time.Hour},
		{4 * time.Hour, 2, 8 * time.Hour},
		{4 * time.Hour, 3, 16 * time.Hour},
		{4 * time.Hour, 6, 128 * time.Hour},
		{4 * time.Hour, 7, 168 * time.Hour},
		{4 * time.Hour, 1000, 168 * time.Hour},
		{200 * time.Hour, 1, 200 * time.Hour},
		{200 * time.Hour, 2, 200 * time.Hour},
	} {
		if got := p.Escalate(tt.base, tt.n); got != tt.want {
			t.Errorf("Escalate(%s, %d) = %s, want %s", tt.base, tt.n, got, tt.want)
		}
	}
}

func TestWhitelist(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Whitelist = []string{"198.51.100.0/24", "2001:db8::7", "::ffff:203.0.113.9"}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]bool{
		"198.51.100.77": true, "198.51.101.1": false, "2001:db8::7": true, "2001:db8::8": false,
		"203.0.113.9": true, "192.0.2.1": false,
	} {
		if got := p.Whitelisted(netip.MustParseAddr(s)); got != want {
			t.Errorf("Whitelisted(%s) = %v, want %v", s, got, want)
		}
	}
	// The host's own addresses are always in.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP)
		if !p.Whitelisted(ip.Unmap()) {
			t.Errorf("host address %s not whitelisted", ip)
		}
	}
}

func TestCountry(t *testing.T) {
	cfg := DefaultConfig()
	// 192.0.2.0/24 has a code that is not ISO.
	cfg.GeoIP.CountryMMDB = enginetest.CountryMMDB(t, map[string]string{"185.220.101.0/24": "RU", "2001:db8:1::/48": "DE", "192.0.2.0/24": "europe"})
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeProfiles(t, p)
	for s, want := range map[string]string{
		"185.220.101.5": "RU", "2001:db8:1::9": "DE", "8.8.8.8": "", "192.0.2.1": "",
	} {
		got, err := p.Country(netip.MustParseAddr(s))
		if err != nil || got != want {
			t.Errorf("Country(%s) = %q, %v; want %q", s, got, err, want)
		}
	}
}

func TestNewMissingDatabase(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GeoIP.CountryMMDB = filepath.Join(t.TempDir(), "none.mmdb")
	if _, err := New(cfg); err == nil {
		t.Fatal("New with a missing database succeeded")
	}
}

// FuzzParse feeds arbitrary profiles files to the loader: it rejects them
// with an error naming the file or returns a config New accepts.
func FuzzParse(f *testing.F) {
	data, err := os.ReadFile("../../config/profiles.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("whitelist: [1.2.3.4/33]\n"))
	f.Add([]byte("escalation: {multiplier: 3, max_duration: 1h, window: 0s}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("p.yaml", data)
		if err != nil {
			if len(err.Error()) < 6 || err.Error()[:6] != "p.yaml" {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		if cfg.GeoIP.CountryMMDB != "" {
			return // would open a file
		}
		p, err := New(cfg)
		if err != nil {
			t.Fatalf("parsed config rejected by New: %v", err)
		}
		p.Escalate(p.Remedy("x").Duration, 50)
	})
}

// closeProfiles closes p and fails the test if that fails.
func closeProfiles(t *testing.T, p *Profiles) {
	t.Helper()
	if err := p.Close(); err != nil {
		t.Error(err)
	}
}

// Safe defaults: private, loopback, link-local and unique-local addresses
// are never acted on, unless the profiles say whitelist_private: false.
func TestPrivateWhitelist(t *testing.T) {
	private := []string{"127.0.0.1", "::1", "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.100",
		"169.254.10.10", "fe80::1", "fd12:3456::1", "fc00::5", "::ffff:192.168.0.1"}
	public := []string{"172.32.0.1", "11.0.0.1", "192.169.0.1", "203.0.113.5", "2001:db8::5", "fec0::1"}
	on, err := Parse("p.yaml", []byte("whitelist: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	off, err := Parse("p.yaml", []byte("whitelist_private: false\nwhitelist: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	pOn, err := New(on)
	if err != nil {
		t.Fatal(err)
	}
	pOff, err := New(off)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range private {
		a := netip.MustParseAddr(s)
		if !pOn.Whitelisted(a) {
			t.Errorf("default: %s not whitelisted", s)
		}
		if pOff.Whitelisted(a) && !a.Unmap().IsLoopback() && !hostAddr(t, a) {
			t.Errorf("whitelist_private false: %s still whitelisted", s)
		}
	}
	for _, s := range public {
		if pOn.Whitelisted(netip.MustParseAddr(s)) {
			t.Errorf("default: public %s whitelisted", s)
		}
	}
}

// hostAddr reports whether a is one of this host's addresses (always whitelisted).
func hostAddr(t *testing.T, a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}

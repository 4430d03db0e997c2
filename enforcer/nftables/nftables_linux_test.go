package nftables

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/enforcertest"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

func newInNS(t testing.TB, mod func(*Config)) (*Enforcer, Config, string) {
	t.Helper()
	path, name := enforcertest.NetNS(t)
	cfg := DefaultConfig()
	cfg.NetNS = path
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e, cfg, name
}

func TestConformance(t *testing.T) {
	testenv.RequireRoot(t)
	enforcertest.TestEnforcer(t, func(t *testing.T) enforcer.Enforcer {
		e, _, _ := newInNS(t, nil)
		return e
	})
}

func TestConformanceSmallChunks(t *testing.T) {
	testenv.RequireRoot(t)
	enforcertest.TestEnforcer(t, func(t *testing.T) enforcer.Enforcer {
		e, _, _ := newInNS(t, func(c *Config) { c.ChunkSize = 7 })
		return e
	})
}

func TestNestedRanges(t *testing.T) {
	e, _, ns := newInNS(t, nil)
	now := time.Now().Truncate(time.Second)
	outer := enforcer.Entry{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Until: now.Add(time.Hour)}
	inner := enforcer.Entry{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Until: now.Add(2 * time.Hour)}
	ctx := context.Background()
	if err := e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{outer}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{inner}}); err != nil {
		t.Fatalf("nested add: %v", err)
	}
	got, err := e.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, en := range got {
		s = append(s, en.Prefix.String())
	}
	// 10.0.0.0/8 split around 10.1.0.0/16.
	want := "10.0.0.0/16 10.1.0.0/16 10.2.0.0/15 10.4.0.0/14 10.8.0.0/13 10.16.0.0/12 10.32.0.0/11 10.64.0.0/10 10.128.0.0/9"
	if strings.Join(s, " ") != want {
		t.Fatalf("List = %s\nwant   %s", strings.Join(s, " "), want)
	}
	for _, en := range got {
		w := outer.Until
		if en.Prefix == inner.Prefix {
			w = inner.Until
		}
		if en.Until.Sub(w).Abs() > enforcertest.Tolerance {
			t.Errorf("%s until %s, want %s", en.Prefix, en.Until, w)
		}
	}
	if err := e.Apply(ctx, enforcer.Batch{Delete: []netip.Prefix{outer.Prefix}}); err != nil {
		t.Fatal(err)
	}
	got, err = e.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Prefix != inner.Prefix {
		t.Fatalf("after deleting the outer range: %v", got)
	}
	t.Log(enforcertest.Run(t, ns, "nft", "list", "table", "inet", "portcullis"))
}

func TestTraffic(t *testing.T) {
	for _, v := range []struct {
		name string
		mod  func(*Config, string)
	}{
		{"input drop", func(*Config, string) {}},
		{"input reject with log", func(c *Config, _ string) { c.DenyAction = "reject"; c.Log.Enabled = true }},
		{"ingress", func(c *Config, ifname string) { c.Ingress = []string{ifname} }},
	} {
		t.Run(v.name, func(t *testing.T) {
			l := enforcertest.NewLink(t)
			cfg := DefaultConfig()
			cfg.NetNS = l.HostPath
			v.mod(&cfg, l.HostIf)
			e, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				// Closes e only after a failure midway: TestTraffic closes it.
				if err := e.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			enforcertest.TestTraffic(t, l, e, "addr4", "addr6", "range4")
		})
	}
}

func TestDeleteBeforeReconcile(t *testing.T) {
	path, _ := enforcertest.NetNS(t)
	cfg := DefaultConfig()
	cfg.NetNS = path
	enforcertest.TestDeleteBeforeReconcile(t, func() (enforcer.Enforcer, error) { return New(cfg) })
}

package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/iptables"
	"github.com/portcullis-ips/portcullis/enforcer/nftables"
	"github.com/portcullis-ips/portcullis/enforcer/xdp"
)

// backend is one row of the backends table: how a mode validates its
// section, takes the --iface flags, opens its enforcer and removes
// everything it installed.
type backend struct {
	name    string
	summary string
	// ifaces applies the --iface flags to the backend's section; nil for
	// a backend that filters every interface and takes none.
	ifaces func(c *Config, names []string)
	// validate checks the backend's section, without I/O.
	validate func(c *Config) error
	// open creates the enforcer; it runs in the daemon's namespace.
	open func(c *Config, log *slog.Logger) (enforcer.Enforcer, error)
	// cleanup removes what the backend installed; nothing else.
	cleanup func(c *Config) error
}

// backends is the table of modes, in the order --help lists them.
var backends = []backend{
	{
		name:    "xdp",
		summary: "XDP eBPF program on each --iface; maps and links pinned under xdp.pin_path, so bans survive a restart",
		ifaces:  func(c *Config, names []string) { c.XDP.Interfaces = names },
		validate: func(c *Config) error {
			return c.XDP.Validate()
		},
		open:    openXDP,
		cleanup: func(c *Config) error { return xdp.Cleanup(c.XDP.PinPath) },
	},
	{
		name:     "nftables",
		summary:  "inet table with IPv4/IPv6 timeout sets on the input hook; each --iface also gets a netdev ingress chain for early drop",
		ifaces:   func(c *Config, names []string) { c.NFTables.Ingress = names },
		validate: func(c *Config) error { return c.NFTables.Validate() },
		open: func(c *Config, _ *slog.Logger) (enforcer.Enforcer, error) {
			e, err := nftables.New(c.NFTables)
			if err != nil {
				return nil, fmt.Errorf("nftables: %w", err)
			}
			return e, nil
		},
		cleanup: func(c *Config) error { return nftables.Cleanup(c.NFTables) },
	},
	{
		name:     "iptables",
		summary:  "ipset hash:net sets with timeouts matched from a chain of its own, jumped to from INPUT (iptables.hooks); takes no --iface",
		validate: func(c *Config) error { return c.IPTables.Validate() },
		open: func(c *Config, _ *slog.Logger) (enforcer.Enforcer, error) {
			e, err := iptables.New(c.IPTables)
			if err != nil {
				return nil, fmt.Errorf("iptables: %w", err)
			}
			return e, nil
		},
		cleanup: func(c *Config) error { return iptables.Cleanup(c.IPTables) },
	},
}

func lookupBackend(name string) (*backend, error) {
	for i := range backends {
		if backends[i].name == name {
			return &backends[i], nil
		}
	}
	return nil, fmt.Errorf("mode: unknown mode %q (want %s)", name, modeNames())
}

func modeNames() string {
	names := make([]string, len(backends))
	for i, b := range backends {
		names[i] = b.name
	}
	return strings.Join(names, ", ")
}

func openXDP(c *Config, log *slog.Logger) (enforcer.Enforcer, error) {
	e, err := xdp.New(c.XDP)
	if err != nil {
		return nil, fmt.Errorf("xdp: %w", err)
	}
	if why := e.VolatilePins(); why != "" {
		log.Warn("xdp bans end with this process", "pin_path", c.XDP.PinPath, "why", why)
	}
	for _, a := range e.Attachments() {
		l := log.With("iface", a.Interface, "xdp_mode", a.Mode, "reused", a.Reused, "replaced", a.Replaced)
		if a.Fallback != nil {
			l.Warn("native XDP unavailable; attached in generic mode", "err", a.Fallback)
			continue
		}
		l.Info("xdp attached")
	}
	return e, nil
}

// Command fw-bouncer enforces the decision feed in the kernel of an edge
// host: it follows the decisions topic, reconciles the chosen backend (XDP,
// nftables or iptables+ipset) to the live set of bans at start, then applies
// every change as it arrives. It runs as root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/enforcer/xdp"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/cli"
	"github.com/portcullis-ips/portcullis/internal/config"
)

const usageHead = `NAME
    fw-bouncer - enforce Portcullis ban decisions in the kernel

SYNOPSIS
    fw-bouncer [--mode MODE] [--iface IF]... [OPTIONS]
    fw-bouncer cleanup [--mode MODE] [--config FILE]

DESCRIPTION
    fw-bouncer follows the decisions topic (every partition from the earliest
    offset, under its own per-host consumer group), rebuilds the live set of
    bans, makes the backend hold exactly that set in one batch, and then
    applies each add and delete as it arrives, coalescing bursts for a few
    milliseconds. Only decisions of type ban are enforced.

    It refuses to ban the whitelist (--whitelist, config "whitelist"),
    loopback, every address of the host's own interfaces and the addresses
    its brokers resolve to (re-resolved every host_addresses_refresh), and
    any range that overlaps them; refusals are logged once per decision and
    counted (portcullis_fw_bouncer_refused_total). --types, --origins and
    --scenarios (config "types", "origins", "scenarios") choose the
    decisions enforced, as in every bouncer.

    On SIGTERM or SIGINT it stops and leaves the bans in force: the XDP
    program and its maps are pinned under bpffs, netfilter sets stay
    loaded, and expiry keeps working in the kernel. XDP refuses to start
    when its bpffs would end with the process (a private mount namespace,
    as "ip netns exec" makes) unless --xdp-allow-volatile-pins is given.

    While it runs it heals: when its table, chain, rules, sets, ipset, XDP
    attachment or a ban is removed by someone else (nft flush ruleset,
    iptables -F, ipset destroy, bpftool link detach, an interface created
    again), it restores the exact live set, logs and counts it
    (restores_total{backend,cause}); a restore that fails is retried with
    backoff and reported unhealthy in heartbeats. nftables changes are
    seen from kernel events at once; iptables/ipset are checked every
    250 ms; XDP attachments from link events and every 250 ms, map
    entries by a count that takes at most ~5%% of a core. "fw-bouncer cleanup"
    removes everything it installed (the --mode backend, or all of them)
    and nothing else: every object it creates is named portcullis*.

    Settings come from the defaults, then the YAML file of --config (unknown
    keys are errors naming the file and line), then the flags given.

MODES
%s
OPTIONS
`

const usageTail = `
EXAMPLES
    # XDP on two interfaces, with metrics:
    fw-bouncer --mode xdp --iface eth0 --iface eth1 --metrics-listen 127.0.0.1:9101

    # See what would be enforced, touching nothing:
    fw-bouncer --dry-run --iface eth0 --log-level debug

    # Never ban the office network:
    fw-bouncer --iface eth0 --whitelist 198.51.100.0/24,2001:db8:1::/48

    # Everything from a file (see the CONFIGURATION section):
    fw-bouncer --config /etc/portcullis/fw-bouncer.yaml

    # nftables, with an early-drop ingress chain on eth0; or iptables+ipset:
    fw-bouncer --mode nftables --iface eth0
    fw-bouncer --mode iptables

    # Remove the program, maps and pins (or netfilter tables and sets):
    fw-bouncer cleanup --config /etc/portcullis/fw-bouncer.yaml

CONFIGURATION
    mode: xdp
    brokers: [127.0.0.1:9092]
    topic: crowdsec-decisions
    group: portcullis-fw-bouncer-web-1
    metrics_listen: 127.0.0.1:9101
    whitelist: [198.51.100.0/24, 192.0.2.10]
    origins: [engine, cli]       # only these origins' bans (default: all)
    scenarios: [crowdsecurity/*] # only these scenarios (default: all)
    protect_host_addresses: true
    coalesce: 5ms
    sweep_interval: 1m
    xdp:
      interfaces: [eth0]
      mode: auto            # native, generic or auto
      pin_path: /sys/fs/bpf/portcullis
    nftables:
      table: portcullis
      priority: -200
      ingress: [eth0]
      deny_action: drop     # or reject
    iptables:
      flavor: auto          # legacy, nft or auto
      name: portcullis
      hooks: [INPUT]        # and FORWARD, DOCKER-USER
      ipv6: true
`

const cleanupUsage = `NAME
    fw-bouncer cleanup - remove everything fw-bouncer installed

SYNOPSIS
    fw-bouncer cleanup [--mode MODE] [--config FILE]

DESCRIPTION
    Removes the XDP links and pinned maps under xdp.pin_path, and the
    tables, chains and sets of the netfilter modes: only objects named
    portcullis*, so the host's own firewall stays as it is. Modes: %s.
    Bans stop being enforced. Without --mode every backend is cleaned.
    Run it with the --config the daemon used, for its pin path and names.

    A fw-bouncer daemon heals its state when someone else removes it; it
    does not fight cleanup: cleanup first leaves a marker under
    /run/portcullis (per mode and network namespace), and a daemon that
    then sees its state go stops without restoring it. A daemon that
    starts removes the marker. Stop the service first all the same, or a
    supervisor may restart it.

EXAMPLES
    fw-bouncer cleanup
    fw-bouncer cleanup --mode xdp --config /etc/portcullis/fw-bouncer.yaml

OPTIONS
`

func main() {
	ctx, stop := cli.SignalContext()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "fw-bouncer:", err)
		os.Exit(1)
	}
}

// run dispatches to the daemon or to the cleanup command.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "cleanup" {
		return runCleanup(args[1:], stdout, stderr)
	}
	o, err := parseArgs(args, stdout, stderr)
	if err != nil {
		return err
	}
	return runDaemon(ctx, o)
}

// options are a parsed command line: the effective configuration and the
// common flags.
type options struct {
	cfg    *Config
	common cli.Common
}

// stringList is a repeatable flag; each use may also hold a comma list.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*s = append(*s, f)
		}
	}
	return nil
}

func newFlagSet(name string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		var modes strings.Builder
		for _, b := range backends {
			fmt.Fprintf(&modes, "    %-10s %s\n", b.name, b.summary)
		}
		printUsage(stdout, fs, fmt.Sprintf(usageHead, modes.String()), usageTail)
	}
	return fs
}

// printUsage writes head, the flags' defaults and tail to w.
func printUsage(w io.Writer, fs *flag.FlagSet, head, tail string) {
	var b strings.Builder
	b.WriteString(head)
	out := fs.Output()
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(out)
	b.WriteString(tail)
	// flag.FlagSet.Usage has no error to return, and the flag package
	// ignores its own output errors the same way.
	_, _ = io.WriteString(w, b.String())
}

// parseArgs builds the effective configuration: defaults, the --config
// file, then the flags that were given.
func parseArgs(args []string, stdout, stderr io.Writer) (*options, error) {
	fs := newFlagSet("fw-bouncer", stdout, stderr)
	o := &options{}
	o.common.Register(fs)
	mode := fs.String("mode", "xdp", "backend: "+modeNames())
	var ifaces stringList
	fs.Var(&ifaces, "iface", "interface to enforce on (repeatable, or comma-separated)")
	xdpMode := fs.String("xdp-mode", "auto", "XDP attach mode: native, generic or auto (native, falling back to generic with a warning)")
	dryRun := fs.Bool("dry-run", false, "log what would be applied; touch nothing")
	polFlags := policy.RegisterFlags(fs)
	volatilePins := fs.Bool("xdp-allow-volatile-pins", false, "run even when the XDP pins are on a bpffs that ends with the process (ip netns exec); bans then stop with it")
	topic := fs.String("topic", "", "decisions topic (default "+DefaultConfig().Topic+")")
	heartbeatEvery := fs.Duration("heartbeat-interval", DefaultConfig().HeartbeatInterval, "time between heartbeats on "+heartbeat.Topic+" (0: none)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("command line: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("command line: unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := DefaultConfig()
	if o.common.Config != "" {
		if err := config.Load(o.common.Config, &cfg); err != nil {
			return nil, err
		}
	}
	if set["mode"] {
		cfg.Mode = *mode
	}
	// flag > environment > file > default, for the brokers and the
	// "kafka:" section alike.
	cfg.Brokers = o.common.ResolveBrokers(cfg.Brokers)
	kc, err := o.common.ResolveKafka(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	cfg.Kafka = kc
	if set["metrics-listen"] {
		cfg.MetricsListen = o.common.MetricsListen
	}
	if set["dry-run"] {
		cfg.DryRun = *dryRun
	}
	if set["topic"] {
		cfg.Topic = *topic
	}
	if set["heartbeat-interval"] {
		cfg.HeartbeatInterval = *heartbeatEvery
	}
	if set["xdp-mode"] {
		cfg.XDP.Mode = xdp.Mode(*xdpMode)
	}
	if set["xdp-allow-volatile-pins"] {
		cfg.XDP.AllowVolatilePins = *volatilePins
	}
	if err := polFlags.Apply(&cfg.Policy); err != nil {
		return nil, err
	}
	b, err := lookupBackend(cfg.Mode)
	if err != nil {
		return nil, err
	}
	if set["iface"] {
		if b.ifaces == nil {
			return nil, fmt.Errorf("--iface: mode %s filters every interface and takes no --iface", b.name)
		}
		b.ifaces(&cfg, ifaces)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	o.cfg = &cfg
	return o, nil
}

// runCleanup removes what the backends installed: the --mode one, or
// every one in the table.
func runCleanup(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fw-bouncer cleanup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { printUsage(stdout, fs, fmt.Sprintf(cleanupUsage, modeNames()), "") }
	cfgPath := fs.String("config", "", "YAML configuration file (for pin paths and table names)")
	mode := fs.String("mode", "", "backend to clean up (default: every backend)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("command line: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("command line: unexpected argument %q", fs.Arg(0))
	}
	if *mode != "" {
		if _, err := lookupBackend(*mode); err != nil {
			return err
		}
	}
	cfg := DefaultConfig()
	if *cfgPath != "" {
		if err := config.Load(*cfgPath, &cfg); err != nil {
			return err
		}
	}
	var errs []error
	for _, b := range backends {
		if *mode != "" && b.name != *mode {
			continue
		}
		// A daemon still running here takes what follows as deliberate.
		if err := markCleanup(b.name); err != nil {
			errs = append(errs, fmt.Errorf("cleanup %s: %w", b.name, err))
			continue
		}
		if err := b.cleanup(&cfg); err != nil {
			errs = append(errs, fmt.Errorf("cleanup %s: %w", b.name, err))
			continue
		}
		if _, err := fmt.Fprintf(stdout, "%s: removed everything fw-bouncer installed\n", b.name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Command cf-bouncer keeps Cloudflare's edge in step with the Portcullis
// decision feed: an account IP list per action (portcullis_ban,
// portcullis_captcha) and one WAF custom rule per list in every
// configured zone. It runs as a daemon that follows the feed, or once
// (--once, for cron) from the feed's snapshot.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/portcullis-ips/portcullis/internal/cli"
	"github.com/portcullis-ips/portcullis/internal/config"
)

const usage = `cf-bouncer: keep Cloudflare's edge in step with the Portcullis decision feed.

It keeps an account-level IP list (portcullis_ban; portcullis_captcha for
captcha decisions) equal to the live decisions, within the account's item
limit and Cloudflare's API rate limit, and one WAF custom rule per list in
each zone's custom-rules phase ("ip.src in $portcullis_ban" -> block,
captcha -> managed_challenge). The operator's own rules are left alone.

--mode access_rules keeps account IP Access Rules instead, for accounts that
cannot use lists: one API request per added or removed address.

The API token comes from CLOUDFLARE_API_TOKEN or --token-file; it needs
"Account Filter Lists: Edit" and "Zone WAF: Edit" ("Account Firewall Access
Rules: Edit" in access_rules mode). It is never logged.

Examples:
  CLOUDFLARE_API_TOKEN=... cf-bouncer --account-id ACCOUNT --zone-id ZONE1 --zone-id ZONE2
  cf-bouncer --once --config /etc/portcullis/cf-bouncer.yaml --token-file /etc/portcullis/cf-token
  cf-bouncer --dry-run --account-id ACCOUNT --zone-id ZONE     # print the plan, write nothing
  cf-bouncer --api-base http://127.0.0.1:8787/client/v4 ...    # another API server
  cf-bouncer cleanup --account-id ACCOUNT --zone-id ZONE       # remove the portcullis rules and lists

--once syncs from the feed's snapshot, prints a summary and exits non-zero on
failure. "cleanup" deletes the rules (by ref) and lists the bouncer made in
the given account and zones, and nothing else. Flags set on the command line
override the configuration file.

Flags:
`

func main() {
	ctx, stop := cli.SignalContext()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "cf-bouncer:", err)
		os.Exit(1)
	}
}

// zoneFlag collects repeated --zone-id flags.
type zoneFlag []string

func (z *zoneFlag) String() string { return strings.Join(*z, ",") }

func (z *zoneFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*z = append(*z, s)
		}
	}
	return nil
}

// options are the command line beyond the configuration.
type options struct {
	common cli.Common
	once   bool
	dryRun bool
}

func parseArgs(args []string, stderr io.Writer) (*Config, *options, error) {
	fs := flag.NewFlagSet("cf-bouncer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var o options
	def := DefaultConfig()
	o.common.Register(fs)
	fs.BoolVar(&o.once, "once", false, "sync once from the feed's snapshot, print a summary and exit")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the plan from the feed's snapshot and exit, writing nothing")
	tokenFile := fs.String("token-file", "", "file holding the API token (default: env CLOUDFLARE_API_TOKEN)")
	apiBase := fs.String("api-base", def.Cloudflare.APIBase, "API root")
	account := fs.String("account-id", "", "Cloudflare account id owning the lists")
	var zones zoneFlag
	fs.Var(&zones, "zone-id", "zone id to protect (repeatable, or comma-separated)")
	mode := fs.String("mode", def.Cloudflare.Mode, "lists (IP lists + WAF custom rules) or access_rules (IP Access Rules)")
	itemLimit := fs.Int("item-limit", def.Cloudflare.ItemLimit, "the account's list-item limit, shared by all its lists")
	topic := fs.String("topic", def.Topic, "decisions topic")
	group := fs.String("group", def.Group, "per-host consumer group for lag reporting")
	debounce := fs.Duration("debounce", def.Debounce, "wait this long after a change for more before syncing")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := def
	if o.common.Config != "" {
		if err := config.Load(o.common.Config, &cfg); err != nil {
			return nil, nil, err
		}
	}
	if set["token-file"] {
		cfg.TokenFile = *tokenFile
	}
	if set["api-base"] {
		cfg.Cloudflare.APIBase = *apiBase
	}
	if set["account-id"] {
		cfg.Cloudflare.AccountID = *account
	}
	if set["zone-id"] {
		cfg.Cloudflare.ZoneIDs = zones
	}
	if set["mode"] {
		cfg.Cloudflare.Mode = *mode
	}
	if set["item-limit"] {
		cfg.Cloudflare.ItemLimit = *itemLimit
	}
	if set["topic"] {
		cfg.Topic = *topic
	}
	if set["group"] {
		cfg.Group = *group
	}
	if set["debounce"] {
		cfg.Debounce = *debounce
		cfg.MaxDelay = max(cfg.MaxDelay, cfg.Debounce)
	}
	if set["metrics-listen"] || cfg.MetricsListen == "" {
		cfg.MetricsListen = o.common.MetricsListen
	}
	// flag > environment > file > default, for the brokers and the
	// "kafka:" section alike.
	cfg.Brokers = o.common.ResolveBrokers(cfg.Brokers)
	kc, err := o.common.ResolveKafka(cfg.Kafka)
	if err != nil {
		return nil, nil, err
	}
	cfg.Kafka = kc
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	return &cfg, &o, nil
}

// newLogger is a text logger on w at the --log-level, scoped to the
// component.
func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})).With("component", "cf-bouncer"), nil
}

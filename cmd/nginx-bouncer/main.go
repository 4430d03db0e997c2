// Command nginx-bouncer is the nginx auth_request service of Portcullis. It
// follows the decision feed into an in-memory prefix set and answers
// GET /check with 204 (allow), 403 (ban) or 401 (captcha), renders the ban
// page at GET /ban and reports readiness at GET /ready.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/banfile"
	"github.com/portcullis-ips/portcullis/enforcer/policy"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
	"github.com/portcullis-ips/portcullis/enforcer/runner"
	"github.com/portcullis-ips/portcullis/heartbeat"
	"github.com/portcullis-ips/portcullis/internal/cli"
	"github.com/portcullis-ips/portcullis/internal/config"
)

//go:embed ban.html
var defaultBanPage string

const usage = `nginx-bouncer: the nginx auth_request service of Portcullis.

It follows the decisions topic and answers, for the client nginx names:
  GET /check   204 allow, 403 ban, 401 captcha (X-Portcullis-Decision names it);
               before the first snapshot: 204 (--fail-mode open) or 503 (closed)
  GET /ban     the ban page (an html/template file, --ban-template)
  GET /ready   200 once the decisions are loaded, 503 before; JSON with the fail mode

It enforces ban and captcha decisions (--types to narrow, --origins and
--scenarios to filter) and never bans the whitelist (--whitelist, repeatable),
loopback, the host's own addresses, its brokers or the trusted proxies (nginx
itself): such bans are refused,
logged once and counted (portcullis_nginx_bouncer_refused_total).

Examples:
  nginx-bouncer --listen 127.0.0.1:8090 --brokers kafka-1:9092,kafka-2:9092
  nginx-bouncer --config /etc/portcullis/nginx-bouncer.yaml --metrics-listen 127.0.0.1:9101
  nginx-bouncer --trusted-proxy 127.0.0.1,10.0.0.0/24 --fail-mode closed
  nginx-bouncer --listen unix:/run/portcullis/nginx-bouncer.sock --ban-file /dev/shm/portcullis-nginx.bans
  nginx-bouncer --types captcha --whitelist 198.51.100.0/24 --origins engine,cli

With --ban-file the decisions also go to a file that nginx's Lua module maps
and searches in every worker (contrib/nginx/portcullis/lua-*.conf), so a
check costs no subrequest; /ban and /ready are still served.

Flags set on the command line override the configuration file.

Flags:
`

func main() {
	ctx, stop := cli.SignalContext()
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "nginx-bouncer:", err)
		os.Exit(1)
	}
}

// options are the parsed command line.
type options struct {
	common cli.Common
	set    map[string]bool // flags given explicitly
}

func parseArgs(args []string, stderr io.Writer) (*Config, *cli.Common, error) {
	fs := flag.NewFlagSet("nginx-bouncer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var o options
	def := DefaultConfig()
	o.common.Register(fs)
	listen := fs.String("listen", def.Listen, "address of the auth_request service: host:port or unix:/path (a unix socket spares nginx TCP)")
	trusted := fs.String("trusted-proxy", "127.0.0.0/8,::1", "comma-separated addresses or prefixes of proxies whose X-Real-IP / X-Forwarded-For are believed")
	failMode := fs.String("fail-mode", string(def.FailMode), "answer before the decisions are loaded: open (allow) or closed (503)")
	banTemplate := fs.String("ban-template", "", "html/template file for the ban page (default: built-in)")
	topic := fs.String("topic", def.Topic, "decisions topic")
	group := fs.String("group", def.Group, "per-host consumer group for lag reporting")
	banFile := fs.String("ban-file", "", "also write the decisions to this file for the in-nginx Lua check (contrib/nginx/portcullis/portcullis.lua), e.g. /dev/shm/portcullis-nginx.bans")
	heartbeatEvery := fs.Duration("heartbeat-interval", def.HeartbeatInterval, "time between heartbeats on "+heartbeat.Topic+" (0: none)")
	polFlags := policy.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })

	cfg := def
	if o.common.Config != "" {
		if err := config.Load(o.common.Config, &cfg); err != nil {
			return nil, nil, err
		}
	}
	if o.set["listen"] {
		cfg.Listen = *listen
	}
	if o.set["trusted-proxy"] {
		ps, err := config.ParsePrefixes(*trusted)
		if err != nil {
			return nil, nil, fmt.Errorf("--trusted-proxy: %w", err)
		}
		cfg.TrustedProxies = ps
	}
	if o.set["fail-mode"] {
		cfg.FailMode = FailMode(*failMode)
	}
	if o.set["ban-template"] {
		cfg.BanTemplate = *banTemplate
	}
	if o.set["topic"] {
		cfg.Topic = *topic
	}
	if o.set["group"] {
		cfg.Group = *group
	}
	if o.set["ban-file"] {
		cfg.BanFile = *banFile
	}
	if o.set["heartbeat-interval"] {
		cfg.HeartbeatInterval = *heartbeatEvery
	}
	if o.set["metrics-listen"] || cfg.MetricsListen == "" {
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
	if err := polFlags.Apply(&cfg.Policy); err != nil {
		return nil, nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	return &cfg, &o.common, nil
}

// loadBanPage parses the ban page template and renders it once with
// sample data, so a template that cannot render is refused at start.
func loadBanPage(path string) (*template.Template, error) {
	src, name := defaultBanPage, "ban.html"
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("ban template: %w", err)
		}
		src, name = string(b), path
	}
	t, err := template.New(name).Parse(src)
	if err != nil {
		return nil, fmt.Errorf("ban template: %w", err)
	}
	sample := banPageData{IP: "192.0.2.1", Banned: true, Type: "ban", Scenario: "sample/scenario", Origin: "engine", Until: time.Now()}
	if err := t.Execute(io.Discard, sample); err != nil {
		return nil, fmt.Errorf("ban template %s: %w", name, err)
	}
	return t, nil
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, common, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	logger, err := common.Logger("nginx-bouncer")
	if err != nil {
		return err
	}
	banPage, err := loadBanPage(cfg.BanTemplate)
	if err != nil {
		return err
	}
	sec, err := cli.ConnectKafka(ctx, cfg.Kafka, cfg.Brokers, logger)
	if err != nil {
		return err
	}
	var pol *policy.Policy // made with the runner, before the feed runs
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers:  cfg.Brokers,
		Security: sec,
		Topic:    cfg.Topic,
		Group:    cfg.Group,
		Logger:   logger.With("part", "feed"),
		// The filters pick the decisions that count before the feed takes
		// their union (see fw-bouncer).
		Accept: func(d *decisionfeed.Decision) bool { return pol.Accept(d) },
	})
	if err != nil {
		return fmt.Errorf("decision feed: %w", err)
	}

	// The prefix set is the enforcer the runner drives and /check reads.
	set := prefixset.New()
	defer func() { _ = set.Close() }()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), sub)
	var backend enforcer.Enforcer = set
	if cfg.BanFile != "" {
		bc := banfile.DefaultConfig()
		bc.Path = cfg.BanFile
		bc.OnError = func(err error) { logger.Error("write ban file", "err", err) }
		file, err := banfile.New(bc)
		if err != nil {
			return err
		}
		defer func() { _ = file.Close() }()
		registerBanFileMetrics(reg, file)
		backend = tee{set, file}
	}
	r, pol, err := newRunner(ctx, cfg, backend, reg, logger)
	if err != nil {
		return err
	}
	m := newMetrics(reg, set)
	var ready atomic.Bool
	srv := newServer(set, cfg, &ready, banPage, m, logger)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := cli.ServeMetrics(ctx, cfg.MetricsListen, reg, logger); err != nil {
		return err
	}
	ln, err := listen(cfg.Listen)
	if err != nil {
		return err
	}
	srv.unixPeer = strings.HasPrefix(cfg.Listen, "unix:")
	httpSrv := &http.Server{
		Handler:           srv.handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute, // nginx keeps its upstream connections open
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("serving auth_request", "listen", ln.Addr().String(), "fail_mode", cfg.FailMode,
		"trusted_proxies", fmt.Sprint(cfg.TrustedProxies), "brokers", strings.Join(cfg.Brokers, ","), "topic", cfg.Topic,
		"types", fmt.Sprint(pol.Types()), "whitelist", len(cfg.Policy.Whitelist), "protected_dependencies", strings.Join(pol.Dependencies(), ","))

	var hb *heartbeat.Publisher
	if cfg.HeartbeatInterval > 0 {
		hb, err = heartbeat.New(heartbeat.Config{
			Brokers: cfg.Brokers, Security: sec, Name: "nginx-bouncer", Mode: mode(cfg), Interval: cfg.HeartbeatInterval,
			Stats: func() heartbeat.Stats {
				return heartbeat.Stats{Decisions: r.Len(), Lag: sub.Stats().Lag, Refused: pol.RefusedCount()}
			},
		})
		if err != nil {
			_ = ln.Close() // nothing served yet
			return err
		}
		defer func() { _ = hb.Close() }()
	}

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() {
		if err := sub.Run(ctx, &feedHandler{r: r, ready: &ready, logger: logger}); err != nil {
			errc <- fmt.Errorf("decision feed: %w", err)
		}
	})
	wg.Go(func() { _ = r.Run(ctx) })
	if hb != nil {
		wg.Go(func() { hb.Run(ctx, func(err error) { logger.Warn("heartbeat", "err", err) }) })
	}
	wg.Go(func() {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve %s: %w", ln.Addr(), err)
		}
	})

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		logger.Warn("shutdown", "err", err)
	}
	wg.Wait()
	logger.Info("stopped")
	return runErr
}

// mode names the bouncer's enforcement for its heartbeat.
func mode(cfg *Config) string {
	if cfg.BanFile != "" {
		return "auth_request+lua"
	}
	return "auth_request"
}

// listen opens the auth_request listener: TCP, or a unix socket (a stale
// socket file is replaced) that nginx workers, running as another user,
// may connect to.
func listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		return ln, nil
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// newRunner builds the policy and the runner that drive backend: the
// decision→enforcer path every bouncer shares. The brokers and the trusted
// proxies (nginx: a ban on it would refuse every request it forwards) are
// the dependencies nginx-bouncer never bans.
func newRunner(ctx context.Context, cfg *Config, backend enforcer.Enforcer, reg prometheus.Registerer, logger *slog.Logger) (*runner.Runner, *policy.Policy, error) {
	pol, err := policy.New(ctx, cfg.Policy, policy.Options{
		Supported:    supportedTypes,
		Dependencies: cfg.Brokers,
		Peers:        cfg.TrustedProxies,
		Logger:       logger.With("part", "policy"),
	})
	if err != nil {
		return nil, nil, err
	}
	rcfg := runner.DefaultConfig()
	rcfg.Policy = pol
	rcfg.Coalesce = time.Millisecond
	rcfg.SweepInterval = cfg.SweepInterval
	rcfg.MetricsSubsystem = "nginx_bouncer"
	rcfg.OnApplyError = func(err error) { logger.Error("prefix set apply failed; retrying", "err", err) }
	r, err := runner.New(rcfg, backend, reg)
	if err != nil {
		return nil, nil, err
	}
	return r, pol, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portcullis-ips/portcullis/crowdsec"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/internal/cli"
)

// envLAPIKey holds the API key(s) when --api-key is not given, so the key
// stays out of the process list.
const envLAPIKey = "PORTCULLIS_LAPI_KEY"

// envLAPIStateDir is the --state-dir default from the environment.
const envLAPIStateDir = "PORTCULLIS_LAPI_STATE_DIR"

// lapiStateFile is the name of the state file in --state-dir.
const lapiStateFile = "lapi-state.json"

func runLAPI(ctx context.Context, args []string, _ io.Writer) error {
	fs := newFlagSet("lapi", "portcullis lapi --listen ADDR --api-key KEY[,KEY...] [--state-dir DIR] [--topic T]",
		`Serves the CrowdSec Local API bouncer endpoints from the decision feed, so
CrowdSec's own bouncers (firewall, nginx, Traefik, ...) enforce Portcullis
decisions:

  GET /v1/decisions/stream?startup=true|false[&scopes=ip,range][&origins=O,...]
      [&scenarios_containing=S,...][&scenarios_not_containing=S,...]
  GET /v1/decisions?ip=IP|range=CIDR|scope=Ip&value=V[&type=ban][&contains=false]

Requests must carry one of the API keys in X-Api-Key (else 403). Each key
is one bouncer: startup=true answers the full live set in "new"; later
calls answer what changed since that key's previous call, deletions and
expiries in "deleted" with a negative duration. Scopes default to Ip, as in
CrowdSec. Decisions get integer ids in the order they reach this process.

With --state-dir the ids, the decisions each bouncer was sent and the
recent deletions are kept in DIR/lapi-state.json (written atomically), so a
bouncer streaming across a restart of lapi gets exactly what changed
meanwhile: deletions made while lapi was down included, and nothing sent
twice. API keys are not written there, only a hash of each.
`,
		`PORTCULLIS_LAPI_KEY=$(openssl rand -hex 16) portcullis lapi --listen 127.0.0.1:8080
portcullis lapi --listen :8080 --api-key fw-key,nginx-key --state-dir /var/lib/portcullis --metrics-listen :9104
`)
	var (
		common       cli.Common
		listen, keys string
		topic        string
		stateDir     string
	)
	common.Register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the LAPI endpoints on")
	fs.StringVar(&keys, "api-key", os.Getenv(envLAPIKey), "comma-separated bouncer API keys (env "+envLAPIKey+")")
	fs.StringVar(&topic, "topic", decisionfeed.TopicDecisions, "decisions topic")
	fs.StringVar(&stateDir, "state-dir", os.Getenv(envLAPIStateDir), "directory of the state kept across restarts (env "+envLAPIStateDir+"; empty: none)")
	if err := parse(fs, args); err != nil {
		return err
	}
	stateFile := ""
	if stateDir != "" {
		if fi, err := os.Stat(stateDir); err != nil || !fi.IsDir() {
			return fmt.Errorf("%w: lapi: --state-dir %q: not a directory", errUsage, stateDir)
		}
		stateFile = filepath.Join(stateDir, lapiStateFile)
	}
	if common.Config != "" {
		return fmt.Errorf("%w: lapi: --config is not used (all settings are flags)", errUsage)
	}
	log, err := common.Logger("lapi")
	if err != nil {
		return fmt.Errorf("%w: lapi: %w", errUsage, err)
	}
	if len(splitList(keys)) == 0 {
		return fmt.Errorf("%w: lapi: no API key (--api-key or %s)", errUsage, envLAPIKey)
	}
	srv, err := crowdsec.NewServer(crowdsec.ServerConfig{APIKeys: splitList(keys), StateFile: stateFile})
	if err != nil {
		return fmt.Errorf("lapi: %w", err)
	}
	k, err := connectKafka(ctx, &common, "lapi")
	if err != nil {
		return err
	}
	sub, err := decisionfeed.NewSubscriber(decisionfeed.SubscriberConfig{
		Brokers: k.brokers, Security: k.sec, Topic: topic, Logger: log, DLQTopic: "-",
	})
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(sub, srv)
	if err := cli.ServeMetrics(ctx, common.MetricsListen, reg, log); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("lapi listen %s: %w", listen, err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx) // best effort on exit
	}()
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Run(ctx, srv) }()
	saveDone := make(chan error, 1)
	go func() {
		saveDone <- srv.SaveEvery(ctx, 2*time.Second, func(err error) { log.Warn("save lapi state", "err", err) })
	}()
	log.Info("serving LAPI bouncer endpoints", "addr", ln.Addr().String(), "topic", topic, "keys", len(splitList(keys)))
	err = hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if serr := <-subDone; err == nil {
		err = serr
	}
	if serr := <-saveDone; err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("lapi: %w", err)
	}
	return nil
}

// splitList splits a comma-separated flag, dropping empty entries.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

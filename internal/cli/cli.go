// Package cli holds what every Portcullis binary shares on its command line:
// the common flags (--brokers, --config, --metrics-listen, --log-level and
// the --kafka-* security flags), the logger, the signal-bound context and
// the Prometheus endpoint.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultBrokers is used when neither --brokers nor PORTCULLIS_BROKERS is set.
const DefaultBrokers = "127.0.0.1:9092"

// EnvBrokers is the environment variable naming the brokers.
const EnvBrokers = "PORTCULLIS_BROKERS"

// Common are the flags every binary accepts.
type Common struct {
	Brokers       string
	Config        string
	MetricsListen string
	LogLevel      string
	// Kafka are the --kafka-* security flags.
	Kafka kafkaconn.Flags

	fs *flag.FlagSet
}

// Register adds the common flags to fs.
func (c *Common) Register(fs *flag.FlagSet) {
	c.fs = fs
	fs.StringVar(&c.Brokers, "brokers", DefaultBrokers, "comma-separated Kafka bootstrap brokers (env "+EnvBrokers+")")
	fs.StringVar(&c.Config, "config", "", "YAML configuration file")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "address for the Prometheus /metrics endpoint (empty: off)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	c.Kafka.Register(fs)
}

// BrokerList returns the brokers of a program without a configuration
// file: --brokers, else PORTCULLIS_BROKERS, else DefaultBrokers.
func (c *Common) BrokerList() []string { return c.ResolveBrokers(nil) }

// ResolveBrokers returns the brokers by the precedence of every setting:
// --brokers when given, else PORTCULLIS_BROKERS when set, else file (the
// configuration file's brokers) when not empty, else DefaultBrokers.
func (c *Common) ResolveBrokers(file []string) []string {
	if c.given("brokers") {
		return splitList(c.Brokers)
	}
	if env := splitList(os.Getenv(EnvBrokers)); len(env) > 0 {
		return env
	}
	if len(file) > 0 {
		return file
	}
	return splitList(DefaultBrokers)
}

// given reports whether the flag was on the command line.
func (c *Common) given(name string) bool {
	found := false
	if c.fs != nil {
		c.fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	}
	return found
}

func splitList(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// KafkaSecurity builds the Kafka security settings of the program: file
// (its configuration's "kafka:" section, zero without one) overlaid by the
// PORTCULLIS_KAFKA_* environment and the --kafka-* flags. It logs the
// warnings an operator must see (insecure_skip_verify) and probes the
// brokers once, so that a CA that does not match, refused credentials or a
// listener that wants TLS or SASL is a one-line error at start. Brokers
// that cannot be reached are only logged: the clients retry.
func (c *Common) KafkaSecurity(ctx context.Context, file kafkaconn.Config, brokers []string, log *slog.Logger) (*kafkaconn.Security, error) {
	cfg, err := c.ResolveKafka(file)
	if err != nil {
		return nil, err
	}
	return ConnectKafka(ctx, cfg, brokers, log)
}

// ResolveKafka returns file overlaid by the PORTCULLIS_KAFKA_* environment
// and the --kafka-* flags, checked (kafkaconn.Config.Validate).
func (c *Common) ResolveKafka(file kafkaconn.Config) (kafkaconn.Config, error) {
	return c.Kafka.Resolve(file, os.Getenv)
}

// ConnectKafka builds the resolved settings cfg, logs their warnings and
// probes the brokers once; see KafkaSecurity.
func ConnectKafka(ctx context.Context, cfg kafkaconn.Config, brokers []string, log *slog.Logger) (*kafkaconn.Security, error) {
	sec, err := kafkaconn.Build(cfg)
	if err != nil {
		return nil, err
	}
	for _, w := range sec.Warnings() {
		log.Warn(w)
	}
	if err := sec.Probe(ctx, brokers); err != nil {
		if !errors.Is(err, kafkaconn.ErrUnreachable) {
			return nil, err
		}
		log.Warn("kafka brokers not reachable yet; clients will retry", "err", err)
	}
	return sec, nil
}

// Logger returns a text logger on stderr at the configured level, scoped to component.
func (c *Common) Logger(component string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", c.LogLevel, err)
	}
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})
	return slog.New(h).With("component", component), nil
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// ServeMetrics serves reg on addr at /metrics until ctx ends. It returns once
// the listener is bound, so a bad address is reported at start; serving
// errors after that are logged.
func ServeMetrics(ctx context.Context, addr string, reg *prometheus.Registry, logger *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	return nil
}

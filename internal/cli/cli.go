// Package cli holds what every Portcullis binary shares on its command line:
// the common flags (--brokers, --config, --metrics-listen, --log-level), the
// logger, the signal-bound context and the Prometheus endpoint.
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultBrokers is used when neither --brokers nor PORTCULLIS_BROKERS is set.
const DefaultBrokers = "127.0.0.1:9092"

// Common are the flags every binary accepts.
type Common struct {
	Brokers       string
	Config        string
	MetricsListen string
	LogLevel      string
}

// Register adds the common flags to fs. The broker default comes from the
// PORTCULLIS_BROKERS environment variable when it is set.
func (c *Common) Register(fs *flag.FlagSet) {
	def := os.Getenv("PORTCULLIS_BROKERS")
	if def == "" {
		def = DefaultBrokers
	}
	fs.StringVar(&c.Brokers, "brokers", def, "comma-separated Kafka bootstrap brokers (env PORTCULLIS_BROKERS)")
	fs.StringVar(&c.Config, "config", "", "YAML configuration file")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "address for the Prometheus /metrics endpoint (empty: off)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
}

// BrokerList returns the brokers as a list, empty entries dropped.
func (c *Common) BrokerList() []string {
	var out []string
	for _, b := range strings.Split(c.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
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

package acquire

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Handler receives the lines a source read, in order. It may block to push
// back on the source; it must not keep lines after it returns (the slice is
// reused). An error stops the source: return one only when the consumer is
// gone, which normally means ctx is done.
type Handler func(ctx context.Context, lines []Line) error

// Source is one acquisition source of an acquis.yaml document.
type Source interface {
	// Name identifies the source in logs and metrics.
	Name() string
	// Run reads lines and hands them to h until ctx ends or h fails. It
	// returns nil when ctx ended, and an error only for a failure it cannot
	// recover from (a listener it cannot bind, a bad TLS file).
	Run(ctx context.Context, h Handler) error
}

// Options are what every source gets besides its document.
type Options struct {
	// Logger receives the source's own reports (rotations, bad messages).
	// Nil discards them.
	Logger *slog.Logger
	// Metrics counts lines and skips. Nil counts nothing.
	Metrics *Metrics
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// factories is the table of source kinds.
var factories = map[string]func(SourceConfig, Options) (Source, error){
	KindFile:   func(c SourceConfig, o Options) (Source, error) { return NewFileSource(c, o) },
	KindKafka:  func(c SourceConfig, o Options) (Source, error) { return NewKafkaSource(c, o) },
	KindSyslog: func(c SourceConfig, o Options) (Source, error) { return NewSyslogSource(c, o) },
}

// New builds the source a document describes.
func New(c SourceConfig, o Options) (Source, error) {
	f, ok := factories[c.Kind]
	if !ok {
		return nil, fmt.Errorf("source %s:%d: unknown kind %q", c.File, c.Line, c.Kind)
	}
	s, err := f(c, o)
	if err != nil {
		return nil, fmt.Errorf("source %s:%d: %w", c.File, c.Line, err)
	}
	return s, nil
}

// Metrics are the acquisition counters, subsystem "acquire".
type Metrics struct {
	// Lines counts lines handed on, by source name and type.
	Lines *prometheus.CounterVec
	// Skipped counts input dropped, by source name and reason
	// (too_long, bad_message, bad_json, bad_syslog).
	Skipped *prometheus.CounterVec
	// Rotations counts files found rotated or truncated, by source name and kind.
	Rotations *prometheus.CounterVec
}

// Skip reasons used in the Skipped counter.
const (
	SkipTooLong    = "too_long"
	SkipBadMessage = "bad_message"
	SkipBadSyslog  = "bad_syslog"
)

// NewMetrics creates the acquisition counters and registers them on reg
// (if reg is not nil).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "acquire", Name: "lines_total",
			Help: "Lines read and handed to the parsers, by source and log type.",
		}, []string{"source", "type"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "acquire", Name: "skipped_total",
			Help: "Input dropped by acquisition, by source and reason.",
		}, []string{"source", "reason"}),
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "portcullis", Subsystem: "acquire", Name: "file_rotations_total",
			Help: "Followed files found rotated (new inode) or truncated, by source and kind.",
		}, []string{"source", "kind"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Lines, m.Skipped, m.Rotations} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register acquire metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *Metrics) lines(source, typ string) prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.Lines.WithLabelValues(source, typ)
}

func (m *Metrics) skipped(source, reason string) prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.Skipped.WithLabelValues(source, reason)
}

func (m *Metrics) rotated(source, kind string) {
	if m != nil {
		m.Rotations.WithLabelValues(source, kind).Inc()
	}
}

// add adds n to a counter that may be nil (metrics off).
func add(c prometheus.Counter, n int) {
	if c != nil && n > 0 {
		c.Add(float64(n))
	}
}

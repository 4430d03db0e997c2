// Package heartbeat lets bouncers announce themselves: every interval a
// bouncer publishes a Beat (name, host, mode, decisions held, consumer lag)
// to a compacted topic keyed "name@host", so the topic holds the latest beat
// of every bouncer and "portcullis bouncers list" reads it from the start.
// A bouncer whose last beat is older than StaleAfter beats is shown stale.
package heartbeat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/segmentio/kafka-go"
)

// Topic is the default heartbeat topic.
const Topic = "portcullis-heartbeats"

// Version is the schema version of Beat.
const Version = 1

// StaleAfter is how many intervals may pass without a beat before a
// bouncer is shown stale.
const StaleAfter = 3

// maxBeatBytes bounds a heartbeat message.
const maxBeatBytes = 4096

// maxField bounds every text field of a beat.
const maxField = 253

// maxProblem bounds Beat.Problem; Publisher cuts a longer one.
const maxProblem = 512

// Beat is one heartbeat message.
type Beat struct {
	V         int    `json:"v"`
	Name      string `json:"name"`
	Host      string `json:"host"`
	Mode      string `json:"mode"`
	Decisions int    `json:"decisions"`
	Lag       int64  `json:"lag"`
	// Problem says why the bouncer is not enforcing the live set (a
	// restore or batch that keeps failing); empty while it is.
	Problem  string    `json:"problem,omitempty"`
	At       time.Time `json:"at"`
	Interval string    `json:"interval"`
}

// Key returns the message key: "name@host".
func (b *Beat) Key() string { return b.Name + "@" + b.Host }

// Stale reports whether the bouncer has missed beats: more than StaleAfter
// of its intervals passed since this beat.
func (b *Beat) Stale(now time.Time) bool {
	iv, err := time.ParseDuration(b.Interval)
	if err != nil || iv <= 0 {
		return true
	}
	return now.Sub(b.At) > StaleAfter*iv
}

// Validate checks a beat: version, non-empty printable name and host (no
// '@' in the name), counts not negative, a positive interval.
func (b *Beat) Validate() error {
	if b.V != Version {
		return fmt.Errorf("heartbeat: version %d, want %d", b.V, Version)
	}
	for _, f := range []struct{ name, v string }{{"name", b.Name}, {"host", b.Host}, {"mode", b.Mode}} {
		if f.v == "" && f.name != "mode" {
			return fmt.Errorf("heartbeat: empty %s", f.name)
		}
		if len(f.v) > maxField {
			return fmt.Errorf("heartbeat: %s longer than %d bytes", f.name, maxField)
		}
		if strings.IndexFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			return fmt.Errorf("heartbeat: %s %q has control characters", f.name, f.v)
		}
	}
	if len(b.Problem) > maxProblem {
		return fmt.Errorf("heartbeat: problem longer than %d bytes", maxProblem)
	}
	if strings.IndexFunc(b.Problem, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return errors.New("heartbeat: problem has control characters")
	}
	if strings.Contains(b.Name, "@") {
		return fmt.Errorf("heartbeat: name %q contains '@'", b.Name)
	}
	if b.Decisions < 0 || b.Lag < 0 {
		return fmt.Errorf("heartbeat: negative decisions %d or lag %d", b.Decisions, b.Lag)
	}
	if iv, err := time.ParseDuration(b.Interval); err != nil || iv <= 0 {
		return fmt.Errorf("heartbeat: interval %q: want a positive duration", b.Interval)
	}
	if b.At.IsZero() {
		return errors.New("heartbeat: no time")
	}
	return nil
}

// Decode parses and validates one heartbeat message.
func Decode(b []byte) (Beat, error) {
	var beat Beat
	if len(b) > maxBeatBytes {
		return beat, fmt.Errorf("heartbeat: %d bytes, above %d", len(b), maxBeatBytes)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&beat); err != nil {
		return beat, fmt.Errorf("heartbeat: %w", err)
	}
	if dec.More() {
		return beat, errors.New("heartbeat: trailing data")
	}
	return beat, beat.Validate()
}

// Stats is what a bouncer reports in each beat.
type Stats struct {
	Decisions int
	Lag       int64
	// Problem is why the bouncer does not enforce the live set ("": it
	// does); control characters become spaces and it is cut to 512 bytes.
	Problem string
}

// cleanProblem makes a problem text fit Beat.Validate.
func cleanProblem(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxProblem {
		s = strings.ToValidUTF8(s[:maxProblem], "")
	}
	return s
}

// Config configures a Publisher.
type Config struct {
	// Brokers are the bootstrap brokers; required.
	Brokers []string
	// Topic is the heartbeat topic (default Topic). The publisher creates
	// it compacted when it does not exist.
	Topic string
	// Name is the bouncer's program name (fw-bouncer, nginx-bouncer, …); required.
	Name string
	// Host is the host name (default os.Hostname()).
	Host string
	// Mode is the bouncer's enforcement mode (xdp, nftables, auth_request, …).
	Mode string
	// Interval is the time between beats; required.
	Interval time.Duration
	// Stats returns the figures of the next beat; required. It is called
	// from the publisher's goroutine.
	Stats func() Stats
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Security is the TLS and SASL the publisher connects with (nil: plaintext).
	Security *kafkaconn.Security
}

// Publisher sends a bouncer's heartbeats.
type Publisher struct {
	cfg   Config
	tr    *kafka.Transport
	w     *kafka.Writer
	topic bool // the topic is known to exist
}

// New checks cfg and returns a publisher; it does not connect.
func New(cfg Config) (*Publisher, error) {
	if len(cfg.Brokers) == 0 || cfg.Name == "" || cfg.Interval <= 0 || cfg.Stats == nil {
		return nil, errors.New("heartbeat: brokers, name, a positive interval and stats are required")
	}
	if cfg.Topic == "" {
		cfg.Topic = Topic
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("heartbeat: host name: %w", err)
		}
		cfg.Host = h
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	probe := Beat{V: Version, Name: cfg.Name, Host: cfg.Host, Mode: cfg.Mode, Interval: cfg.Interval.String(), At: cfg.Now()}
	if err := probe.Validate(); err != nil {
		return nil, err
	}
	tr := cfg.Security.Transport(&kafka.Transport{})
	return &Publisher{
		cfg: cfg,
		tr:  tr,
		w: &kafka.Writer{
			Addr: kafka.TCP(cfg.Brokers...), Topic: cfg.Topic, RequiredAcks: kafka.RequireAll,
			BatchTimeout: time.Millisecond, WriteTimeout: 10 * time.Second, MaxAttempts: 3, Transport: tr,
		},
	}, nil
}

// Beat publishes one heartbeat now, creating the topic first if needed.
func (p *Publisher) Beat(ctx context.Context) error {
	if !p.topic {
		if err := p.ensureTopic(ctx); err != nil {
			return err
		}
		p.topic = true
	}
	st := p.cfg.Stats()
	b := Beat{
		V: Version, Name: p.cfg.Name, Host: p.cfg.Host, Mode: p.cfg.Mode,
		Decisions: max(st.Decisions, 0), Lag: max(st.Lag, 0), Problem: cleanProblem(st.Problem),
		At: p.cfg.Now().UTC().Truncate(time.Millisecond), Interval: p.cfg.Interval.String(),
	}
	v, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("heartbeat: encode: %w", err)
	}
	if err := p.w.WriteMessages(ctx, kafka.Message{Key: []byte(b.Key()), Value: v}); err != nil {
		return fmt.Errorf("heartbeat: publish to %s: %w", p.cfg.Topic, err)
	}
	return nil
}

// ensureTopic creates the heartbeat topic, compacted, unless it exists.
func (p *Publisher) ensureTopic(ctx context.Context) error {
	c := &kafka.Client{Addr: kafka.TCP(p.cfg.Brokers...), Transport: p.tr}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: p.cfg.Topic, NumPartitions: 1, ReplicationFactor: -1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}},
	}}})
	if err != nil {
		return fmt.Errorf("heartbeat: create topic %s: %w", p.cfg.Topic, err)
	}
	if err := res.Errors[p.cfg.Topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("heartbeat: create topic %s: %w", p.cfg.Topic, err)
	}
	return nil
}

// Run beats at once and then every interval until ctx ends; a failed beat
// is handed to onError (if not nil) and the next one is tried on time.
func (p *Publisher) Run(ctx context.Context, onError func(error)) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		bctx, cancel := context.WithTimeout(ctx, p.cfg.Interval)
		err := p.Beat(bctx)
		cancel()
		if err != nil && ctx.Err() == nil && onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close releases the publisher's connections.
func (p *Publisher) Close() error {
	err := p.w.Close()
	p.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("heartbeat: close: %w", err)
	}
	return nil
}

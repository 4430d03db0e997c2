package acquire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// KafkaCommitInterval is how often a Kafka source commits its group offsets:
// batched, not per message.
const KafkaCommitInterval = time.Second

// KafkaSource consumes server-logs from a Kafka topic in a consumer group.
// Each message is one of the forms DecodeMessage reads; a message that is
// none of them is counted, logged with its offset and skipped.
type KafkaSource struct {
	cfg     SourceConfig
	log     *slog.Logger
	name    string
	dialer  *kafka.Dialer
	lines   prometheus.Counter
	bad     prometheus.Counter
	tooLong prometheus.Counter
}

// NewKafkaSource checks a kafka document, loads its TLS files and returns its source.
func NewKafkaSource(c SourceConfig, o Options) (*KafkaSource, error) {
	if c.Kind != KindKafka || c.Topic == "" || len(c.Brokers) == 0 || c.GroupID == "" {
		return nil, errors.New("kafka source: topic, brokers and group_id are required")
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = DefaultMaxLineBytes
	}
	d, err := NewKafkaDialer(c.TLS, c.SASL)
	if err != nil {
		return nil, fmt.Errorf("kafka source %s: %w", c.Topic, err)
	}
	name := c.Name()
	return &KafkaSource{
		cfg: c, log: o.logger().With("source", name), name: name, dialer: d,
		lines:   o.Metrics.lines(name, c.Type()),
		bad:     o.Metrics.skipped(name, SkipBadMessage),
		tooLong: o.Metrics.skipped(name, SkipTooLong),
	}, nil
}

// NewKafkaDialer returns a kafka-go dialer with the given TLS and SASL
// options; nil options mean plaintext and no authentication. The options
// keep CrowdSec's acquis.yaml names; the files are loaded and checked by
// kafkaconn, as for every other Kafka client.
func NewKafkaDialer(t *TLSConfig, s *SASLConfig) (*kafka.Dialer, error) {
	var c kafkaconn.Config
	if t != nil {
		c.TLS = true
		c.TLSCA, c.TLSCert, c.TLSKey, c.InsecureSkipVerify = t.CACert, t.ClientCert, t.ClientKey, t.InsecureSkipVerify
	}
	if s != nil {
		c.SASLMechanism, c.SASLUsername, c.SASLPassword = s.Mechanism, s.Username, s.Password
	}
	sec, err := kafkaconn.Build(c)
	if err != nil {
		return nil, err
	}
	return sec.Dialer(&kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}), nil
}

// Name implements Source.
func (s *KafkaSource) Name() string { return s.name }

// Dialer returns the dialer the source connects with (TLS and SASL applied).
func (s *KafkaSource) Dialer() *kafka.Dialer { return s.dialer }

// Run implements Source. A new consumer group starts at the end of the topic
// unless from_beginning is set; an existing group resumes where it
// committed.
func (s *KafkaSource) Run(ctx context.Context, h Handler) error {
	start := kafka.LastOffset
	if s.cfg.FromBeginning {
		start = kafka.FirstOffset
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        s.cfg.Brokers,
		GroupID:        s.cfg.GroupID,
		Topic:          s.cfg.Topic,
		Dialer:         s.dialer,
		CommitInterval: KafkaCommitInterval,
		StartOffset:    start,
		MaxBytes:       8 << 20,
		MaxWait:        250 * time.Millisecond,
		// kafka-go waits ReadBackoffMin (100 ms by default) after some
		// empty fetches: that would be a line's latency.
		ReadBackoffMin: time.Millisecond,
		ReadBackoffMax: time.Second,
		ErrorLogger:    kafka.LoggerFunc(func(msg string, args ...any) { s.log.Warn("kafka", "err", fmt.Sprintf(msg, args...)) }),
	})
	defer func() {
		// Close commits the offsets read since the last commit.
		if err := r.Close(); err != nil {
			s.log.Warn("close reader", "err", err)
		}
	}()
	var sources []string // "kafka:TOPIC/PARTITION", built once per partition
	batch := make([]Line, 1)
	backoff := 100 * time.Millisecond
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			s.log.Warn("read", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		for len(sources) <= m.Partition {
			sources = append(sources, "kafka:"+m.Topic+"/"+strconv.Itoa(len(sources)))
		}
		l, err := DecodeMessage(m.Value, m.Key, s.cfg.Type(), s.cfg.MaxLineBytes)
		if err != nil {
			if errors.Is(err, ErrLineTooLong) {
				add(s.tooLong, 1)
			} else {
				add(s.bad, 1)
			}
			s.log.Warn("bad message skipped", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			continue
		}
		if l.Text == "" {
			continue
		}
		l.Source = sources[m.Partition]
		batch[0] = l
		if err := h(ctx, batch); err != nil {
			return done(ctx, fmt.Errorf("kafka source %s: %w", s.name, err))
		}
		add(s.lines, 1)
	}
}

// ErrLineTooLong is returned (wrapped) for a message whose line is longer
// than the source's max_line_bytes.
var ErrLineTooLong = errors.New("line too long")

// maxHostBytes bounds a host name taken from a message (DNS's limit).
const maxHostBytes = 253

// jsonEvent is the union of the JSON forms a server-logs message may take:
// a Filebeat event (message, @timestamp, host.name, fields.log_type or
// log_type at the root with fields_under_root) and the seed producer's
// {"message","source","timestamp"}.
type jsonEvent struct {
	Message   *string         `json:"message"`
	At        *string         `json:"@timestamp"`
	Host      json.RawMessage `json:"host"`
	Fields    json.RawMessage `json:"fields"`
	LogType   *string         `json:"log_type"`
	Source    json.RawMessage `json:"source"`
	Timestamp json.RawMessage `json:"timestamp"`
}

// DecodeMessage turns one server-logs message value into a Line: a raw log
// line, a Filebeat JSON event or a seed-producer JSON event (a value whose
// first non-blank byte is '{'). typ is the source's type label, used unless
// the event names its own (Filebeat fields.log_type); key, when the event
// names no host, is taken as the host (DESIGN.md: the key is the source host
// or none). Source is left for the caller. A message with no text after
// trimming yields a Line with empty Text and no error.
func DecodeMessage(value, key []byte, typ string, maxLine int) (Line, error) {
	l := Line{Type: typ}
	trimmed := bytes.TrimLeft(value, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		text := bytes.TrimRight(value, "\r\n")
		if maxLine > 0 && len(text) > maxLine {
			return Line{}, fmt.Errorf("%w: %d bytes, limit %d", ErrLineTooLong, len(text), maxLine)
		}
		l.Text = string(text)
		if h, err := hostName(string(key)); err == nil {
			l.Host = h
		}
		return l, nil
	}
	var ev jsonEvent
	if err := json.Unmarshal(trimmed, &ev); err != nil {
		return Line{}, fmt.Errorf("json: %w", err)
	}
	if ev.Message == nil {
		return Line{}, errors.New("json event without a message field")
	}
	text := *ev.Message
	for len(text) > 0 && (text[len(text)-1] == '\n' || text[len(text)-1] == '\r') {
		text = text[:len(text)-1]
	}
	if maxLine > 0 && len(text) > maxLine {
		return Line{}, fmt.Errorf("%w: %d bytes, limit %d", ErrLineTooLong, len(text), maxLine)
	}
	l.Text = text
	if ev.At != nil { // Filebeat
		t, err := time.Parse(time.RFC3339Nano, *ev.At)
		if err != nil {
			return Line{}, fmt.Errorf("@timestamp: %q is not an RFC 3339 time", *ev.At)
		}
		l.Time = t
	}
	var err error
	if l.Host, err = filebeatHost(ev.Host); err != nil {
		return Line{}, err
	}
	if t, ok, err := logType(ev); err != nil {
		return Line{}, err
	} else if ok {
		l.Type = t
	}
	if l.Host == "" && len(ev.Source) > 0 {
		// The seed producer's "source" is the host; old Filebeat put the
		// file path there, which is not a host name and is ignored.
		var src string
		if err := json.Unmarshal(ev.Source, &src); err != nil {
			return Line{}, errors.New("source: not a string")
		}
		if h, err := hostName(src); err == nil {
			l.Host = h
		}
	}
	if len(ev.Timestamp) > 0 && l.Time.IsZero() {
		t, err := epochSeconds(ev.Timestamp)
		if err != nil {
			return Line{}, err
		}
		l.Time = t
	}
	if l.Host == "" {
		if h, err := hostName(string(key)); err == nil {
			l.Host = h
		}
	}
	return l, nil
}

// filebeatHost reads host as Filebeat writes it ({"name": ...}) or as a
// plain string (Logstash and some shippers).
func filebeatHost(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var name string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &name); err != nil {
			return "", errors.New("host: not a string")
		}
	} else {
		var h struct {
			Name     string `json:"name"`
			Hostname string `json:"hostname"`
		}
		if err := json.Unmarshal(raw, &h); err != nil {
			return "", errors.New("host: neither a string nor an object with name")
		}
		name = h.Name
		if name == "" {
			name = h.Hostname
		}
	}
	if name == "" {
		return "", nil
	}
	return hostName(name)
}

func logType(ev jsonEvent) (string, bool, error) {
	t := ""
	if ev.LogType != nil {
		t = *ev.LogType
	}
	if len(ev.Fields) > 0 && string(ev.Fields) != "null" {
		var f struct {
			LogType *string `json:"log_type"`
		}
		if err := json.Unmarshal(ev.Fields, &f); err != nil {
			return "", false, errors.New("fields: not an object")
		}
		if f.LogType != nil {
			t = *f.LogType
		}
	}
	if t == "" {
		return "", false, nil
	}
	if !contains(KnownTypes, t) {
		return "", false, fmt.Errorf("log_type: unknown type %q", t)
	}
	return t, true, nil
}

// epochSeconds reads the seed producer's timestamp: Python's time.time(),
// a float of seconds since the epoch.
func epochSeconds(raw json.RawMessage) (time.Time, error) {
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || math.IsNaN(f) || f <= 0 || f > 1e11 {
		return time.Time{}, fmt.Errorf("timestamp: %s is not seconds since the epoch", truncate(string(raw), 40))
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(math.Round(frac*1e6))*1e3).UTC(), nil
}

// hostName accepts a host name or address: printable ASCII without spaces,
// at most 253 bytes.
func hostName(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty host")
	}
	if len(s) > maxHostBytes {
		return "", fmt.Errorf("host: longer than %d bytes", maxHostBytes)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return "", fmt.Errorf("host: %q is not a host name", truncate(s, 40))
		}
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

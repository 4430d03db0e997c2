package decisionfeed

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
	"github.com/segmentio/kafka-go"
)

// PublisherConfig configures a Publisher. Zero fields take the defaults
// given beside them.
type PublisherConfig struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string
	// Topic is the decisions topic (default TopicDecisions).
	Topic string
	// Limits validate every decision before it is sent (default DefaultLimits()).
	Limits Limits
	// BatchTimeout is how long the client waits to fill a batch before it
	// sends it (default 1ms). kafka-go's own default of 1s would add up to a
	// second to every decision's latency.
	BatchTimeout time.Duration
	// WriteTimeout bounds one produce request (default 10s).
	WriteTimeout time.Duration
	// MaxAttempts is how often a produce is tried before Publish gives up (default 10).
	MaxAttempts int
	// ClientID names this client to the brokers (default "portcullis").
	ClientID string
	// Security is the TLS and SASL the client connects with (nil: plaintext).
	Security *kafkaconn.Security
}

// Publisher sends decisions to the decisions topic. Every message is keyed
// by Decision.Key and partitioned with murmur2, the partitioner of the Java
// client and of kafka-python, so one key always lands on one partition no
// matter which client produced it, and per-key order holds.
type Publisher struct {
	w      *kafka.Writer
	tr     *kafka.Transport
	limits Limits
}

// NewPublisher checks cfg and returns a publisher. It does not connect;
// the first Publish does.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("publisher: no brokers")
	}
	if cfg.Topic == "" {
		cfg.Topic = TopicDecisions
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits()
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = time.Millisecond
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 10
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "portcullis"
	}
	tr := cfg.Security.Transport(&kafka.Transport{ClientID: cfg.ClientID, MetadataTTL: 5 * time.Second})
	w := &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, // the zero value means no acks at all
		BatchTimeout: cfg.BatchTimeout,
		BatchSize:    1000,
		BatchBytes:   int64(max(cfg.Limits.MaxMessageBytes, 1<<20)) * 4,
		WriteTimeout: cfg.WriteTimeout,
		ReadTimeout:  cfg.WriteTimeout,
		MaxAttempts:  cfg.MaxAttempts,
		Transport:    tr,
	}
	return &Publisher{w: w, tr: tr, limits: cfg.Limits}, nil
}

// Publish validates and encodes every decision, then sends them all and
// returns once the brokers acknowledged them (acks=all). Nothing is sent
// when one decision is invalid.
func (p *Publisher) Publish(ctx context.Context, ds ...Decision) error {
	if len(ds) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(ds))
	for i := range ds {
		b, err := Encode(&ds[i], p.limits)
		if err != nil {
			return fmt.Errorf("publish decision %d (%s): %w", i, ds[i].Key(), err)
		}
		msgs[i] = kafka.Message{Key: []byte(ds[i].Key()), Value: b}
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("publish %d decisions to %s: %w", len(ds), p.w.Topic, err)
	}
	return nil
}

// Close flushes nothing (Publish is synchronous) and releases connections.
func (p *Publisher) Close() error {
	err := p.w.Close()
	p.tr.CloseIdleConnections()
	if err != nil {
		return fmt.Errorf("close publisher: %w", err)
	}
	return nil
}

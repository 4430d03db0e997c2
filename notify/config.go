// Package notify sends the engine's alerts to people: generic JSON
// webhooks, Slack-compatible webhooks and email over SMTP with STARTTLS.
// Alerts are read from the alerts topic under a consumer group, filtered
// per destination by scenario and severity, batched, rate limited and
// retried with backoff; the group's offset moves only past alerts every
// destination has accepted, so a restart loses none.
package notify

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"strings"
	"text/template"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// Config is the notifier's YAML configuration.
type Config struct {
	// Brokers are the Kafka bootstrap brokers (the --brokers flag and
	// PORTCULLIS_BROKERS override them).
	Brokers []string `yaml:"brokers"`
	// Kafka is the TLS and SASL notify connects with (the --kafka-* flags
	// and PORTCULLIS_KAFKA_* override it).
	Kafka kafkaconn.Config `yaml:"kafka"`
	// Topic is the alerts topic (default decisionfeed.TopicAlerts).
	Topic string `yaml:"topic"`
	// Group is the consumer group whose committed offsets remember what
	// was delivered (default "portcullis-notify").
	Group string `yaml:"group"`
	// Batch bounds a batch: at most MaxAlerts alerts, sent at most MaxWait
	// after its first alert arrived.
	Batch BatchConfig `yaml:"batch"`
	// Retry bounds the backoff between delivery attempts; delivery is
	// retried until it succeeds or the notifier stops.
	Retry RetryConfig `yaml:"retry"`
	// Destinations receive the alerts; at least one.
	Destinations []Destination `yaml:"destinations"`
}

// BatchConfig bounds one batch of alerts.
type BatchConfig struct {
	MaxAlerts int           `yaml:"max_alerts"`
	MaxWait   time.Duration `yaml:"max_wait"`
}

// RetryConfig bounds the exponential backoff between attempts.
type RetryConfig struct {
	Min time.Duration `yaml:"min"`
	Max time.Duration `yaml:"max"`
}

// Destination is one receiver of alerts.
type Destination struct {
	// Name identifies the destination in logs and metrics.
	Name string `yaml:"name"`
	// Type is webhook, slack or email.
	Type string `yaml:"type"`
	// URL is the webhook address; URLFile reads it from a file instead
	// (Slack webhook addresses are secrets).
	URL     string `yaml:"url"`
	URLFile string `yaml:"url_file"`
	// Headers are added to webhook requests.
	Headers map[string]string `yaml:"headers"`
	// Template renders the message: the JSON body of a webhook (default:
	// the alerts as JSON), the text of a Slack message, the body of an
	// email. It sees a Batch.
	Template string `yaml:"template"`
	// Subject is the email subject template (default a count and the
	// first scenario).
	Subject string `yaml:"subject"`
	// Filter selects the alerts this destination receives.
	Filter Filter `yaml:"filter"`
	// MaxPerMinute is the most messages sent per minute (0: no limit).
	// Alerts that wait for the limit join the next batch, so the limit
	// never drops an alert.
	MaxPerMinute int `yaml:"max_per_minute"`
	// Timeout bounds one delivery attempt (default 10s).
	Timeout time.Duration `yaml:"timeout"`
	// SMTP configures email destinations.
	SMTP SMTPConfig `yaml:"smtp"`
}

// SMTPConfig is an email destination's server and envelope.
type SMTPConfig struct {
	// Addr is the server, host:port.
	Addr string `yaml:"addr"`
	// From and To are the envelope and header addresses.
	From string   `yaml:"from"`
	To   []string `yaml:"to"`
	// Username and PasswordFile authenticate (PLAIN, only over TLS).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// StartTLS is "required" (default) or "off"; off is for a relay on
	// loopback only.
	StartTLS string `yaml:"starttls"`
	// CAFile verifies the server's certificate (default: system roots).
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify turns certificate verification off; labs only,
	// logged loudly.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Filter selects alerts.
type Filter struct {
	// Scenarios are path.Match patterns (e.g. "crowdsecurity/ssh-*"); an
	// alert passes when one matches (empty: every scenario).
	Scenarios []string `yaml:"scenarios"`
	// ExcludeScenarios drops alerts whose scenario one pattern matches.
	ExcludeScenarios []string `yaml:"exclude_scenarios"`
	// MinSeverity is low, medium or high (default low: everything).
	MinSeverity string `yaml:"min_severity"`
}

// Severity ranks an alert: high when it led to a ban, medium for another
// remedy (captcha, throttle), low when it led to none or was simulated.
type Severity int

// The severities, lowest first.
const (
	SeverityLow Severity = iota
	SeverityMedium
	SeverityHigh
)

var severityNames = [...]string{"low", "medium", "high"}

// String returns the severity's name.
func (s Severity) String() string { return severityNames[s] }

// parseSeverity reads a severity name; empty is low.
func parseSeverity(s string) (Severity, error) {
	if s == "" {
		return SeverityLow, nil
	}
	for i, n := range severityNames {
		if s == n {
			return Severity(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not low, medium or high", s)
}

// SeverityOf ranks an alert.
func SeverityOf(a *engine.Alert) Severity {
	switch {
	case a.Simulated || a.Decision == nil:
		return SeverityLow
	case a.Decision.Type == decisionfeed.TypeBan:
		return SeverityHigh
	default:
		return SeverityMedium
	}
}

// DefaultConfig returns the defaults every field not set in the file takes.
func DefaultConfig() Config {
	return Config{
		Topic: decisionfeed.TopicAlerts,
		Group: "portcullis-notify",
		Batch: BatchConfig{MaxAlerts: 50, MaxWait: 10 * time.Second},
		Retry: RetryConfig{Min: time.Second, Max: time.Minute},
	}
}

// maxAlertsPerBatch bounds batch.max_alerts: a message of thousands of
// alerts helps nobody and may exceed a receiver's limits.
const maxAlertsPerBatch = 1000

// Validate checks the configuration without I/O. Errors name the YAML key.
func (c *Config) Validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("brokers: none given")
	}
	for i, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("brokers[%d]: %q is not host:port", i, b)
		}
	}
	if c.Topic == "" {
		return errors.New("topic: empty")
	}
	if c.Group == "" {
		return errors.New("group: empty")
	}
	if c.Batch.MaxAlerts < 1 || c.Batch.MaxAlerts > maxAlertsPerBatch {
		return fmt.Errorf("batch.max_alerts: %d is not between 1 and %d", c.Batch.MaxAlerts, maxAlertsPerBatch)
	}
	if c.Batch.MaxWait < 0 || c.Batch.MaxWait > time.Hour {
		return fmt.Errorf("batch.max_wait: %s is not between 0 and 1h", c.Batch.MaxWait)
	}
	if c.Retry.Min <= 0 || c.Retry.Max < c.Retry.Min {
		return fmt.Errorf("retry: min %s and max %s: want 0 < min <= max", c.Retry.Min, c.Retry.Max)
	}
	if len(c.Destinations) == 0 {
		return errors.New("destinations: none given")
	}
	seen := map[string]bool{}
	for i := range c.Destinations {
		d := &c.Destinations[i]
		if err := d.validate(); err != nil {
			return fmt.Errorf("destinations[%d]: %w", i, err)
		}
		if seen[d.Name] {
			return fmt.Errorf("destinations[%d]: name %q used twice", i, d.Name)
		}
		seen[d.Name] = true
	}
	return nil
}

func (d *Destination) validate() error {
	if d.Name == "" {
		return errors.New("name: empty")
	}
	if len(d.Name) > 64 || strings.ContainsFunc(d.Name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) {
		return fmt.Errorf("name: %q: want at most 64 of A-Z a-z 0-9 . _ - (it names a consumer group)", d.Name)
	}
	if d.Timeout < 0 {
		return fmt.Errorf("timeout: %s is negative", d.Timeout)
	}
	if d.MaxPerMinute < 0 {
		return fmt.Errorf("max_per_minute: %d is negative", d.MaxPerMinute)
	}
	for _, p := range append(append([]string(nil), d.Filter.Scenarios...), d.Filter.ExcludeScenarios...) {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("filter: scenario pattern %q: %w", p, err)
		}
	}
	if _, err := parseSeverity(d.Filter.MinSeverity); err != nil {
		return fmt.Errorf("filter.min_severity: %w", err)
	}
	if _, err := template.New("t").Funcs(templateFuncs).Parse(d.Template); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	if _, err := template.New("s").Funcs(templateFuncs).Parse(d.Subject); err != nil {
		return fmt.Errorf("subject: %w", err)
	}
	switch d.Type {
	case "webhook", "slack":
		if (d.URL == "") == (d.URLFile == "") {
			return errors.New("url or url_file: give exactly one")
		}
		if d.URL != "" {
			if err := checkURL(d.URL); err != nil {
				return fmt.Errorf("url: %w", err)
			}
		}
		if d.SMTP.Addr != "" {
			return errors.New("smtp: only for type email")
		}
	case "email":
		s := &d.SMTP
		if _, _, err := net.SplitHostPort(s.Addr); err != nil {
			return fmt.Errorf("smtp.addr: %q is not host:port", s.Addr)
		}
		if s.From == "" || len(s.To) == 0 {
			return errors.New("smtp.from and smtp.to: both required")
		}
		for _, a := range append([]string{s.From}, s.To...) {
			if strings.ContainsAny(a, "\r\n<>") || !strings.Contains(a, "@") {
				return fmt.Errorf("smtp: %q is not a plain email address", a)
			}
		}
		switch s.StartTLS {
		case "", "required", "off":
		default:
			return fmt.Errorf("smtp.starttls: %q is not required or off", s.StartTLS)
		}
		if s.Username != "" && s.PasswordFile == "" {
			return errors.New("smtp.password_file: required with smtp.username")
		}
		if s.Username != "" && s.StartTLS == "off" {
			return errors.New("smtp.username: a password is never sent without TLS")
		}
		if d.URL != "" || d.URLFile != "" {
			return errors.New("url: not for type email")
		}
	default:
		return fmt.Errorf("type: %q is not webhook, slack or email", d.Type)
	}
	return nil
}

// checkURL accepts http and https addresses with a host. The address is
// never echoed: it may carry a token.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme is not http or https")
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	return nil
}

// readSecret reads a one-line secret from a file, trimming the newline.
func readSecret(file, what string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s %s: empty", what, file)
	}
	return s, nil
}

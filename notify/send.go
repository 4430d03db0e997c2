package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/portcullis-ips/portcullis/engine"
)

// Batch is what a destination's templates see.
type Batch struct {
	// Alerts are the batch's alerts, in topic order.
	Alerts []engine.Alert
	// Destination is the destination's name.
	Destination string
}

// Count is the number of alerts.
func (b Batch) Count() int { return len(b.Alerts) }

var templateFuncs = template.FuncMap{
	"severity": func(a engine.Alert) string { return SeverityOf(&a).String() },
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

const (
	defaultSlackTemplate = `{{range .Alerts}}*{{.Scenario}}* from {{.IP}}{{if .Country}} ({{.Country}}){{end}}: {{.Events}} events{{with .Decision}}, {{.Type}} {{.Duration}}{{end}}{{if .Simulated}} (simulated){{end}}
{{end}}`
	defaultEmailTemplate = `{{range .Alerts}}{{.LastSeen.Format "2006-01-02T15:04:05Z07:00"}}  {{.IP}}  {{if .Country}}{{.Country}}{{else}}-{{end}}  {{.Scenario}}  {{.Events}} events  {{with .Decision}}{{.Type}} {{.Duration}}{{else}}no decision{{end}}{{if .Simulated}} (simulated){{end}}
{{end}}`
	defaultSubject = `[portcullis] {{.Count}} alert{{if ne .Count 1}}s{{end}}{{with index .Alerts 0}}: {{.Scenario}} from {{.IP}}{{end}}`
)

// sender delivers one rendered batch to one destination.
type sender interface {
	send(ctx context.Context, b Batch) error
}

// permanentError is a delivery failure that retrying cannot fix (a
// template that fails on this batch): it is counted and the batch skipped
// for that destination.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// newSender builds the sender of a validated destination, reading its
// secrets.
func newSender(d *Destination) (sender, error) {
	tmpl := d.Template
	switch d.Type {
	case "webhook", "slack":
		addr := d.URL
		if d.URLFile != "" {
			u, err := readSecret(d.URLFile, "url_file")
			if err != nil {
				return nil, err
			}
			if err := checkURL(u); err != nil {
				return nil, fmt.Errorf("url_file %s: %w", d.URLFile, err)
			}
			addr = u
		}
		if tmpl == "" && d.Type == "slack" {
			tmpl = defaultSlackTemplate
		}
		w := &webhook{url: addr, headers: d.Headers, slack: d.Type == "slack",
			client: &http.Client{Timeout: d.Timeout}}
		if tmpl != "" {
			w.tmpl = template.Must(template.New(d.Name).Funcs(templateFuncs).Parse(tmpl))
		}
		return w, nil
	case "email":
		if tmpl == "" {
			tmpl = defaultEmailTemplate
		}
		subj := d.Subject
		if subj == "" {
			subj = defaultSubject
		}
		e := &email{cfg: d.SMTP, timeout: d.Timeout,
			body:    template.Must(template.New(d.Name).Funcs(templateFuncs).Parse(tmpl)),
			subject: template.Must(template.New(d.Name + "-subject").Funcs(templateFuncs).Parse(subj))}
		if d.SMTP.PasswordFile != "" {
			p, err := readSecret(d.SMTP.PasswordFile, "smtp.password_file")
			if err != nil {
				return nil, err
			}
			e.password = p
		}
		host, _, _ := net.SplitHostPort(d.SMTP.Addr)
		e.tls = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: d.SMTP.InsecureSkipVerify} //nolint:gosec // explicit lab setting, logged at start
		if d.SMTP.CAFile != "" {
			pem, err := os.ReadFile(d.SMTP.CAFile)
			if err != nil {
				return nil, fmt.Errorf("smtp.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("smtp.ca_file %s: no PEM certificate", d.SMTP.CAFile)
			}
			e.tls.RootCAs = pool
		}
		return e, nil
	}
	return nil, fmt.Errorf("type %q", d.Type)
}

// webhook posts JSON: the alerts (generic webhook), a rendered template,
// or Slack's {"text": ...}.
type webhook struct {
	url     string
	headers map[string]string
	slack   bool
	tmpl    *template.Template
	client  *http.Client
}

func (w *webhook) send(ctx context.Context, b Batch) error {
	var body []byte
	switch {
	case w.slack:
		var text strings.Builder
		if err := w.tmpl.Execute(&text, b); err != nil {
			return permanentError{fmt.Errorf("template: %w", err)}
		}
		body, _ = json.Marshal(map[string]string{"text": text.String()}) // a map of strings always marshals
	case w.tmpl != nil:
		var buf bytes.Buffer
		if err := w.tmpl.Execute(&buf, b); err != nil {
			return permanentError{fmt.Errorf("template: %w", err)}
		}
		body = buf.Bytes()
	default:
		var err error
		body, err = json.Marshal(struct {
			Source string         `json:"source"`
			Count  int            `json:"count"`
			Alerts []engine.Alert `json:"alerts"`
		}{"portcullis", len(b.Alerts), b.Alerts})
		if err != nil {
			return permanentError{fmt.Errorf("encode alerts: %w", err)}
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return permanentError{errors.New("build request")}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "portcullis-notify")
	for k, v := range w.headers {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// The error of net/http names the URL, which may hold a token.
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post: status %d", resp.StatusCode)
	}
	return nil
}

// email sends one message per batch over SMTP, STARTTLS required unless
// turned off.
type email struct {
	cfg           SMTPConfig
	password      string
	timeout       time.Duration
	tls           *tls.Config
	body, subject *template.Template
}

func (e *email) send(ctx context.Context, b Batch) error {
	var subj, body strings.Builder
	if err := e.subject.Execute(&subj, b); err != nil {
		return permanentError{fmt.Errorf("subject template: %w", err)}
	}
	if err := e.body.Execute(&body, b); err != nil {
		return permanentError{fmt.Errorf("template: %w", err)}
	}
	msg := e.message(oneLine(subj.String()), body.String())

	d := net.Dialer{Timeout: e.timeout}
	conn, err := d.DialContext(ctx, "tcp", e.cfg.Addr)
	if err != nil {
		return fmt.Errorf("smtp dial: %w", err)
	}
	deadline := time.Now().Add(e.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline) // a failed deadline shows as a timeout below
	host, _, _ := net.SplitHostPort(e.cfg.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("smtp greeting: %w", err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Hello("portcullis"); err != nil {
		return fmt.Errorf("smtp hello: %w", err)
	}
	if e.cfg.StartTLS != "off" {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("smtp: server does not offer STARTTLS (smtp.starttls is required)")
		}
		if err := c.StartTLS(e.tls); err != nil {
			return fmt.Errorf("smtp starttls: %w", err)
		}
	}
	if e.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", e.cfg.Username, e.password, host)); err != nil {
			return fmt.Errorf("smtp auth as %s: %w", e.cfg.Username, err)
		}
	}
	if err := c.Mail(e.cfg.From); err != nil {
		return fmt.Errorf("smtp mail from: %w", err)
	}
	for _, to := range e.cfg.To {
		if err := c.Rcpt(to); err != nil {
			return fmt.Errorf("smtp rcpt %s: %w", to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp data: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("smtp data: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp data: %w", err)
	}
	if err := c.Quit(); err != nil {
		return fmt.Errorf("smtp quit: %w", err)
	}
	return nil
}

// message builds an RFC 5322 message, CRLF line ends, plain UTF-8 text.
func (e *email) message(subject, body string) []byte {
	var m bytes.Buffer
	fmt.Fprintf(&m, "From: %s\r\n", e.cfg.From)
	fmt.Fprintf(&m, "To: %s\r\n", strings.Join(e.cfg.To, ", "))
	fmt.Fprintf(&m, "Subject: %s\r\n", subject)
	fmt.Fprintf(&m, "Date: %s\r\n", time.Now().UTC().Format(time.RFC1123Z))
	m.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	for _, l := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		m.WriteString(strings.TrimRight(l, "\r"))
		m.WriteString("\r\n")
	}
	return m.Bytes()
}

// oneLine keeps a header value on one line: a scenario name or other
// alert text cannot inject headers.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

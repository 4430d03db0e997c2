package cloudflare

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cloudflare/cloudflare-go/v7/rules"
	"github.com/cloudflare/cloudflare-go/v7/shared"
)

type sharedErrorData = shared.ErrorData

// APIError is an error answer of the Cloudflare API, reduced to one line:
// the operation, the HTTP status, Cloudflare's error codes and messages,
// and a hint for the common causes.
type APIError struct {
	Op       string
	Status   int
	Codes    []int64
	Messages []string
}

// Error implements error.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d", e.Op, e.Status)
	for i, m := range e.Messages {
		fmt.Fprintf(&b, ": %s (code %d)", m, e.Codes[i])
	}
	if h := e.hint(); h != "" {
		b.WriteString(" - ")
		b.WriteString(h)
	}
	return b.String()
}

func (e *APIError) hint() string {
	has := func(codes ...int64) bool {
		for _, c := range e.Codes {
			for _, w := range codes {
				if c == w {
					return true
				}
			}
		}
		return false
	}
	switch {
	case e.Status == 401 || e.Status == 403 || has(10000, 9109, 6003, 6111):
		return "check the API token: it must be valid and allowed to edit account filter lists and zone WAF"
	case has(7003) || (e.Status == 404 && strings.Contains(e.Op, "account")):
		return "check the account and zone ids"
	case e.Status == 429 || e.Status >= 500:
		return "Cloudflare kept refusing after the retries"
	}
	return ""
}

// apiError wraps err from the SDK: an API answer becomes an *APIError,
// anything else is wrapped with op.
func apiError(op string, err error) error {
	var ae *rules.Error
	if !errors.As(err, &ae) {
		return &opError{op: op, err: err}
	}
	e := &APIError{Op: op, Status: ae.StatusCode}
	for _, d := range ae.Errors {
		e.Codes = append(e.Codes, d.Code)
		e.Messages = append(e.Messages, oneLine(d.Message))
	}
	return e
}

// oneLine makes text from the API safe for a one-line error: control
// characters become spaces and it is cut at 200 bytes.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "..."
	}
	return s
}

// opError wraps an error that is not an API answer (a network error, an
// answer that does not decode) and prints it on one line.
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string { return e.op + ": " + oneLine(e.err.Error()) }

func (e *opError) Unwrap() error { return e.err }

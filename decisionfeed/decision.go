// Package decisionfeed carries ban decisions between the detection engine and
// the bouncers: the schema v1 decision message and its validation, a Kafka
// publisher, and a subscriber that rebuilds the live set of decisions from a
// compacted topic and then streams changes.
package decisionfeed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// SchemaVersion is the version of the decision message this package reads and writes.
const SchemaVersion = 1

// Op says whether a decision is added or withdrawn.
type Op string

// The operations of schema v1.
const (
	OpAdd    Op = "add"
	OpDelete Op = "delete"
)

// Type is the remedy a decision asks for. Kernel enforcers act on TypeBan only.
type Type string

// The decision types of schema v1.
const (
	TypeBan      Type = "ban"
	TypeCaptcha  Type = "captcha"
	TypeThrottle Type = "throttle"
)

// Scope says how Value is to be read.
type Scope string

// The scopes of schema v1.
const (
	ScopeIP    Scope = "ip"    // Value is a single address in canonical form.
	ScopeRange Scope = "range" // Value is a CIDR prefix in canonical (masked) form.
)

// Decision is one message of the decisions topic, schema v1 (see DESIGN.md).
// The Kafka message key is Key(); until is authoritative for expiry.
type Decision struct {
	// Legacy marks a decision that lives under a schema v1 key without
	// origin ("ip:203.0.113.7"): the subscriber sets it on what it read
	// under such a key, and a Publisher sends a decision so marked under
	// that key. It is not part of the message.
	Legacy bool `json:"-"`

	V         int       `json:"v"`
	ID        string    `json:"id"`
	Op        Op        `json:"op"`
	Type      Type      `json:"type"`
	Scope     Scope     `json:"scope"`
	Value     string    `json:"value"`
	Duration  string    `json:"duration,omitempty"`
	Until     time.Time `json:"until,omitzero"`
	Scenario  string    `json:"scenario,omitempty"`
	Origin    string    `json:"origin"`
	CreatedAt time.Time `json:"created_at"`
	Country   string    `json:"country,omitempty"`
	Host      string    `json:"host,omitempty"`
	Reason    string    `json:"reason,omitempty"`
}

// Limits bound what a valid decision may contain. The zero value is not
// useful; start from DefaultLimits.
type Limits struct {
	// MaxMessageBytes is the largest encoded message accepted.
	MaxMessageBytes int
	// MinRangeBitsV4 and MinRangeBitsV6 are the shortest prefix lengths a
	// range decision may have, so that a typo cannot ban 0.0.0.0/0.
	MinRangeBitsV4 int
	MinRangeBitsV6 int
	// MaxDuration is the longest a decision may last (until - created_at).
	MaxDuration time.Duration
}

// DefaultLimits returns the limits used when none are configured.
func DefaultLimits() Limits {
	return Limits{
		MaxMessageBytes: 4096,
		MinRangeBitsV4:  8,
		MinRangeBitsV6:  32,
		MaxDuration:     10 * 365 * 24 * time.Hour,
	}
}

// Field length limits of schema v1.
const (
	maxIDLen       = 64
	maxScenarioLen = 256
	maxOriginLen   = 80 // "lists:" and a 64-byte list name
	maxHostLen     = 253
	maxReasonLen   = 512
	maxDurationLen = 32
)

// ErrTooLarge is returned (wrapped) for a message above Limits.MaxMessageBytes.
var ErrTooLarge = errors.New("message too large")

// Key returns the Kafka message key of the decision, "scope:value@origin"
// ("ip:203.0.113.7@cli", "range:198.51.100.0/24@lists:firehol"), so that
// decisions of independent producers on one address are distinct keys; for
// a Legacy decision it is the schema v1 key "scope:value".
func (d *Decision) Key() string {
	if d.Legacy {
		return d.Target()
	}
	return string(d.Scope) + ":" + d.Value + "@" + d.Origin
}

// Target returns "scope:value", the address or range the decision applies
// to, whatever its origin: the identity bouncers enforce by.
func (d *Decision) Target() string { return string(d.Scope) + ":" + d.Value }

// Prefix returns the decision's value as a prefix (a /32 or /128 for scope ip).
// It is only meaningful on a validated decision.
func (d *Decision) Prefix() (netip.Prefix, error) {
	switch d.Scope {
	case ScopeIP:
		a, err := netip.ParseAddr(d.Value)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	case ScopeRange:
		return netip.ParsePrefix(d.Value)
	}
	return netip.Prefix{}, fmt.Errorf("unknown scope %q", d.Scope)
}

// Expired reports whether an add decision is no longer in force at now.
func (d *Decision) Expired(now time.Time) bool { return !d.Until.After(now) }

// Validate checks the decision against schema v1 and the limits. The error
// names the first offending field.
func (d *Decision) Validate(lim Limits) error {
	if d.V != SchemaVersion {
		return fmt.Errorf("v: unsupported schema version %d", d.V)
	}
	if err := checkToken("id", d.ID, maxIDLen, true); err != nil {
		return err
	}
	switch d.Op {
	case OpAdd, OpDelete:
	default:
		return fmt.Errorf("op: unknown operation %q", d.Op)
	}
	switch d.Type {
	case TypeBan, TypeCaptcha, TypeThrottle:
	default:
		return fmt.Errorf("type: unknown decision type %q", d.Type)
	}
	if err := validateValue(d.Scope, d.Value, lim); err != nil {
		return err
	}
	if len(d.Duration) > maxDurationLen {
		return fmt.Errorf("duration: longer than %d bytes", maxDurationLen)
	}
	var dur time.Duration
	if d.Duration != "" {
		var err error
		if dur, err = time.ParseDuration(d.Duration); err != nil {
			return fmt.Errorf("duration: %q is not a duration", d.Duration)
		}
		if dur < 0 {
			return fmt.Errorf("duration: %q is negative", d.Duration)
		}
	}
	if d.CreatedAt.IsZero() {
		return errors.New("created_at: missing")
	}
	if d.Op == OpAdd {
		if d.Until.IsZero() {
			return errors.New("until: missing on an add")
		}
		if !d.Until.After(d.CreatedAt) {
			return fmt.Errorf("until: %s is not after created_at %s",
				d.Until.Format(time.RFC3339), d.CreatedAt.Format(time.RFC3339))
		}
		if lim.MaxDuration > 0 && d.Until.Sub(d.CreatedAt) > lim.MaxDuration {
			return fmt.Errorf("until: decision lasts longer than %s", lim.MaxDuration)
		}
		if span := d.Until.Sub(d.CreatedAt); d.Duration != "" && !durationMatches(dur, span) {
			return fmt.Errorf("duration: %q disagrees with until - created_at = %s", d.Duration, span)
		}
	}
	if err := checkText("scenario", d.Scenario, maxScenarioLen); err != nil {
		return err
	}
	if err := CheckOrigin(d.Origin); err != nil {
		return err
	}
	if d.Country != "" && !isCountry(d.Country) {
		return fmt.Errorf("country: %q is not an ISO 3166 alpha-2 code", d.Country)
	}
	if err := checkToken("host", d.Host, maxHostLen, false); err != nil {
		return err
	}
	return checkText("reason", d.Reason, maxReasonLen)
}

func validateValue(scope Scope, value string, lim Limits) error {
	switch scope {
	case ScopeIP:
		a, err := netip.ParseAddr(value)
		if err != nil {
			return fmt.Errorf("value: %q is not an IP address", value)
		}
		var buf [64]byte // compare without allocating the canonical form
		if a.Zone() != "" || a.Is4In6() || string(a.AppendTo(buf[:0])) != value {
			return fmt.Errorf("value: %q is not in canonical form (want %q)", value, a.Unmap().WithZone("").String())
		}
		if a.IsUnspecified() {
			return fmt.Errorf("value: %q is the unspecified address", value)
		}
	case ScopeRange:
		p, err := netip.ParsePrefix(value)
		if err != nil {
			return fmt.Errorf("value: %q is not a CIDR range", value)
		}
		var buf [64]byte
		if p.Addr().Is4In6() || p.Masked() != p || string(p.AppendTo(buf[:0])) != value {
			return fmt.Errorf("value: %q is not in canonical form (want %q)", value, p.Masked().String())
		}
		if p.IsSingleIP() {
			return fmt.Errorf("value: %q is a single address; use scope ip", value)
		}
		min := lim.MinRangeBitsV6
		if p.Addr().Is4() {
			min = lim.MinRangeBitsV4
		}
		if p.Bits() < min {
			return fmt.Errorf("value: range %q is broader than /%d", value, min)
		}
	default:
		return fmt.Errorf("scope: unknown scope %q", scope)
	}
	return nil
}

// checkToken accepts printable ASCII without spaces, the shape of ids, origins and host names.
func checkToken(field, s string, max int, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s: missing", field)
		}
		return nil
	}
	if len(s) > max {
		return fmt.Errorf("%s: longer than %d bytes", field, max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%s: byte %d is not printable ASCII", field, i)
		}
	}
	return nil
}

// durationMatches reports whether the informational duration agrees with
// until - created_at, within a second and a thousandth for producers that
// round.
func durationMatches(dur, span time.Duration) bool {
	diff := dur - span
	if diff < 0 {
		diff = -diff
	}
	return diff <= time.Second+span/1000
}

// CheckOrigin validates an origin, the producer identity that is also the
// last part of a decision's key: 1 to 64 bytes of A-Z a-z 0-9 . _ : / -,
// so that it can neither break the key nor smuggle anything into a log
// line or a table.
func CheckOrigin(origin string) error {
	if origin == "" {
		return errors.New("origin: missing")
	}
	if len(origin) > maxOriginLen {
		return fmt.Errorf("origin: longer than %d bytes", maxOriginLen)
	}
	for i := 0; i < len(origin); i++ {
		if !originByte(origin[i]) {
			return fmt.Errorf("origin: byte %d (0x%02x) is not one of A-Z a-z 0-9 . _ : / -", i, origin[i])
		}
	}
	return nil
}

func originByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '/' || c == '-'
}

// checkText accepts any UTF-8 without control characters (C0, DEL, C1)
// and without the bidirectional controls (U+061C, U+200E, U+200F,
// U+202A-U+202E, U+2066-U+2069) that make a reason display as something
// else than it says.
func checkText(field, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s: longer than %d bytes", field, max)
	}
	if strings.ContainsFunc(s, badTextRune) {
		return fmt.Errorf("%s: contains control or invalid characters", field)
	}
	return nil
}

func badTextRune(r rune) bool {
	switch {
	case r < ' ', r >= 0x7f && r <= 0x9f, r == '\uFFFD':
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

func isCountry(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// Decode parses and validates one message value. Unknown fields, trailing
// data and values above lim.MaxMessageBytes are errors.
func Decode(b []byte, lim Limits) (Decision, error) {
	dc := decoder{lim: lim}
	return dc.decode(b)
}

// checkSize rejects a message above lim.MaxMessageBytes.
func checkSize(b []byte, lim Limits) error {
	if lim.MaxMessageBytes > 0 && len(b) > lim.MaxMessageBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), lim.MaxMessageBytes)
	}
	return nil
}

// decodeStrict is Decode with encoding/json alone, the reference the fast
// path is held to.
func decodeStrict(b []byte, lim Limits) (Decision, error) {
	var d Decision
	if err := checkSize(b, lim); err != nil {
		return d, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Decision{}, fmt.Errorf("json: %w", err)
	}
	if dec.More() {
		return Decision{}, errors.New("json: trailing data after the object")
	}
	if err := checkKeys(b); err != nil {
		return Decision{}, err
	}
	if err := d.Validate(lim); err != nil {
		return Decision{}, err
	}
	return d, nil
}

// checkKeys rejects an object that names a field twice, or in another case
// ("value" and "Value"): encoding/json matches keys without regard to case
// and keeps the last, while other consumers (the seed's Python one) may
// read another of them, so such a message means different things to
// different bouncers. b is an object that decoded into a Decision.
func checkKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // the '{'
		return fmt.Errorf("json: %w", err)
	}
	var seen uint16
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("json: %w", err)
		}
		k, _ := t.(string)
		f := fieldOf([]byte(k))
		if f < 0 {
			return fmt.Errorf("json: key %q is not a field name (they are lower case)", k)
		}
		if seen&(1<<f) != 0 {
			return fmt.Errorf("json: key %q appears twice", k)
		}
		seen |= 1 << f
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("json: %w", err)
		}
	}
	return nil
}

// Encode validates the decision and returns its JSON form.
func Encode(d *Decision, lim Limits) ([]byte, error) {
	if err := d.Validate(lim); err != nil {
		return nil, err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	if lim.MaxMessageBytes > 0 && len(b) > lim.MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), lim.MaxMessageBytes)
	}
	return b, nil
}

// Package crowdsec speaks the bouncer side of the CrowdSec Local API (LAPI)
// in both directions.
//
// Server serves GET /v1/decisions/stream and GET /v1/decisions from the
// Portcullis decision feed (it is a decisionfeed.Handler), so CrowdSec's own
// bouncers enforce Portcullis decisions. It keeps the live set in memory and,
// per API key, the set of decisions that key was last sent: a stream call with
// startup=true answers the whole (filtered) live set in "new"; a later call
// answers the difference to what that key was sent before, with decisions that
// were deleted or expired since in "deleted", carrying a negative duration as
// CrowdSec's do.
//
// Puller is the other way: it polls a LAPI decision stream (startup=true
// first) and turns "new" into add decisions and "deleted" into delete
// decisions with origin "crowdsec:<CrowdSec's origin>", for the caller to
// publish. It only deletes what it published itself.
package crowdsec

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// Origin is the origin of the decisions Puller republishes, alone or, as
// it publishes them, followed by ":" and CrowdSec's own origin of the
// decision ("crowdsec:cscli", "crowdsec:crowdsec", "crowdsec:CAPI",
// "crowdsec:lists"), so that they stay apart from Portcullis' own.
const Origin = "crowdsec"

// maxOriginLen is the longest origin a feed decision may carry.
const maxOriginLen = 64

// PullOrigin returns the feed origin of a decision CrowdSec gave with
// origin o: "crowdsec:" and o, where any byte outside [A-Za-z0-9._-]
// becomes "_" and the whole is cut to the feed's 64 bytes; "crowdsec"
// when o is empty.
func PullOrigin(o string) string {
	if o == "" {
		return Origin
	}
	b := []byte(Origin + ":" + o)
	for i := len(Origin) + 1; i < len(b); i++ {
		c := b[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			b[i] = '_'
		}
	}
	return string(b[:min(len(b), maxOriginLen)])
}

// IsPullOrigin reports whether a feed origin is one PullOrigin makes.
func IsPullOrigin(o string) bool {
	return o == Origin || strings.HasPrefix(o, Origin+":")
}

// CrowdSec's scope names.
const (
	ScopeIP    = "Ip"
	ScopeRange = "Range"
)

// Decision is a decision as CrowdSec's LAPI serves it to bouncers.
type Decision struct {
	ID       int64  `json:"id"`
	UUID     string `json:"uuid,omitempty"`
	Origin   string `json:"origin"`
	Type     string `json:"type"`
	Scope    string `json:"scope"`
	Value    string `json:"value"`
	Duration string `json:"duration"`
	Until    string `json:"until,omitempty"`
	Scenario string `json:"scenario"`
}

// Stream is the body of GET /v1/decisions/stream.
type Stream struct {
	New     []Decision `json:"new"`
	Deleted []Decision `json:"deleted"`
}

// lapiScope maps a feed scope to CrowdSec's name.
func lapiScope(s decisionfeed.Scope) string {
	if s == decisionfeed.ScopeRange {
		return ScopeRange
	}
	return ScopeIP
}

// formatDuration renders d as CrowdSec does, truncated to whole seconds
// ("3h59m59s", "-2h0m5s").
func formatDuration(d time.Duration) string {
	return d.Truncate(time.Second).String()
}

// toLAPI converts a live feed decision, with the LAPI id it was given.
func toLAPI(d *decisionfeed.Decision, id int64, now time.Time) Decision {
	scenario := d.Scenario
	if scenario == "" {
		scenario = d.Reason
	}
	return Decision{
		ID:       id,
		UUID:     d.ID,
		Origin:   d.Origin,
		Type:     string(d.Type),
		Scope:    lapiScope(d.Scope),
		Value:    d.Value,
		Duration: formatDuration(d.Until.Sub(now)),
		Until:    d.Until.UTC().Format(time.RFC3339),
		Scenario: scenario,
	}
}

// FromLAPI converts a CrowdSec decision into a feed decision with op and
// origin PullOrigin(c.Origin), created at now. An add lasts the decision's duration;
// a delete carries only the key. Scopes other than Ip and Range (Country,
// AS, …), unknown types and unreadable values are errors naming the field.
func FromLAPI(c Decision, op decisionfeed.Op, now time.Time) (decisionfeed.Decision, error) {
	var p netip.Prefix
	switch strings.ToLower(c.Scope) {
	case "ip":
		a, err := netip.ParseAddr(c.Value)
		if err != nil {
			return decisionfeed.Decision{}, fmt.Errorf("decision %d: value %q: %w", c.ID, c.Value, err)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	case "range":
		var err error
		if p, err = netip.ParsePrefix(c.Value); err != nil {
			return decisionfeed.Decision{}, fmt.Errorf("decision %d: value %q: %w", c.ID, c.Value, err)
		}
	default:
		return decisionfeed.Decision{}, fmt.Errorf("decision %d: scope %q not supported (want Ip or Range)", c.ID, c.Scope)
	}
	typ := decisionfeed.Type(strings.ToLower(c.Type))
	switch typ {
	case decisionfeed.TypeBan, decisionfeed.TypeCaptcha, decisionfeed.TypeThrottle:
	default:
		return decisionfeed.Decision{}, fmt.Errorf("decision %d: type %q not supported", c.ID, c.Type)
	}
	var dur time.Duration
	if op == decisionfeed.OpAdd {
		var err error
		if dur, err = time.ParseDuration(c.Duration); err != nil {
			return decisionfeed.Decision{}, fmt.Errorf("decision %d: duration %q: %w", c.ID, c.Duration, err)
		}
		if dur = dur.Truncate(time.Second); dur <= 0 {
			return decisionfeed.Decision{}, fmt.Errorf("decision %d: duration %q is not positive", c.ID, c.Duration)
		}
	}
	d := decisionfeed.NewDecision(op, typ, p, dur, PullOrigin(c.Origin), now)
	d.Scenario = c.Scenario
	return d, nil
}

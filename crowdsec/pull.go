package crowdsec

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// maxStreamBytes bounds a stream response body (CrowdSec's community
// blocklist is some tens of thousands of decisions, a few MB).
const maxStreamBytes = 256 << 20

// PullerConfig configures a Puller.
type PullerConfig struct {
	// URL is the LAPI base URL, e.g. http://127.0.0.1:8080; required.
	URL string
	// APIKey is the bouncer API key sent as X-Api-Key; required.
	APIKey string
	// Scopes is passed as the stream's scopes parameter (default "ip,range").
	Scopes string
	// Client makes the requests (default: a client with a 30s timeout).
	Client *http.Client
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// UserAgent is the User-Agent of the puller's requests, name/version as
// CrowdSec expects of a bouncer.
var UserAgent = "portcullis-crowdsec-pull/" + version()

// version is the module version of the running binary, else its VCS
// revision, else "dev".
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return s.Value[:12]
		}
	}
	return "dev"
}

// Puller reads a LAPI decision stream. Poll it from one goroutine.
//
// It deletes only decisions it published: CrowdSec lists, on a startup
// poll, every decision ever deleted or expired on its side, most of which
// never reached the feed or were superseded there. Seed tells the puller
// which decisions of its origins stand on the feed; each add it returns is
// taken as published (call Reset when it was not).
type Puller struct {
	base    *url.URL
	cfg     PullerConfig
	started bool
	owned   map[string]struct{} // keys of the decisions it published that stand
}

// PollResult is what one poll turned into feed decisions.
type PollResult struct {
	// Decisions are the adds (from "new") and deletes (from "deleted"),
	// deletes first so that a key both deleted and re-added ends added.
	Decisions []decisionfeed.Decision
	// Skipped are the stream's decisions that could not be converted
	// (other scopes, unknown types, bad values), one error each.
	Skipped []error
	// Startup is set when the poll asked for the full set: decisions of
	// origin crowdsec on the feed that it lacks are stale (see Stale).
	Startup bool
	// Ignored counts the deletions of decisions this puller does not hold
	// (never published, or already withdrawn), which it leaves out.
	Ignored int
}

// Stale returns delete decisions for the live feed decisions of origin
// crowdsec whose key the full set of a startup poll does not hold: they
// were deleted on the LAPI while no poll was running.
func Stale(full, live []decisionfeed.Decision, now time.Time) []decisionfeed.Decision {
	keep := make(map[string]struct{}, len(full))
	for i := range full {
		if full[i].Op == decisionfeed.OpAdd {
			keep[full[i].Target()] = struct{}{}
		}
	}
	var out []decisionfeed.Decision
	for i := range live {
		d := &live[i]
		if !IsPullOrigin(d.Origin) {
			continue
		}
		if _, ok := keep[d.Target()]; ok {
			continue
		}
		p, err := d.Prefix()
		if err != nil {
			continue // the feed validated it; a value that does not parse cannot be deleted by key either
		}
		del := decisionfeed.NewDecision(decisionfeed.OpDelete, d.Type, p, 0, d.Origin, now)
		del.Scenario, del.Legacy = d.Scenario, d.Legacy
		out = append(out, del)
	}
	return out
}

// NewPuller checks cfg and returns a puller whose first poll asks for the
// full set (startup=true).
func NewPuller(cfg PullerConfig) (*Puller, error) {
	if cfg.APIKey == "" {
		return nil, fmt.Errorf("crowdsec pull: no API key")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("crowdsec pull: LAPI URL %q: want http(s)://host[:port]", cfg.URL)
	}
	if cfg.Scopes == "" {
		cfg.Scopes = "ip,range"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Puller{base: u, cfg: cfg, owned: map[string]struct{}{}}, nil
}

// Started reports whether a full set was polled since the start or the
// last Reset; until then the next poll is a startup poll.
func (p *Puller) Started() bool { return p.started }

// Seed replaces what the puller holds with the decisions of live (the
// feed's live set) that carry one of its origins.
func (p *Puller) Seed(live []decisionfeed.Decision) {
	p.owned = make(map[string]struct{}, len(live)/8)
	for i := range live {
		if live[i].Op == decisionfeed.OpAdd && IsPullOrigin(live[i].Origin) {
			p.owned[live[i].Key()] = struct{}{}
		}
	}
}

// Reset makes the next poll ask for the full set again (startup=true): call
// it when what a poll returned could not be delivered, since the LAPI will
// not send those changes twice.
func (p *Puller) Reset() { p.started = false }

// Poll fetches the stream once: the full set the first time (and after a
// failed first poll), the changes since the last poll afterwards.
func (p *Puller) Poll(ctx context.Context) (PollResult, error) {
	u := *p.base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/decisions/stream"
	q := url.Values{"startup": {fmt.Sprint(!p.started)}, "scopes": {p.cfg.Scopes}}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return PollResult{}, fmt.Errorf("crowdsec pull: request %s: %w", u.Redacted(), err)
	}
	req.Header.Set("X-Api-Key", p.cfg.APIKey)
	req.Header.Set("User-Agent", UserAgent)
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return PollResult{}, fmt.Errorf("crowdsec pull: get %s: %w", u.Redacted(), err)
	}
	defer func() { _ = resp.Body.Close() }() // read-only body: nothing to lose
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512)) // context for the error only
		return PollResult{}, fmt.Errorf("crowdsec pull: get %s: status %s: %s", u.Redacted(), resp.Status, strings.TrimSpace(string(b)))
	}
	var st Stream
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxStreamBytes))
	if err := dec.Decode(&st); err != nil {
		return PollResult{}, fmt.Errorf("crowdsec pull: decode stream from %s: %w", u.Redacted(), err)
	}
	res := PollResult{Startup: !p.started}
	p.started = true
	now := p.cfg.Now()
	for _, c := range st.Deleted {
		d, err := FromLAPI(c, decisionfeed.OpDelete, now)
		if err != nil {
			res.Skipped = append(res.Skipped, fmt.Errorf("deleted %w", err))
			continue
		}
		k := d.Key()
		if _, ok := p.owned[k]; !ok {
			res.Ignored++
			continue
		}
		delete(p.owned, k)
		res.Decisions = append(res.Decisions, d)
	}
	for _, c := range st.New {
		d, err := FromLAPI(c, decisionfeed.OpAdd, now)
		if err != nil {
			res.Skipped = append(res.Skipped, fmt.Errorf("new %w", err))
			continue
		}
		if err := d.Validate(decisionfeed.DefaultLimits()); err != nil {
			res.Skipped = append(res.Skipped, fmt.Errorf("new decision %d: %w", c.ID, err))
			continue
		}
		p.owned[d.Key()] = struct{}{}
		res.Decisions = append(res.Decisions, d)
	}
	return res, nil
}

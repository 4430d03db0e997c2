// Package intel imports third-party IP blocklists into the decision feed.
//
// An import is computed against the feed itself, not against local state, so
// any host can run it and a lost run is repaired by the next one:
//
//  1. the list is parsed (package blocklist; bad lines are reported with
//     their number and skipped);
//  2. the caller rebuilds the standing decisions from the decisions topic,
//     as a bouncer does, and Plan picks the list's previous content out of
//     them: the decisions of origin "lists:NAME" (the list's own keys), and
//     those of origin "blocklist" and scenario "blocklist/NAME" under legacy
//     keys, which older imports wrote;
//  3. Plan computes the change: an add for every prefix that is new (or whose
//     decision has less than half of the list's duration left, so a list
//     re-imported more often than its duration never lapses), a delete for
//     every previous prefix no longer listed and for every legacy one,
//     nothing for the rest. Decisions of other origins (the engine, an
//     operator, another list) stand under keys of their own, so a list
//     neither shortens, lifts nor defers to them: bouncers enforce the union;
//  4. the import is recorded on the threat-intel topic (key = list name):
//     the list's prefixes in chunks of at most ChunkPrefixes, each record
//     carrying the import id, chunk number and count (Records), so the
//     topic keeps the history of every list's content;
//  5. the adds and deletes are published to the decisions topic, where the
//     bouncers apply them like any other decision.
package intel

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// LegacyOrigin is the origin of the blocklist decisions written under
// schema v1 keys without origin, shared by every list.
const LegacyOrigin = "blocklist"

// Origin returns the origin of a list's decisions, "lists:NAME": each list
// is a producer of its own, so that one list's re-import never withdraws
// what another list (or anyone else) decided.
func Origin(name string) string { return "lists:" + name }

// ChunkPrefixes is the most prefixes in one threat-intel record (about
// 500 KB of JSON at the longest IPv6 ranges, under Kafka's default 1 MB).
const ChunkPrefixes = 10000

// RecordVersion is the schema version of Record.
const RecordVersion = 1

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Scenario returns the scenario of a list's decisions: "blocklist/NAME".
func Scenario(name string) string { return "blocklist/" + name }

// List describes an import: the list's name, the remedy and how long each
// decision lasts.
type List struct {
	Name     string
	Type     decisionfeed.Type
	Duration time.Duration
}

// Validate checks the name (letters, digits, '.', '_', '-', at most 64),
// type and duration.
func (l *List) Validate() error {
	if !nameRE.MatchString(l.Name) {
		return fmt.Errorf("list name %q: want 1-64 letters, digits, '.', '_' or '-'", l.Name)
	}
	switch l.Type {
	case decisionfeed.TypeBan, decisionfeed.TypeCaptcha, decisionfeed.TypeThrottle:
	default:
		return fmt.Errorf("list %s: type %q: want ban, captcha or throttle", l.Name, l.Type)
	}
	if l.Duration <= 0 {
		return fmt.Errorf("list %s: duration %s: must be positive", l.Name, l.Duration)
	}
	return nil
}

// Change is the result of Plan.
type Change struct {
	// Adds are the prefixes to publish add decisions for; AddDecisions
	// builds them, a slice at a time, so a million-line import never holds
	// a million decisions.
	Adds []netip.Prefix
	// Deletes are the delete decisions to publish.
	Deletes []decisionfeed.Decision
	// Unchanged counts listed prefixes whose decision stays as it is.
	Unchanged int

	list List
	now  time.Time
}

// AddDecisions returns the add decisions of Adds[lo:hi].
func (c *Change) AddDecisions(lo, hi int) []decisionfeed.Decision {
	out := make([]decisionfeed.Decision, 0, hi-lo)
	for _, p := range c.Adds[lo:hi] {
		out = append(out, newAdd(c.list, p, c.now))
	}
	return out
}

func newAdd(l List, p netip.Prefix, now time.Time) decisionfeed.Decision {
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, l.Type, p, l.Duration, Origin(l.Name), now)
	d.Scenario = Scenario(l.Name)
	return d
}

// Plan computes the decisions that turn the list's previous content in
// live (the standing decisions of the decisions topic, every origin) into
// prefixes. prefixes must be valid (as blocklist.Parse returns them); live
// is not modified.
func Plan(l List, prefixes []netip.Prefix, live []decisionfeed.Decision, now time.Time) (Change, error) {
	if err := l.Validate(); err != nil {
		return Change{}, err
	}
	origin, scenario := Origin(l.Name), Scenario(l.Name)
	own := make(map[string]*decisionfeed.Decision)
	var legacy []*decisionfeed.Decision
	for i := range live {
		cur := &live[i]
		switch {
		case cur.Op != decisionfeed.OpAdd:
		case !cur.Legacy && cur.Origin == origin:
			own[cur.Target()] = cur
		case cur.Legacy && cur.Origin == LegacyOrigin && cur.Scenario == scenario:
			legacy = append(legacy, cur)
		}
	}
	ch := Change{list: l, now: now}
	listed := make(map[string]struct{}, len(prefixes))
	for _, p := range prefixes {
		k := decisionfeed.PrefixTarget(p)
		if _, dup := listed[k]; dup {
			continue // 10.0.0.1/32 and 10.0.0.1 are one key
		}
		listed[k] = struct{}{}
		if cur, ok := own[k]; ok && !cur.Expired(now) && cur.Type == l.Type && cur.Until.Sub(now) >= l.Duration/2 {
			ch.Unchanged++
			continue
		}
		ch.Adds = append(ch.Adds, p)
	}
	del := func(cur *decisionfeed.Decision) error {
		p, err := cur.Prefix()
		if err != nil {
			return fmt.Errorf("list %s: live decision %s: %w", l.Name, cur.Key(), err)
		}
		d := decisionfeed.NewDecision(decisionfeed.OpDelete, cur.Type, p, 0, cur.Origin, now)
		d.Scenario, d.Legacy = scenario, cur.Legacy
		ch.Deletes = append(ch.Deletes, d)
		return nil
	}
	for k, cur := range own {
		if _, ok := listed[k]; !ok {
			if err := del(cur); err != nil {
				return Change{}, err
			}
		}
	}
	// A legacy key is shared by every origin: the list withdraws what it
	// wrote there and re-adds a listed prefix under its own key.
	for _, cur := range legacy {
		if err := del(cur); err != nil {
			return Change{}, err
		}
	}
	slices.SortFunc(ch.Deletes, func(a, b decisionfeed.Decision) int { return strings.Compare(a.Key(), b.Key()) })
	return ch, nil
}

// Record is one threat-intel message: a chunk of one import of a list.
type Record struct {
	V          int       `json:"v"`
	Name       string    `json:"name"`
	ImportID   string    `json:"import_id"`
	Chunk      int       `json:"chunk"`
	Chunks     int       `json:"chunks"`
	Type       string    `json:"type"`
	Duration   string    `json:"duration"`
	ImportedAt time.Time `json:"imported_at"`
	Prefixes   []string  `json:"prefixes"`
}

// Records splits an import of prefixes into threat-intel records of at
// most ChunkPrefixes prefixes each; an empty list is one empty record, so
// that emptying a list is recorded too.
func Records(l List, importID string, prefixes []netip.Prefix, now time.Time) []Record {
	n := (len(prefixes) + ChunkPrefixes - 1) / ChunkPrefixes
	if n == 0 {
		n = 1
	}
	out := make([]Record, 0, n)
	for i := range n {
		lo, hi := i*ChunkPrefixes, min((i+1)*ChunkPrefixes, len(prefixes))
		r := Record{
			V: RecordVersion, Name: l.Name, ImportID: importID, Chunk: i + 1, Chunks: n,
			Type: string(l.Type), Duration: l.Duration.String(), ImportedAt: now.UTC(),
			Prefixes: make([]string, 0, hi-lo),
		}
		for _, p := range prefixes[lo:hi] {
			r.Prefixes = append(r.Prefixes, p.String())
		}
		out = append(out, r)
	}
	return out
}

// Package intel imports third-party IP blocklists into the decision feed.
//
// An import is computed against the feed itself, not against local state, so
// any host can run it and a lost run is repaired by the next one:
//
//  1. the list is parsed (package blocklist; bad lines are reported with
//     their number and skipped);
//  2. the caller rebuilds the live decision set from the decisions topic, as
//     a bouncer does, and Plan picks the list's previous content out of it:
//     the live decisions with origin "blocklist" and scenario
//     "blocklist/NAME";
//  3. Plan computes the change: an add for every prefix that is new (or whose
//     decision has less than half of the list's duration left, so a list
//     re-imported more often than its duration never lapses), a delete for
//     every previous prefix no longer listed, nothing for the rest. A prefix
//     whose key holds a decision of another origin lasting longer is left
//     alone, so a list never shortens or lifts an engine or operator ban;
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

// Origin is the origin of blocklist decisions.
const Origin = "blocklist"

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
	// Shadowed counts listed prefixes left alone because a longer decision
	// of another origin holds their key.
	Shadowed int

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
	d := decisionfeed.NewDecision(decisionfeed.OpAdd, l.Type, p, l.Duration, Origin, now)
	d.Scenario = Scenario(l.Name)
	return d
}

// Plan computes the decisions that turn the list's previous content in live
// (the live set of the decisions topic) into prefixes. prefixes must be
// valid (as blocklist.Parse returns them); live is not modified.
func Plan(l List, prefixes []netip.Prefix, live []decisionfeed.Decision, now time.Time) (Change, error) {
	if err := l.Validate(); err != nil {
		return Change{}, err
	}
	scenario := Scenario(l.Name)
	// The until of a new add, as NewDecision computes it.
	until := now.UTC().Truncate(time.Millisecond).Add(l.Duration)
	byKey := make(map[string]*decisionfeed.Decision, len(live))
	for i := range live {
		byKey[live[i].Key()] = &live[i]
	}
	ch := Change{list: l, now: now}
	listed := make(map[string]struct{}, len(prefixes))
	for _, p := range prefixes {
		k := decisionfeed.PrefixKey(p)
		if _, dup := listed[k]; dup {
			continue // 10.0.0.1/32 and 10.0.0.1 are one key
		}
		listed[k] = struct{}{}
		if cur, ok := byKey[k]; ok && !cur.Expired(now) {
			if cur.Origin != Origin || cur.Scenario != scenario {
				if !cur.Until.Before(until) {
					ch.Shadowed++
					continue
				}
			} else if cur.Type == l.Type && cur.Until.Sub(now) >= l.Duration/2 {
				ch.Unchanged++
				continue
			}
		}
		ch.Adds = append(ch.Adds, p)
	}
	for i := range live {
		cur := &live[i]
		if cur.Origin != Origin || cur.Scenario != scenario || cur.Op != decisionfeed.OpAdd {
			continue
		}
		if _, ok := listed[cur.Key()]; ok {
			continue
		}
		p, err := cur.Prefix()
		if err != nil {
			return Change{}, fmt.Errorf("list %s: live decision %s: %w", l.Name, cur.Key(), err)
		}
		d := decisionfeed.NewDecision(decisionfeed.OpDelete, cur.Type, p, 0, Origin, now)
		d.Scenario = scenario
		ch.Deletes = append(ch.Deletes, d)
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

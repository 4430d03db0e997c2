// Package scenario loads detection scenarios (one YAML file each, in the
// shape CrowdSec operators know) and runs them as leaky buckets or triggers
// over events, on event time, with bounded memory per tracked group.
package scenario

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/internal/strictyaml"
)

// Kind is how a scenario counts.
type Kind string

// Scenario kinds.
const (
	// Leaky buckets fill by one per matching event and leak one per
	// LeakSpeed; the event that finds the bucket holding Capacity events
	// overflows it.
	Leaky Kind = "leaky"
	// Trigger scenarios overflow on the first matching event.
	Trigger Kind = "trigger"
	// Window scenarios overflow on the Count-th matching event inside any
	// span of Window: "N in any T" means what it says.
	Window Kind = "window"
	// Counter (hub format) counts events for Duration and then overflows.
	Counter Kind = "counter"
	// Conditional (hub format) overflows when its condition holds.
	Conditional Kind = "conditional"
)

// Labels are the scenario's descriptive labels, as CrowdSec scenarios carry them.
type Labels struct {
	// Remediation false makes the scenario alert-only whatever the profile says.
	Remediation    bool     `yaml:"remediation"`
	Classification []string `yaml:"classification"`
	Behavior       string   `yaml:"behavior"`
	Service        string   `yaml:"service"`
	Label          string   `yaml:"label"`
	Confidence     int      `yaml:"confidence"`
	Spoofable      int      `yaml:"spoofable"`
	CVE            string   `yaml:"cve"`
}

// Scenario is one scenario file.
type Scenario struct {
	// Name is the scenario's identity in alerts and decisions,
	// e.g. "crowdsecurity/ssh-bf".
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Type        Kind   `yaml:"type"`
	// Filter is an expr expression over the Event fields that selects the
	// events the scenario counts.
	Filter string `yaml:"filter"`
	// GroupBy is an expr string expression naming the bucket an event goes
	// to; empty means one bucket per source address.
	GroupBy string `yaml:"groupby"`
	// Distinct is an expr string expression; when set, an event whose value
	// the bucket has already seen is not counted.
	Distinct string `yaml:"distinct"`
	// Capacity is the number of events a leaky bucket holds.
	Capacity int `yaml:"capacity"`
	// LeakSpeed is the time one event takes to leak out.
	LeakSpeed time.Duration `yaml:"leakspeed"`
	// Count and Window define a window scenario: it overflows on the
	// Count-th event within any Window.
	Count  int           `yaml:"count"`
	Window time.Duration `yaml:"window"`
	// Blackhole silences a group for this long after it overflowed.
	Blackhole time.Duration `yaml:"blackhole"`
	// IPv6Prefix, when set (32..128), makes the decision cover the
	// offender's IPv6 prefix of that length instead of its address.
	IPv6Prefix int `yaml:"ipv6_prefix"`
	// Priority orders scenarios: for one event the overflow of the higher
	// priority is reported first and so names the decision.
	Priority int    `yaml:"priority"`
	Labels   Labels `yaml:"labels"`

	// File is where the scenario was loaded from.
	File string `yaml:"-"`

	// Hub reports a CrowdSec hub-format scenario; the fields below are
	// used by hub scenarios only.
	Hub       bool          `yaml:"-"`
	Duration  time.Duration `yaml:"-"`
	CancelOn  string        `yaml:"-"`
	Condition string        `yaml:"-"`
	Reprocess bool          `yaml:"-"`
	CacheSize int           `yaml:"-"`
	hub       *hubProgs

	filter   *node      // the lowered filter
	match    pred       // the filter compiled alone, for Match
	matchSt  *evalState // its scratch
	types    []string   // event types the filter can match; nil: any
	groupBy  func(*event.Event) string
	distinct func(*event.Event) string
	vmNodes  int
}

// MaxDistinct bounds the distinct values a bucket remembers.
const MaxDistinct = 64

// MaxWindowCount bounds a window scenario's count (each bucket keeps the
// times of up to Count events).
const MaxWindowCount = 100_000

// Parse decodes and compiles one scenario file. Errors name the file and line.
func Parse(file string, data []byte) (*Scenario, error) {
	var s Scenario
	root, err := strictyaml.Decode(file, data, &s)
	if err != nil {
		return nil, err
	}
	s.File = file
	bad := func(key, format string, args ...any) error {
		return strictyaml.Errorf(file, root, []string{key}, format, args...)
	}
	if s.Name == "" {
		return nil, bad("name", "name: missing")
	}
	if strings.ContainsAny(s.Name, " \t\n") || len(s.Name) > 200 {
		return nil, bad("name", "name: %q must be a short token without spaces", s.Name)
	}
	switch s.Type {
	case Leaky:
		if s.Capacity < 1 {
			return nil, bad("capacity", "capacity: %d, a leaky bucket needs at least 1", s.Capacity)
		}
		if s.LeakSpeed <= 0 {
			return nil, bad("leakspeed", "leakspeed: must be a positive duration")
		}
		if time.Duration(s.Capacity+1)*s.LeakSpeed > 30*24*time.Hour {
			return nil, bad("leakspeed", "leakspeed: bucket takes longer than 30 days to drain")
		}
	case Window:
		if s.Count < 1 {
			return nil, bad("count", "count: %d, a window needs at least 1", s.Count)
		}
		if s.Count > MaxWindowCount {
			return nil, bad("count", "count: %d, at most %d", s.Count, MaxWindowCount)
		}
		if s.Window <= 0 || s.Window > 30*24*time.Hour {
			return nil, bad("window", "window: must be a positive duration up to 30 days")
		}
		if s.Capacity != 0 || s.LeakSpeed != 0 {
			return nil, bad("capacity", "capacity/leakspeed: not used by a window (count, window)")
		}
	case Trigger:
		if s.Capacity != 0 || s.LeakSpeed != 0 {
			return nil, bad("capacity", "capacity/leakspeed: not used by a trigger")
		}
		if s.Distinct != "" {
			return nil, bad("distinct", "distinct: not used by a trigger")
		}
	case "":
		return nil, bad("type", "type: missing (leaky, window or trigger)")
	default:
		return nil, bad("type", "type: %q is not leaky, window or trigger", s.Type)
	}
	if s.Type != Window && (s.Count != 0 || s.Window != 0) {
		return nil, bad("count", "count/window: used by a window scenario only")
	}
	if s.IPv6Prefix != 0 && (s.IPv6Prefix < 32 || s.IPv6Prefix > 128) {
		return nil, bad("ipv6_prefix", "ipv6_prefix: %d, want 32..128", s.IPv6Prefix)
	}
	if s.Blackhole < 0 {
		return nil, bad("blackhole", "blackhole: negative")
	}
	if s.Filter == "" {
		return nil, bad("filter", "filter: missing")
	}
	if err := s.compileFilter(); err != nil {
		return nil, bad("filter", "filter: %v", err)
	}
	if s.GroupBy != "" {
		if s.groupBy, err = compileString(s.GroupBy); err != nil {
			return nil, bad("groupby", "groupby: %v", err)
		}
	}
	if s.Distinct != "" {
		if s.distinct, err = compileString(s.Distinct); err != nil {
			return nil, bad("distinct", "distinct: %v", err)
		}
	}
	return &s, nil
}

func (s *Scenario) compileFilter() error {
	// Type-check the whole filter first: unknown fields and type errors are
	// reported against the text the operator wrote.
	if _, err := expr.Compile(s.Filter, envOptions(expr.AsBool())...); err != nil {
		return oneLine(err)
	}
	tree, err := parser.Parse(s.Filter)
	if err != nil {
		return oneLine(err)
	}
	var l lowerer
	p, err := l.boolNode(tree.Node)
	if err != nil {
		return err
	}
	s.filter, s.vmNodes = p, l.vmNodes
	lits := newLiterals()
	s.match = compile(p, lits)
	s.matchSt = lits.build()
	s.types = requiredTypes(tree.Node)
	return nil
}

// oneLine keeps the first line of expr's multi-line error (the rest is a
// caret drawing of the expression).
func oneLine(err error) error {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return errors.New(msg)
}

// requiredTypes returns the event types a filter requires through a
// top-level conjunct `Type == "x"` or `Type in [...]`; nil if none.
func requiredTypes(n ast.Node) []string {
	switch n := n.(type) {
	case *ast.BinaryNode:
		switch n.Operator {
		case "&&", "and":
			if t := requiredTypes(n.Left); t != nil {
				return t
			}
			return requiredTypes(n.Right)
		case "==":
			if ident(n.Left) == "Type" {
				if s, ok := n.Right.(*ast.StringNode); ok {
					return []string{s.Value}
				}
			}
			if ident(n.Right) == "Type" {
				if s, ok := n.Left.(*ast.StringNode); ok {
					return []string{s.Value}
				}
			}
		case "in":
			if ident(n.Left) != "Type" {
				return nil
			}
			arr, ok := n.Right.(*ast.ArrayNode)
			if !ok {
				return nil
			}
			var out []string
			for _, e := range arr.Nodes {
				s, ok := e.(*ast.StringNode)
				if !ok {
					return nil
				}
				out = append(out, s.Value)
			}
			return out
		}
	}
	return nil
}

// compileString compiles a string-valued expression; a bare string field
// becomes a direct field read.
func compileString(src string) (func(*event.Event) string, error) {
	prog, err := expr.Compile(src, envOptions(expr.AsKind(reflect.String))...)
	if err != nil {
		return nil, oneLine(err)
	}
	for i, name := range strFieldNames {
		if name == strings.TrimSpace(src) {
			return func(e *event.Event) string { return strField(e, i) }, nil
		}
	}
	return vmString(prog), nil
}

func vmString(prog *vm.Program) func(*event.Event) string {
	return func(e *event.Event) string {
		out, err := expr.Run(prog, e)
		if err != nil {
			return ""
		}
		s, _ := out.(string)
		return s
	}
}

// Match reports whether the scenario's filter selects ev. It is not safe
// for concurrent use; a Set evaluates filters on its own.
func (s *Scenario) Match(ev *event.Event) bool {
	s.matchSt.reset(ev)
	return s.match(s.matchSt)
}

// LoadFS loads every *.yaml and *.yml file below dir in fsys, sorted by
// descending priority then name. Duplicate names are an error.
func LoadFS(fsys fs.FS, dir string) ([]*Scenario, error) {
	return LoadFSWith(fsys, dir, LoadOptions{})
}

// LoadFSWith is LoadFS with options: files may hold several documents, in
// this repository's format or CrowdSec's hub format. Without
// opt.SkipBad the first bad file or scenario is the error; with it, each
// is passed to opt.OnSkip and loading goes on.
func LoadFSWith(fsys fs.FS, dir string, opt LoadOptions) ([]*Scenario, error) {
	var out []*Scenario
	seen := map[string]string{}
	fail := func(err error) error {
		if !opt.SkipBad {
			return err
		}
		if opt.OnSkip != nil {
			opt.OnSkip(err)
		}
		return nil
	}
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if d.IsDir() || (path.Ext(p) != ".yaml" && path.Ext(p) != ".yml") {
			return nil
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return fail(fmt.Errorf("read %s: %w", p, err))
		}
		file := p
		if opt.Root != "" {
			file = path.Join(opt.Root, p)
		}
		scs, err := ParseFile(file, data, opt)
		if err != nil {
			return fail(err)
		}
		for _, s := range scs {
			if prev, dup := seen[s.Name]; dup {
				if err := fail(fmt.Errorf("%s: scenario %q already defined in %s", file, s.Name, prev)); err != nil {
					return err
				}
				continue
			}
			seen[s.Name] = file
			out = append(out, s)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no scenario files (*.yaml)", dir)
	}
	Sort(out)
	return out, nil
}

// Sort orders scenarios by descending priority, then name.
func Sort(scs []*Scenario) {
	slices.SortStableFunc(scs, func(a, b *Scenario) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		return strings.Compare(a.Name, b.Name)
	})
}

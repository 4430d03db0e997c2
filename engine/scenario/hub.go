package scenario

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"

	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/internal/strictyaml"
)

// Hub-format scenarios are CrowdSec's own scenario files, run unchanged:
// expressions see `evt` (HubEvent) and CrowdSec's helper functions, and
// buckets follow CrowdSec's rules (see hubrun.go). A document is in hub
// format when its filter refers to `evt`.

// hubSpec is one hub-format scenario document; the keys are CrowdSec's.
type hubSpec struct {
	Format         any            `yaml:"format"`
	Description    string         `yaml:"description"`
	References     []string       `yaml:"references"`
	Type           string         `yaml:"type"`
	Name           string         `yaml:"name"`
	Capacity       *int           `yaml:"capacity"`
	LeakSpeed      string         `yaml:"leakspeed"`
	Filter         string         `yaml:"filter"`
	GroupBy        string         `yaml:"groupby"`
	Distinct       string         `yaml:"distinct"`
	Debug          bool           `yaml:"debug"`
	Labels         map[string]any `yaml:"labels"`
	Blackhole      string         `yaml:"blackhole"`
	Scope          *hubScope      `yaml:"scope"`
	Reprocess      bool           `yaml:"reprocess"`
	Data           []hubData      `yaml:"data"`
	Condition      string         `yaml:"condition"`
	CacheSize      int            `yaml:"cache_size"`
	CancelOn       string         `yaml:"cancel_on"`
	OverflowFilter string         `yaml:"overflow_filter"`
	Duration       string         `yaml:"duration"`
	Version        string         `yaml:"version"`
	Author         string         `yaml:"author"`
	// Portcullis extensions, ignored by CrowdSec's format.
	Priority   int `yaml:"priority"`
	IPv6Prefix int `yaml:"ipv6_prefix"`
}

type hubScope struct {
	Type       string `yaml:"type"`
	Expression string `yaml:"expression"`
}

// hubData is one `data:` entry; the cache keys are accepted and not acted on.
type hubData struct {
	SourceURL string `yaml:"source_url"`
	DestFile  string `yaml:"dest_file"`
	Type      string `yaml:"type"`
	Strategy  string `yaml:"strategy"`
	Size      *int   `yaml:"size"`
	TTL       string `yaml:"ttl"`
	Cache     *bool  `yaml:"cache"`
}

// hubProgs are a hub scenario's compiled expressions.
type hubProgs struct {
	filter, groupBy, distinct, cancel, cond *vm.Program
	// logTypes, when set, are the only evt.Meta.log_type values the filter
	// can accept (from a top-level `evt.Meta.log_type == / in`), so other
	// events skip the VM.
	logTypes []string
	// tree and files are kept to compile the filter natively when a Set
	// is built (its contains literals join the set's automata).
	tree  ast.Node
	files map[string]*dataFile
	// groupByNative and distinctNative are native forms of groupby and
	// distinct, when they could be compiled so.
	groupByNative, distinctNative *sexpr
	// groupByIP: groupby is evt.Meta.source_ip, so buckets key on the
	// event's address directly.
	groupByIP bool
}

// HubHelpers lists the functions hub-format expressions may call, beyond
// expr-lang's builtins (documented in config/scenarios/README.md).
var HubHelpers = []string{
	"File", "RegexpInFile", "Upper", "Lower", "PathUnescape", "QueryUnescape", "PathEscape",
	"QueryEscape", "IpInRange", "IsIPV4", "IsIPV6", "IsIP", "Atof", "MedianInterval", "Contains",
	"HasPrefix", "HasSuffix", "Split", "TrimSpace",
}

var evtRE = regexp.MustCompile(`\bevt\.`)

// isHubDoc reports whether a decoded document is in hub format.
func isHubDoc(doc *yaml.Node) bool {
	if doc.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i].Value, doc.Content[i+1]
		if k == "filter" && evtRE.MatchString(v.Value) {
			return true
		}
	}
	return false
}

// LoadOptions tune loading.
type LoadOptions struct {
	// DataDir holds the files hub scenarios name in `data:` (dest_file);
	// DefaultDataDir when empty.
	DataDir string
	// Root is prefixed to file names in errors and Scenario.File.
	Root string
	// SkipBad skips bad files and scenarios instead of failing.
	SkipBad bool
	// OnSkip is told about each one skipped.
	OnSkip func(error)
}

// DefaultDataDir is where CrowdSec keeps its data files.
const DefaultDataDir = "/var/lib/crowdsec/data"

// ParseFile decodes every YAML document of one scenario file, in either
// format. Errors name the file and line.
func ParseFile(file string, data []byte, opt LoadOptions) ([]*Scenario, error) {
	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, strictyaml.Wrap(file, err)
		}
		docs = append(docs, &n)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: empty document", file)
	}
	hub := false
	for _, d := range docs {
		if len(d.Content) > 0 && isHubDoc(d.Content[0]) {
			hub = true
		}
	}
	if !hub {
		s, err := Parse(file, data)
		if err != nil {
			return nil, err
		}
		s.fingerprint = fingerprint(data, nil)
		return []*Scenario{s}, nil
	}
	// Decode strictly, document by document, beside the node trees that
	// give the lines.
	sdec := yaml.NewDecoder(bytes.NewReader(data))
	sdec.KnownFields(true)
	var out []*Scenario
	for _, d := range docs {
		var spec hubSpec
		if err := sdec.Decode(&spec); err != nil {
			return nil, strictyaml.Wrap(file, err)
		}
		if len(d.Content) == 0 || d.Content[0].Kind != yaml.MappingNode {
			continue // an empty document between separators
		}
		s, err := spec.compile(file, d.Content[0], opt)
		if err != nil {
			return nil, err
		}
		doc, err := yaml.Marshal(d)
		if err != nil {
			return nil, fmt.Errorf("%s: encode scenario %s: %w", file, s.Name, err)
		}
		s.fingerprint = fingerprint(doc, s.hub.files)
		out = append(out, s)
	}
	return out, nil
}

func (spec *hubSpec) compile(file string, root *yaml.Node, opt LoadOptions) (*Scenario, error) {
	name := spec.Name
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%s:%d: scenario %s: %s", file, strictyaml.Line(root, key), name, fmt.Sprintf(format, args...))
	}
	if name == "" {
		name = "?"
		return nil, bad("name", "name: missing")
	}
	s := &Scenario{Name: spec.Name, Description: spec.Description, File: file, Hub: true,
		Priority: spec.Priority, Reprocess: spec.Reprocess, Filter: spec.Filter, GroupBy: spec.GroupBy,
		Distinct: spec.Distinct, CancelOn: spec.CancelOn, Condition: spec.Condition, IPv6Prefix: spec.IPv6Prefix, CacheSize: spec.CacheSize}
	capacity := 0
	if spec.Capacity != nil {
		capacity = *spec.Capacity
	}
	s.Capacity = capacity
	var err error
	dur := func(key, v string) (time.Duration, error) {
		if v == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, bad(key, "%s: %q is not a duration", key, v)
		}
		if d < 0 {
			return 0, bad(key, "%s: negative", key)
		}
		return d, nil
	}
	if s.LeakSpeed, err = dur("leakspeed", spec.LeakSpeed); err != nil {
		return nil, err
	}
	if s.Duration, err = dur("duration", spec.Duration); err != nil {
		return nil, err
	}
	if s.Blackhole, err = dur("blackhole", spec.Blackhole); err != nil {
		return nil, err
	}
	switch spec.Type {
	case "leaky":
		s.Type = Leaky
		if capacity <= 0 {
			return nil, bad("capacity", "capacity: %d, a leaky bucket needs > 0", capacity)
		}
		if s.LeakSpeed <= 0 {
			return nil, bad("leakspeed", "leakspeed: required, > 0")
		}
	case "trigger":
		s.Type = Trigger
		if capacity != 0 {
			return nil, bad("capacity", "capacity: %d, a trigger needs 0", capacity)
		}
	case "counter":
		s.Type = Counter
		if capacity != -1 {
			return nil, bad("capacity", "capacity: %d, a counter needs -1", capacity)
		}
		if s.Duration <= 0 {
			return nil, bad("duration", "duration: required, > 0")
		}
	case "conditional":
		s.Type = Conditional
		if spec.Condition == "" {
			return nil, bad("condition", "condition: required")
		}
		if s.LeakSpeed <= 0 {
			return nil, bad("leakspeed", "leakspeed: required, > 0")
		}
	case "":
		return nil, bad("type", "type: missing")
	default:
		return nil, bad("type", "type: %q is not leaky, trigger, counter or conditional", spec.Type)
	}
	if spec.OverflowFilter != "" {
		return nil, bad("overflow_filter", "overflow_filter: not supported")
	}
	if spec.Scope != nil && spec.Scope.Type != "" && !strings.EqualFold(spec.Scope.Type, "ip") {
		return nil, bad("scope", "scope: type %q not supported (only Ip)", spec.Scope.Type)
	}
	if spec.IPv6Prefix != 0 && (spec.IPv6Prefix < 32 || spec.IPv6Prefix > 128) {
		return nil, bad("ipv6_prefix", "ipv6_prefix: %d, want 32..128", spec.IPv6Prefix)
	}
	if s.Labels, err = hubLabels(spec.Labels); err != nil {
		return nil, bad("labels", "labels: %v", err)
	}
	files, err := loadData(spec.Data, opt.DataDir)
	if err != nil {
		return nil, bad("data", "data: %v", err)
	}
	if spec.Filter == "" {
		return nil, bad("filter", "filter: missing")
	}
	fns := hubFunctions(files)
	p := &hubProgs{}
	s.hub = p
	compileOne := func(key, src string, out expr.Option) (*vm.Program, error) {
		if src == "" {
			return nil, nil
		}
		opts := append([]expr.Option{expr.Env(hubEnv{}), out}, fns...)
		prog, err := expr.Compile(src, opts...)
		if err != nil {
			return nil, bad(key, "%s: %v", key, helperError(src, oneLine(err)))
		}
		return prog, nil
	}
	if p.filter, err = compileOne("filter", spec.Filter, expr.AsBool()); err != nil {
		return nil, err
	}
	if p.groupBy, err = compileOne("groupby", spec.GroupBy, expr.AsKind(reflectString)); err != nil {
		return nil, err
	}
	if p.distinct, err = compileOne("distinct", spec.Distinct, expr.AsKind(reflectString)); err != nil {
		return nil, err
	}
	if p.cancel, err = compileOne("cancel_on", spec.CancelOn, expr.AsBool()); err != nil {
		return nil, err
	}
	if p.cond, err = compileOne("condition", spec.Condition, expr.AsBool()); err != nil {
		return nil, err
	}
	nc := &hubNative{files: files}
	tree, err := parser.Parse(spec.Filter)
	if err != nil {
		return nil, bad("filter", "filter: %v", oneLine(err))
	}
	p.tree, p.files = tree.Node, files
	p.logTypes = hubLogTypes(tree.Node)
	for i, lt := range p.logTypes {
		if c, ok := logTypeConsts[lt]; ok {
			p.logTypes[i] = c
		}
	}
	for _, x := range []struct {
		src string
		out **sexpr
	}{{spec.GroupBy, &p.groupByNative}, {spec.Distinct, &p.distinctNative}} {
		if x.src == "" {
			continue
		}
		if tree, err := parser.Parse(x.src); err == nil {
			if e, ok := nc.str(tree.Node); ok {
				*x.out = &e
			}
		}
	}
	p.groupByIP = strings.TrimSpace(spec.GroupBy) == "evt.Meta.source_ip"
	s.types = hubEventTypes(p.logTypes)
	return s, nil
}

var unknownNameRE = regexp.MustCompile(`^unknown name ([A-Za-z_][A-Za-z0-9_]*)`)

// helperError names a call of a function outside HubHelpers as such.
func helperError(src string, err error) error {
	m := unknownNameRE.FindStringSubmatch(err.Error())
	if m == nil || !regexp.MustCompile(`\b`+m[1]+`\s*\(`).MatchString(src) {
		return err
	}
	return fmt.Errorf("unknown helper %s (supported: %s)", m[1], strings.Join(HubHelpers, ", "))
}

// readsSourceIP reports whether any of a hub scenario's expressions may
// read the text of the source address.
func (s *Scenario) readsSourceIP() bool {
	if s.Type == Conditional {
		return true // its queue keeps whole events
	}
	group := s.GroupBy
	if s.hub != nil && s.hub.groupByIP {
		group = ""
	}
	for _, src := range []string{s.Filter, group, s.Distinct, s.CancelOn, s.Condition} {
		for _, f := range []string{"source_ip", "remote_addr", "sshd_client_ip", "Meta[", "Parsed["} {
			if strings.Contains(src, f) {
				return true
			}
		}
	}
	return false
}

// fingerprint identifies a scenario's definition: its document and the
// data files it reads. A reload keeps the buckets of scenarios whose
// fingerprint did not change.
func fingerprint(doc []byte, files map[string]*dataFile) string {
	h := sha256.New()
	h.Write(doc)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		_, _ = fmt.Fprintf(h, "\x00%s\x00%s", n, strings.Join(files[n].lines, "\n")) // a hash never fails
	}
	return string(h.Sum(nil))
}

// hubLabels converts CrowdSec's free-form labels; lists and scalars are
// accepted where CrowdSec's hub uses either.
func hubLabels(m map[string]any) (Labels, error) {
	var l Labels
	for k, v := range m {
		switch k {
		case "remediation":
			switch v := v.(type) {
			case bool:
				l.Remediation = v
			case string:
				b, err := strconv.ParseBool(v)
				if err != nil {
					return l, fmt.Errorf("remediation: %q is not a boolean", v)
				}
				l.Remediation = b
			default:
				return l, fmt.Errorf("remediation: %v is not a boolean", v)
			}
		case "classification":
			switch v := v.(type) {
			case string:
				l.Classification = []string{v}
			case []any:
				for _, x := range v {
					l.Classification = append(l.Classification, fmt.Sprint(x))
				}
			}
		case "behavior":
			l.Behavior = fmt.Sprint(v)
		case "service":
			l.Service = fmt.Sprint(v)
		case "label":
			l.Label = fmt.Sprint(v)
		case "cve":
			l.CVE = fmt.Sprint(v)
		case "confidence":
			l.Confidence, _ = v.(int)
		case "spoofable":
			l.Spoofable, _ = v.(int)
		}
	}
	return l, nil
}

// hubLogTypes returns the log types a filter requires through a top-level
// conjunct on evt.Meta.log_type; nil if none.
func hubLogTypes(n ast.Node) []string {
	b, ok := n.(*ast.BinaryNode)
	if !ok {
		return nil
	}
	switch b.Operator {
	case "&&", "and":
		if t := hubLogTypes(b.Left); t != nil {
			return t
		}
		return hubLogTypes(b.Right)
	case "==":
		if isLogType(b.Left) {
			if s, ok := b.Right.(*ast.StringNode); ok {
				return []string{s.Value}
			}
		}
	case "in":
		if !isLogType(b.Left) {
			return nil
		}
		arr, ok := b.Right.(*ast.ArrayNode)
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
	return nil
}

// hubEventTypes maps the log types a hub filter requires to the event
// types that produce them, so the Set only offers it those; nil (any) when
// a log type is not one this engine produces events for... in which case
// the scenario can only see reprocessed overflows: an empty list.
func hubEventTypes(logTypes []string) []string {
	if logTypes == nil {
		return nil
	}
	out := []string{}
	for _, lt := range logTypes {
		switch lt {
		case "http_access-log":
			out = append(out, event.TypeHTTPAccess)
		case "http_error-log":
			out = append(out, event.TypeHTTPError)
		case "ssh_failed-auth":
			out = append(out, event.TypeSSHFailedAuth, event.TypeSSHInvalidUser, event.TypeSSHTooManyAuth, event.TypeSSHPreauthClose)
		}
	}
	return out
}

// logTypeConsts are the log types fillHub sets; hubLogTypes returns these
// very strings so comparisons of equal values stop at the pointer.
var logTypeConsts = map[string]string{"http_access-log": "http_access-log", "http_error-log": "http_error-log", "ssh_failed-auth": "ssh_failed-auth"}

// dropLogType removes the top-level conjunct hubLogTypes found (the
// filter's log-type test, made separately) from a filter tree.
func dropLogType(n ast.Node) ast.Node {
	b, ok := n.(*ast.BinaryNode)
	if !ok || (b.Operator != "&&" && b.Operator != "and") {
		return n
	}
	if hubLogTypes(b.Left) != nil {
		if isLogTypeTest(b.Left) {
			return b.Right
		}
		if l := dropLogType(b.Left); l != b.Left {
			return &ast.BinaryNode{Operator: b.Operator, Left: l, Right: b.Right}
		}
		return n
	}
	if hubLogTypes(b.Right) != nil && isLogTypeTest(b.Right) {
		return b.Left
	}
	return n
}

// isLogTypeTest reports whether n is itself `evt.Meta.log_type == / in`.
func isLogTypeTest(n ast.Node) bool {
	b, ok := n.(*ast.BinaryNode)
	return ok && (b.Operator == "==" || b.Operator == "in") && isLogType(b.Left)
}

func isLogType(n ast.Node) bool {
	m, ok := n.(*ast.MemberNode)
	if !ok {
		return false
	}
	prop, ok := m.Property.(*ast.StringNode)
	if !ok || prop.Value != "log_type" {
		return false
	}
	inner, ok := m.Node.(*ast.MemberNode)
	if !ok {
		return false
	}
	p2, ok := inner.Property.(*ast.StringNode)
	return ok && p2.Value == "Meta" && ident(inner.Node) == "evt"
}

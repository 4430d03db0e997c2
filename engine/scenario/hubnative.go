package scenario

import (
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
)

// Hub expressions are compiled twice: by expr (the reference, and the
// fallback) and, for the shapes hub scenarios use most, into native
// closures over the HubEvent: field and literal comparisons, in-lists,
// contains/startsWith/endsWith/matches, Upper/Lower (and upper/lower),
// PathUnescape/QueryUnescape, len(field) against an integer, any() over
// a literal list or a data file with ==/contains, RegexpInFile (memoised
// per value), !, &&, ||. A filter compiled natively in full never runs
// the VM; otherwise its native top-level conjuncts reject events before
// the VM runs. Both give expr's answer: the CrowdSec differential test
// and the unit tests run through these paths.

type hpred func(st *evalState) bool

// sexpr is a native string expression: the value and a case mapping
// still to apply ('u', 'l' or 0), so comparisons of Upper(x) with a
// literal need no copy of x.
type sexpr struct {
	get  func(st *evalState) string
	fold byte
	// field is the hub field's index (hubFieldBase+i) when the value is a
	// plain field, so contains literals join the set's shared automata;
	// -1 otherwise.
	field int
}

// hubFields maps evt.A.B paths to their accessors.
var hubFields = map[string]func(h *HubEvent) string{
	"Meta.log_type": func(h *HubEvent) string { return h.Meta.LogType }, "Meta.service": func(h *HubEvent) string { return h.Meta.Service },
	"Meta.source_ip": func(h *HubEvent) string { return h.Meta.SourceIP }, "Meta.sub_type": func(h *HubEvent) string { return h.Meta.SubType },
	"Meta.http_status": func(h *HubEvent) string { return h.Meta.HTTPStatus }, "Meta.http_path": func(h *HubEvent) string { return h.Meta.HTTPPath },
	"Meta.http_verb": func(h *HubEvent) string { return h.Meta.HTTPVerb }, "Meta.http_user_agent": func(h *HubEvent) string { return h.Meta.HTTPUserAgent },
	"Meta.http_args_len": func(h *HubEvent) string { return h.Meta.HTTPArgsLen }, "Meta.target_user": func(h *HubEvent) string { return h.Meta.TargetUser },
	"Meta.target_fqdn": func(h *HubEvent) string { return h.Meta.TargetFQDN }, "Meta.username": func(h *HubEvent) string { return h.Meta.Username },
	"Meta.machine": func(h *HubEvent) string { return h.Meta.Machine },
	"Parsed.verb":  func(h *HubEvent) string { return h.Parsed.Verb }, "Parsed.request": func(h *HubEvent) string { return h.Parsed.Request },
	"Parsed.http_args": func(h *HubEvent) string { return h.Parsed.HTTPArgs }, "Parsed.http_version": func(h *HubEvent) string { return h.Parsed.HTTPVersion },
	"Parsed.status": func(h *HubEvent) string { return h.Parsed.Status }, "Parsed.body_bytes_sent": func(h *HubEvent) string { return h.Parsed.BodyBytesSent },
	"Parsed.http_referer": func(h *HubEvent) string { return h.Parsed.HTTPReferer }, "Parsed.http_user_agent": func(h *HubEvent) string { return h.Parsed.HTTPUserAgent },
	"Parsed.remote_addr": func(h *HubEvent) string { return h.Parsed.RemoteAddr }, "Parsed.file_name": func(h *HubEvent) string { return h.Parsed.FileName },
	"Parsed.file_ext": func(h *HubEvent) string { return h.Parsed.FileExt }, "Parsed.file_dir": func(h *HubEvent) string { return h.Parsed.FileDir },
	"Parsed.file_frag": func(h *HubEvent) string { return h.Parsed.FileFrag }, "Parsed.static_ressource": func(h *HubEvent) string { return h.Parsed.StaticRessource },
	"Parsed.program": func(h *HubEvent) string { return h.Parsed.Program }, "Parsed.message": func(h *HubEvent) string { return h.Parsed.Message },
	"Parsed.sshd_client_ip": func(h *HubEvent) string { return h.Parsed.SSHDClientIP }, "Parsed.sshd_invalid_user": func(h *HubEvent) string { return h.Parsed.SSHDInvalidUser },
	"Line.Raw": func(h *HubEvent) string { return h.Line.Raw }, "Line.Src": func(h *HubEvent) string { return h.Line.Src },
	"Type": func(h *HubEvent) string { return h.Type }, "Overflow.Alert.Scenario": func(h *HubEvent) string { return h.Overflow.Alert.Scenario },
}

// hubFieldBase numbers hub fields after the Event fields in the shared
// literal automata.
const hubFieldBase = 1000

// hubFieldNames lists hubFields in a fixed order; a field's index in the
// automata is hubFieldBase plus its position here.
var hubFieldNames = func() []string {
	names := make([]string, 0, len(hubFields))
	for k := range hubFields {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}()

var hubFieldList = func() []func(h *HubEvent) string {
	out := make([]func(h *HubEvent) string, len(hubFieldNames))
	for i, n := range hubFieldNames {
		out[i] = hubFields[n]
	}
	return out
}()

// memberPath returns "A.B" for evt.A.B, "" otherwise.
func memberPath(n ast.Node) string {
	var parts []string
	for {
		m, ok := n.(*ast.MemberNode)
		if !ok {
			break
		}
		p, ok := m.Property.(*ast.StringNode)
		if !ok {
			return ""
		}
		parts = append(parts, p.Value)
		n = m.Node
	}
	if ident(n) != "evt" || len(parts) == 0 {
		return ""
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

type hubNative struct {
	files map[string]*dataFile
	lits  *literals
}

// str compiles a string-valued node natively.
func (c *hubNative) str(n ast.Node) (sexpr, bool) {
	switch n := n.(type) {
	case *ast.MemberNode:
		path := memberPath(n)
		if i, ok := slices.BinarySearch(hubFieldNames, path); ok {
			f := hubFieldList[i]
			return sexpr{get: func(st *evalState) string { return f(&st.hubEv) }, field: hubFieldBase + i}, true
		}
	case *ast.CallNode:
		name := ident(n.Callee)
		if len(n.Arguments) != 1 {
			return sexpr{}, false
		}
		inner, ok := c.str(n.Arguments[0])
		if !ok {
			return sexpr{}, false
		}
		switch name {
		case "Upper", "Lower":
			if inner.fold != 0 {
				return sexpr{}, false
			}
			inner.fold = 'u'
			if name == "Lower" {
				inner.fold = 'l'
			}
			return inner, true
		case "PathUnescape", "QueryUnescape":
			if inner.fold != 0 {
				return sexpr{}, false
			}
			get, unesc := inner.get, url.PathUnescape
			if name == "QueryUnescape" {
				unesc = url.QueryUnescape
			}
			return sexpr{field: -1, get: func(st *evalState) string {
				s := get(st)
				if strings.IndexByte(s, '%') < 0 && (name == "PathUnescape" || strings.IndexByte(s, '+') < 0) {
					return s
				}
				if u, err := unesc(s); err == nil {
					return u
				}
				return s
			}}, true
		}
	case *ast.BuiltinNode:
		if (n.Name == "upper" || n.Name == "lower") && len(n.Arguments) == 1 {
			inner, ok := c.str(n.Arguments[0])
			if !ok || inner.fold != 0 {
				return sexpr{}, false
			}
			inner.fold = n.Name[0]
			return inner, true
		}
	}
	return sexpr{}, false
}

// value returns the expression's string with its case mapping applied.
func (e sexpr) value(st *evalState) string {
	s := e.get(st)
	if e.fold != 0 {
		return mapCase(s, e.fold == 'u')
	}
	return s
}

func (e sexpr) eq(lit string) hpred {
	if e.fold == 0 {
		get := e.get
		return func(st *evalState) bool { return get(st) == lit }
	}
	upper, possible := e.fold == 'u', inCase(lit, e.fold == 'u')
	get := e.get
	return func(st *evalState) bool {
		s := get(st)
		if !isASCII(s) {
			return mapCase(s, upper) == lit
		}
		return possible && len(s) == len(lit) && equalFold(s, lit, upper)
	}
}

func (e sexpr) in(set map[string]struct{}) hpred {
	get, fold := e.get, e.fold
	if fold == 0 && len(set) <= 8 {
		// A short list compares faster than it hashes.
		list := make([]string, 0, len(set))
		for k := range set {
			list = append(list, k)
		}
		return func(st *evalState) bool {
			s := get(st)
			for _, x := range list {
				if x == s {
					return true
				}
			}
			return false
		}
	}
	return func(st *evalState) bool {
		s := get(st)
		if fold != 0 {
			var buf [64]byte
			if len(s) <= len(buf) && isASCII(s) {
				for i := 0; i < len(s); i++ {
					buf[i] = foldByte(s[i], fold)
				}
				_, ok := set[string(buf[:len(s)])]
				return ok
			}
			s = mapCase(s, fold == 'u')
		}
		_, ok := set[s]
		return ok
	}
}

func (e sexpr) contains(lit string, lits *literals) hpred {
	get, fold := e.get, e.fold
	if e.field >= 0 && lit != "" && lits != nil {
		// Every contains literal on one field, across the set, is found
		// in one pass per event.
		m, bit := lits.add(e.field, fold, lit)
		return func(st *evalState) bool { return st.found(m)&bit != 0 }
	}
	if fold == 0 {
		return func(st *evalState) bool { return strings.Contains(get(st), lit) }
	}
	upper, possible := fold == 'u', inCase(lit, fold == 'u')
	return func(st *evalState) bool {
		s := get(st)
		if !isASCII(s) {
			return strings.Contains(mapCase(s, upper), lit)
		}
		return possible && indexFold(s, lit, fold) >= 0
	}
}

// indexFold finds lit (already in the target case) in ASCII s mapped by fold.
func indexFold(s, lit string, fold byte) int {
	if lit == "" {
		return 0
	}
	first := lit[0]
	for i := 0; i+len(lit) <= len(s); i++ {
		if foldByte(s[i], fold) != first {
			continue
		}
		j := 1
		for j < len(lit) && foldByte(s[i+j], fold) == lit[j] {
			j++
		}
		if j == len(lit) {
			return i
		}
	}
	return -1
}

func (e sexpr) affix(lit string, prefix bool) hpred {
	n := &node{op: opSuffix, str: lit, fold: e.fold}
	if prefix {
		n.op = opPrefix
	}
	get := e.get
	p := affixOn(n)
	return func(st *evalState) bool { return p(get(st)) }
}

// boolNode compiles a boolean node natively.
func (c *hubNative) boolNode(n ast.Node) (hpred, bool) {
	switch n := n.(type) {
	case *ast.BoolNode:
		b := n.Value
		return func(*evalState) bool { return b }, true
	case *ast.UnaryNode:
		if n.Operator == "!" || n.Operator == "not" {
			k, ok := c.boolNode(n.Node)
			if !ok {
				return nil, false
			}
			return func(st *evalState) bool { return !k(st) }, true
		}
	case *ast.BinaryNode:
		return c.binary(n)
	case *ast.BuiltinNode:
		if n.Name == "any" && len(n.Arguments) == 2 {
			return c.anyOf(n.Arguments[0], n.Arguments[1])
		}
	case *ast.CallNode:
		if ident(n.Callee) == "RegexpInFile" && len(n.Arguments) == 2 {
			name, ok := n.Arguments[1].(*ast.StringNode)
			if !ok {
				return nil, false
			}
			s, ok := c.str(n.Arguments[0])
			if !ok {
				return nil, false
			}
			f := c.files[name.Value]
			if f == nil {
				return func(*evalState) bool { return false }, true
			}
			m := &reMemo{res: f.res, seen: map[string]bool{}}
			return func(st *evalState) bool { return m.match(s.value(st)) }, true
		}
	}
	return nil, false
}

// reMemo remembers, per value, whether any of a data file's regexps
// matches it: user agents repeat far more than they vary.
type reMemo struct {
	res  []*regexp.Regexp
	seen map[string]bool
}

const reMemoMax = 4096

func (m *reMemo) match(s string) bool {
	if v, ok := m.seen[s]; ok {
		return v
	}
	v := false
	for _, re := range m.res {
		if re.MatchString(s) {
			v = true
			break
		}
	}
	if len(m.seen) >= reMemoMax {
		clear(m.seen)
	}
	m.seen[strings.Clone(s)] = v
	return v
}

func (c *hubNative) binary(n *ast.BinaryNode) (hpred, bool) {
	switch n.Operator {
	case "&&", "and", "||", "or":
		a, ok := c.boolNode(n.Left)
		if !ok {
			return nil, false
		}
		b, ok := c.boolNode(n.Right)
		if !ok {
			return nil, false
		}
		if n.Operator == "&&" || n.Operator == "and" {
			return func(st *evalState) bool { return a(st) && b(st) }, true
		}
		return func(st *evalState) bool { return a(st) || b(st) }, true
	case "==", "!=":
		l, r := n.Left, n.Right
		if _, ok := l.(*ast.StringNode); ok {
			l, r = r, l
		}
		lit, ok := r.(*ast.StringNode)
		if !ok {
			return nil, false
		}
		s, ok := c.str(l)
		if !ok {
			return nil, false
		}
		p := s.eq(lit.Value)
		if n.Operator == "!=" {
			return func(st *evalState) bool { return !p(st) }, true
		}
		return p, true
	case "in":
		arr, ok := n.Right.(*ast.ArrayNode)
		if !ok {
			return nil, false
		}
		s, ok := c.str(n.Left)
		if !ok {
			return nil, false
		}
		set := map[string]struct{}{}
		for _, e := range arr.Nodes {
			lit, ok := e.(*ast.StringNode)
			if !ok {
				return nil, false
			}
			set[lit.Value] = struct{}{}
		}
		return s.in(set), true
	case "contains", "startsWith", "endsWith":
		lit, ok := n.Right.(*ast.StringNode)
		if !ok {
			return nil, false
		}
		s, ok := c.str(n.Left)
		if !ok {
			return nil, false
		}
		switch n.Operator {
		case "contains":
			return s.contains(lit.Value, c.lits), true
		case "startsWith":
			return s.affix(lit.Value, true), true
		}
		return s.affix(lit.Value, false), true
	case "matches":
		lit, ok := n.Right.(*ast.StringNode)
		if !ok {
			return nil, false
		}
		s, ok := c.str(n.Left)
		if !ok {
			return nil, false
		}
		re, err := regexp.Compile(lit.Value)
		if err != nil {
			return nil, false
		}
		return func(st *evalState) bool { return re.MatchString(s.value(st)) }, true
	case "<", "<=", ">", ">=":
		b, ok := n.Left.(*ast.BuiltinNode)
		if !ok || b.Name != "len" || len(b.Arguments) != 1 {
			return nil, false
		}
		lit, ok := n.Right.(*ast.IntegerNode)
		if !ok {
			return nil, false
		}
		s, ok := c.str(b.Arguments[0])
		if !ok || s.fold != 0 {
			return nil, false
		}
		x, get, op := lit.Value, s.get, n.Operator
		// expr's len counts runes of a string.
		return func(st *evalState) bool {
			l := runeLen(get(st))
			switch op {
			case "<":
				return l < x
			case "<=":
				return l <= x
			case ">":
				return l > x
			}
			return l >= x
		}, true
	}
	return nil, false
}

func runeLen(s string) int {
	if isASCII(s) {
		return len(s)
	}
	return len([]rune(s))
}

// anyOf compiles any(LIST, {A == #}) and any(LIST, {A contains #}) (and
// the mirrored `# == A`) where LIST is a literal list or File('name').
func (c *hubNative) anyOf(list, pred ast.Node) (hpred, bool) {
	var items []string
	switch l := list.(type) {
	case *ast.ArrayNode:
		for _, e := range l.Nodes {
			s, ok := e.(*ast.StringNode)
			if !ok {
				return nil, false
			}
			items = append(items, s.Value)
		}
	case *ast.CallNode:
		if ident(l.Callee) != "File" || len(l.Arguments) != 1 {
			return nil, false
		}
		name, ok := l.Arguments[0].(*ast.StringNode)
		if !ok {
			return nil, false
		}
		if f := c.files[name.Value]; f != nil {
			items = f.lines
		}
	default:
		return nil, false
	}
	p, ok := pred.(*ast.PredicateNode)
	if !ok {
		return nil, false
	}
	b, ok := p.Node.(*ast.BinaryNode)
	if !ok {
		return nil, false
	}
	isPtr := func(n ast.Node) bool {
		pn, ok := n.(*ast.PointerNode)
		return ok && pn.Name == ""
	}
	switch b.Operator {
	case "==":
		other := b.Left
		if isPtr(b.Left) {
			other = b.Right
		} else if !isPtr(b.Right) {
			return nil, false
		}
		s, ok := c.str(other)
		if !ok {
			return nil, false
		}
		set := make(map[string]struct{}, len(items))
		for _, it := range items {
			set[it] = struct{}{}
		}
		return s.in(set), true
	case "contains":
		if !isPtr(b.Right) {
			return nil, false
		}
		s, ok := c.str(b.Left)
		if !ok {
			return nil, false
		}
		// One Aho-Corasick pass (64 literals per automaton) finds any of
		// them; it folds case itself and remembers long values.
		var ms []*acMatcher
		for i := 0; i < len(items); i += 64 {
			m := &acMatcher{fold: s.fold}
			for j, it := range items[i:min(i+64, len(items))] {
				if it == "" {
					return nil, false // contains "" is always true: leave it to expr
				}
				m.pats = append(m.pats, it)
				m.bits = append(m.bits, uint64(1)<<j)
			}
			m.build()
			ms = append(ms, m)
		}
		get := s.get
		return func(st *evalState) bool {
			v := get(st)
			for _, m := range ms {
				if m.find(v) != 0 {
					return true
				}
			}
			return false
		}, true
	}
	return nil, false
}

// prefilter returns the native conjuncts of a filter that is not native
// in full: events failing any cannot match.
func (c *hubNative) prefilter(n ast.Node) []hpred {
	b, ok := n.(*ast.BinaryNode)
	if ok && (b.Operator == "&&" || b.Operator == "and") {
		return append(c.prefilter(b.Left), c.prefilter(b.Right)...)
	}
	if p, ok := c.boolNode(n); ok {
		return []hpred{p}
	}
	return nil
}

package scenario

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// A filter is checked by expr against the Event type, then lowered: every
// node of a supported shape (field against literal comparisons, in-lists,
// contains/startsWith/endsWith/matches with literal arguments, lower/upper of
// a field, !, &&, ||) becomes a Go closure, so common filters run without
// the expr VM. A subtree of any other shape is compiled on its own and run
// by the VM. Both paths give the same answer; a fuzz test checks it.

type pred func(*event.Event) bool

type strGetter func(*event.Event) string

type intGetter func(*event.Event) int64

var strFields = map[string]strGetter{
	"Type":      func(e *event.Event) string { return e.Type },
	"Parser":    func(e *event.Event) string { return e.Parser },
	"Host":      func(e *event.Event) string { return e.Host },
	"Method":    func(e *event.Event) string { return e.Method },
	"Path":      func(e *event.Event) string { return e.Path },
	"Proto":     func(e *event.Event) string { return e.Proto },
	"UserAgent": func(e *event.Event) string { return e.UserAgent },
	"Referer":   func(e *event.Event) string { return e.Referer },
	"User":      func(e *event.Event) string { return e.User },
	"Message":   func(e *event.Event) string { return e.Message },
}

var intFields = map[string]intGetter{
	"Status": func(e *event.Event) int64 { return int64(e.Status) },
	"Bytes":  func(e *event.Event) int64 { return e.Bytes },
}

var boolFields = map[string]pred{
	"Static":      func(e *event.Event) bool { return e.Static },
	"InvalidUser": func(e *event.Event) bool { return e.InvalidUser },
}

// envOptions are the expr options every scenario expression compiles with.
func envOptions(extra ...expr.Option) []expr.Option {
	return append([]expr.Option{expr.Env(&event.Event{})}, extra...)
}

// lowerer turns expression nodes into closures.
type lowerer struct {
	// vmNodes counts subtrees left to the VM, for tests and stats.
	vmNodes int
}

func (l *lowerer) boolNode(n ast.Node) (pred, error) {
	switch n := n.(type) {
	case *ast.BoolNode:
		v := n.Value
		return func(*event.Event) bool { return v }, nil
	case *ast.IdentifierNode:
		if f, ok := boolFields[n.Value]; ok {
			return f, nil
		}
	case *ast.UnaryNode:
		if n.Operator == "!" || n.Operator == "not" {
			p, err := l.boolNode(n.Node)
			if err != nil {
				return nil, err
			}
			return func(e *event.Event) bool { return !p(e) }, nil
		}
	case *ast.BinaryNode:
		if p, ok, err := l.binary(n); ok || err != nil {
			return p, err
		}
	}
	return l.vm(n)
}

func (l *lowerer) binary(n *ast.BinaryNode) (pred, bool, error) {
	switch n.Operator {
	case "&&", "and", "||", "or":
		a, err := l.boolNode(n.Left)
		if err != nil {
			return nil, true, err
		}
		b, err := l.boolNode(n.Right)
		if err != nil {
			return nil, true, err
		}
		if n.Operator == "&&" || n.Operator == "and" {
			return func(e *event.Event) bool { return a(e) && b(e) }, true, nil
		}
		return func(e *event.Event) bool { return a(e) || b(e) }, true, nil
	case "==", "!=":
		neg := n.Operator == "!="
		if p, ok := compareEq(n.Left, n.Right); ok {
			return negate(p, neg), true, nil
		}
		if p, ok := compareEq(n.Right, n.Left); ok {
			return negate(p, neg), true, nil
		}
	case "<", "<=", ">", ">=":
		if f, lit, ok := intFieldLit(n.Left, n.Right); ok {
			return intCmp(f, n.Operator, lit), true, nil
		}
		if f, lit, ok := intFieldLit(n.Right, n.Left); ok {
			return intCmp(f, flip(n.Operator), lit), true, nil
		}
	case "in":
		if p, ok := inList(n.Left, n.Right); ok {
			return p, true, nil
		}
	case "contains", "startsWith", "endsWith":
		lit, ok := n.Right.(*ast.StringNode)
		if !ok {
			break
		}
		if get, fold, ok := strOperand(n.Left); ok {
			return strOp(n.Operator, get, fold, lit.Value), true, nil
		}
	case "matches":
		lit, ok := n.Right.(*ast.StringNode)
		if !ok {
			break
		}
		get, ok := strFields[ident(n.Left)]
		if !ok {
			break
		}
		re, err := regexp.Compile(lit.Value)
		if err != nil {
			return nil, true, fmt.Errorf("matches %q: %w", lit.Value, err)
		}
		return func(e *event.Event) bool { return re.MatchString(get(e)) }, true, nil
	}
	return nil, false, nil
}

// vm compiles the subtree on its own and runs it with the expr VM.
func (l *lowerer) vm(n ast.Node) (pred, error) {
	prog, err := expr.Compile(n.String(), envOptions(expr.AsBool())...)
	if err != nil {
		return nil, fmt.Errorf("compile %q: %w", n.String(), err)
	}
	l.vmNodes++
	return vmPred(prog), nil
}

func vmPred(prog *vm.Program) pred {
	return func(e *event.Event) bool {
		out, err := expr.Run(prog, e)
		if err != nil {
			return false // a runtime error (nil, index) means no match
		}
		b, _ := out.(bool)
		return b
	}
}

func negate(p pred, neg bool) pred {
	if !neg {
		return p
	}
	return func(e *event.Event) bool { return !p(e) }
}

func ident(n ast.Node) string {
	if id, ok := n.(*ast.IdentifierNode); ok {
		return id.Value
	}
	return ""
}

func compareEq(field, lit ast.Node) (pred, bool) {
	name := ident(field)
	switch v := lit.(type) {
	case *ast.StringNode:
		if get, ok := strFields[name]; ok {
			s := v.Value
			return func(e *event.Event) bool { return get(e) == s }, true
		}
	case *ast.IntegerNode:
		if get, ok := intFields[name]; ok {
			x := int64(v.Value)
			return func(e *event.Event) bool { return get(e) == x }, true
		}
	case *ast.BoolNode:
		if get, ok := boolFields[name]; ok {
			x := v.Value
			return func(e *event.Event) bool { return get(e) == x }, true
		}
	}
	return nil, false
}

func intFieldLit(field, lit ast.Node) (intGetter, int64, bool) {
	get, ok := intFields[ident(field)]
	if !ok {
		return nil, 0, false
	}
	v, ok := lit.(*ast.IntegerNode)
	if !ok {
		return nil, 0, false
	}
	return get, int64(v.Value), true
}

func flip(op string) string {
	switch op {
	case "<":
		return ">"
	case "<=":
		return ">="
	case ">":
		return "<"
	}
	return "<="
}

func intCmp(get intGetter, op string, x int64) pred {
	switch op {
	case "<":
		return func(e *event.Event) bool { return get(e) < x }
	case "<=":
		return func(e *event.Event) bool { return get(e) <= x }
	case ">":
		return func(e *event.Event) bool { return get(e) > x }
	}
	return func(e *event.Event) bool { return get(e) >= x }
}

func inList(field, list ast.Node) (pred, bool) {
	arr, ok := list.(*ast.ArrayNode)
	if !ok {
		return nil, false
	}
	name := ident(field)
	if get, ok := strFields[name]; ok {
		set := make(map[string]struct{}, len(arr.Nodes))
		for _, n := range arr.Nodes {
			s, ok := n.(*ast.StringNode)
			if !ok {
				return nil, false
			}
			set[s.Value] = struct{}{}
		}
		return func(e *event.Event) bool { _, ok := set[get(e)]; return ok }, true
	}
	if get, ok := intFields[name]; ok {
		vals := make([]int64, 0, len(arr.Nodes))
		for _, n := range arr.Nodes {
			i, ok := n.(*ast.IntegerNode)
			if !ok {
				return nil, false
			}
			vals = append(vals, int64(i.Value))
		}
		return func(e *event.Event) bool {
			x := get(e)
			for _, v := range vals {
				if v == x {
					return true
				}
			}
			return false
		}, true
	}
	return nil, false
}

// strOperand accepts a string field or lower(field)/upper(field); fold is
// 'l' or 'u' for the case-mapped forms.
func strOperand(n ast.Node) (strGetter, byte, bool) {
	if get, ok := strFields[ident(n)]; ok {
		return get, 0, true
	}
	if b, ok := n.(*ast.BuiltinNode); ok && (b.Name == "lower" || b.Name == "upper") && len(b.Arguments) == 1 {
		if get, ok := strFields[ident(b.Arguments[0])]; ok {
			return get, b.Name[0], true
		}
	}
	return nil, 0, false
}

func strOp(op string, get strGetter, fold byte, lit string) pred {
	var f func(s, sub string) bool
	switch op {
	case "contains":
		f = strings.Contains
	case "startsWith":
		f = strings.HasPrefix
	default:
		f = strings.HasSuffix
	}
	if fold == 0 {
		return func(e *event.Event) bool { return f(get(e), lit) }
	}
	upper := fold == 'u'
	// A literal holding letters of the other case can match only through
	// Unicode case mapping of non-ASCII input, which the slow path handles.
	folded := foldLit(lit, upper)
	var fast func(s, sub string, upper bool) bool
	switch op {
	case "contains":
		fast = containsFold
	case "startsWith":
		fast = func(s, sub string, upper bool) bool { return len(s) >= len(sub) && equalFold(s[:len(sub)], sub, upper) }
	default:
		fast = func(s, sub string, upper bool) bool {
			return len(s) >= len(sub) && equalFold(s[len(s)-len(sub):], sub, upper)
		}
	}
	return func(e *event.Event) bool {
		s := get(e)
		if !isASCII(s) {
			if upper {
				return f(strings.ToUpper(s), lit)
			}
			return f(strings.ToLower(s), lit)
		}
		return folded && fast(s, lit, upper)
	}
}

// foldLit reports whether lit is already in the target case, i.e. could
// match a case-mapped ASCII string at all.
func foldLit(lit string, upper bool) bool {
	for i := 0; i < len(lit); i++ {
		c := lit[i]
		if (upper && c >= 'a' && c <= 'z') || (!upper && c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func foldByte(c byte, upper bool) byte {
	if upper {
		if c >= 'a' && c <= 'z' {
			return c - 'a' + 'A'
		}
		return c
	}
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// equalFold compares s, case-mapped, with sub, already in the target case.
func equalFold(s, sub string, upper bool) bool {
	for i := 0; i < len(sub); i++ {
		if foldByte(s[i], upper) != sub[i] {
			return false
		}
	}
	return true
}

// containsFold reports whether s, case-mapped, contains sub.
func containsFold(s, sub string, upper bool) bool {
	if len(sub) == 0 {
		return true
	}
	first := sub[0]
	for i := 0; i+len(sub) <= len(s); i++ {
		if foldByte(s[i], upper) == first && equalFold(s[i:i+len(sub)], sub, upper) {
			return true
		}
	}
	return false
}

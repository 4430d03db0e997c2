package scenario

import (
	"fmt"
	"regexp"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// A filter is checked by expr against the Event type, then lowered into a
// small tree of its own: every node of a supported shape (field against
// literal comparisons, in-lists, contains/startsWith/endsWith/matches with
// literal arguments, lower/upper of a field, !, &&, ||) is evaluated
// natively; a subtree of any other shape is compiled on its own and run by
// the expr VM. When a Set is built, the `contains` literals of all its
// scenarios are gathered per field into one Aho-Corasick automaton, so each
// field of an event is scanned once whatever the number of patterns. Both
// paths give expr's answer; a fuzz test checks it.

type nodeOp uint8

const (
	opAnd nodeOp = iota
	opOr
	opNot
	opConst
	opBoolField
	opStrEq
	opStrIn
	opIntCmp
	opIntIn
	opContains
	opPrefix
	opSuffix
	opRegex
	opVM
)

// node is one lowered filter node.
type node struct {
	op    nodeOp
	kids  []*node
	field int    // index into strFields / intFields / boolFields
	fold  byte   // 0, 'l' (lower(field)) or 'u' (upper(field))
	str   string // literal
	strs  map[string]struct{}
	ints  []int64
	cmp   string // <, <=, >, >=, ==
	b     bool
	re    *regexp.Regexp
	prog  *vm.Program
}

var strFieldNames = []string{"Type", "Parser", "Host", "Method", "Path", "Proto", "UserAgent", "Referer", "User", "Message"}

func strField(e *event.Event, i int) string {
	switch i {
	case 0:
		return e.Type
	case 1:
		return e.Parser
	case 2:
		return e.Host
	case 3:
		return e.Method
	case 4:
		return e.Path
	case 5:
		return e.Proto
	case 6:
		return e.UserAgent
	case 7:
		return e.Referer
	case 8:
		return e.User
	}
	return e.Message
}

var intFieldNames = []string{"Status", "Bytes"}

func intField(e *event.Event, i int) int64 {
	if i == 0 {
		return int64(e.Status)
	}
	return e.Bytes
}

var boolFieldNames = []string{"Static", "InvalidUser"}

func boolField(e *event.Event, i int) bool {
	if i == 0 {
		return e.Static
	}
	return e.InvalidUser
}

func ident(n ast.Node) string {
	if id, ok := n.(*ast.IdentifierNode); ok {
		return id.Value
	}
	return ""
}

func fieldIndex(names []string, n ast.Node) int {
	id, ok := n.(*ast.IdentifierNode)
	if !ok {
		return -1
	}
	for i, name := range names {
		if name == id.Value {
			return i
		}
	}
	return -1
}

// envOptions are the expr options every scenario expression compiles with.
func envOptions(extra ...expr.Option) []expr.Option {
	return append([]expr.Option{expr.Env(&event.Event{})}, extra...)
}

// lowerer turns expression nodes into lowered nodes.
type lowerer struct {
	// vmNodes counts subtrees left to the VM, for tests and stats.
	vmNodes int
}

func (l *lowerer) boolNode(n ast.Node) (*node, error) {
	switch n := n.(type) {
	case *ast.BoolNode:
		return &node{op: opConst, b: n.Value}, nil
	case *ast.IdentifierNode:
		if i := fieldIndex(boolFieldNames, n); i >= 0 {
			return &node{op: opBoolField, field: i}, nil
		}
	case *ast.UnaryNode:
		if n.Operator == "!" || n.Operator == "not" {
			k, err := l.boolNode(n.Node)
			if err != nil {
				return nil, err
			}
			return &node{op: opNot, kids: []*node{k}}, nil
		}
	case *ast.BinaryNode:
		if p, err := l.binary(n); p != nil || err != nil {
			return p, err
		}
	}
	return l.vm(n)
}

func (l *lowerer) binary(n *ast.BinaryNode) (*node, error) {
	switch n.Operator {
	case "&&", "and", "||", "or":
		a, err := l.boolNode(n.Left)
		if err != nil {
			return nil, err
		}
		b, err := l.boolNode(n.Right)
		if err != nil {
			return nil, err
		}
		op := opAnd
		if n.Operator == "||" || n.Operator == "or" {
			op = opOr
		}
		// Flatten chains so a long || of contains is one node.
		var kids []*node
		for _, k := range []*node{a, b} {
			if k.op == op {
				kids = append(kids, k.kids...)
			} else {
				kids = append(kids, k)
			}
		}
		return &node{op: op, kids: kids}, nil
	case "==", "!=":
		p := compareEq(n.Left, n.Right)
		if p == nil {
			p = compareEq(n.Right, n.Left)
		}
		if p != nil && n.Operator == "!=" {
			p = &node{op: opNot, kids: []*node{p}}
		}
		return p, nil
	case "<", "<=", ">", ">=":
		if f, lit, ok := intFieldLit(n.Left, n.Right); ok {
			return &node{op: opIntCmp, field: f, cmp: n.Operator, ints: []int64{lit}}, nil
		}
		if f, lit, ok := intFieldLit(n.Right, n.Left); ok {
			return &node{op: opIntCmp, field: f, cmp: flip(n.Operator), ints: []int64{lit}}, nil
		}
	case "in":
		return inList(n.Left, n.Right), nil
	case "contains", "startsWith", "endsWith":
		lit, ok := n.Right.(*ast.StringNode)
		if !ok {
			break
		}
		if f, fold, ok := strOperand(n.Left); ok {
			op := map[string]nodeOp{"contains": opContains, "startsWith": opPrefix, "endsWith": opSuffix}[n.Operator]
			return &node{op: op, field: f, fold: fold, str: lit.Value}, nil
		}
	case "matches":
		lit, ok := n.Right.(*ast.StringNode)
		if !ok {
			break
		}
		f := fieldIndex(strFieldNames, n.Left)
		if f < 0 {
			break
		}
		re, err := regexp.Compile(lit.Value)
		if err != nil {
			return nil, fmt.Errorf("matches %q: %w", lit.Value, err)
		}
		return &node{op: opRegex, field: f, re: re}, nil
	}
	return nil, nil
}

// vm compiles the subtree on its own, to run with the expr VM.
func (l *lowerer) vm(n ast.Node) (*node, error) {
	prog, err := expr.Compile(n.String(), envOptions(expr.AsBool())...)
	if err != nil {
		return nil, fmt.Errorf("compile %q: %w", n.String(), err)
	}
	l.vmNodes++
	return &node{op: opVM, prog: prog}, nil
}

func compareEq(field, lit ast.Node) *node {
	switch v := lit.(type) {
	case *ast.StringNode:
		if f := fieldIndex(strFieldNames, field); f >= 0 {
			return &node{op: opStrEq, field: f, str: v.Value}
		}
	case *ast.IntegerNode:
		if f := fieldIndex(intFieldNames, field); f >= 0 {
			return &node{op: opIntCmp, field: f, cmp: "==", ints: []int64{int64(v.Value)}}
		}
	case *ast.BoolNode:
		if f := fieldIndex(boolFieldNames, field); f >= 0 {
			p := &node{op: opBoolField, field: f}
			if !v.Value {
				p = &node{op: opNot, kids: []*node{p}}
			}
			return p
		}
	}
	return nil
}

func intFieldLit(field, lit ast.Node) (int, int64, bool) {
	f := fieldIndex(intFieldNames, field)
	v, ok := lit.(*ast.IntegerNode)
	if f < 0 || !ok {
		return 0, 0, false
	}
	return f, int64(v.Value), true
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

func inList(field, list ast.Node) *node {
	arr, ok := list.(*ast.ArrayNode)
	if !ok {
		return nil
	}
	if f := fieldIndex(strFieldNames, field); f >= 0 {
		set := make(map[string]struct{}, len(arr.Nodes))
		for _, n := range arr.Nodes {
			s, ok := n.(*ast.StringNode)
			if !ok {
				return nil
			}
			set[s.Value] = struct{}{}
		}
		return &node{op: opStrIn, field: f, strs: set}
	}
	if f := fieldIndex(intFieldNames, field); f >= 0 {
		vals := make([]int64, 0, len(arr.Nodes))
		for _, n := range arr.Nodes {
			i, ok := n.(*ast.IntegerNode)
			if !ok {
				return nil
			}
			vals = append(vals, int64(i.Value))
		}
		return &node{op: opIntIn, field: f, ints: vals}
	}
	return nil
}

// strOperand accepts a string field or lower(field)/upper(field); fold is
// 'l' or 'u' for the case-mapped forms.
func strOperand(n ast.Node) (int, byte, bool) {
	if f := fieldIndex(strFieldNames, n); f >= 0 {
		return f, 0, true
	}
	if b, ok := n.(*ast.BuiltinNode); ok && (b.Name == "lower" || b.Name == "upper") && len(b.Arguments) == 1 {
		if f := fieldIndex(strFieldNames, b.Arguments[0]); f >= 0 {
			return f, b.Name[0], true
		}
	}
	return 0, 0, false
}

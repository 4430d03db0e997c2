// Package grafana holds the Grafana dashboard of Portcullis' Prometheus
// metrics and the test that keeps the two in step.
package grafana

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// definedMetrics returns the fully qualified names of the metrics the
// repository's Go code defines. It reads the code, not a running program:
// every prometheus *Opts literal (Namespace, Subsystem, Name), every
// NewDesc whose name is a string literal, and every BuildFQName call. Parts
// may be string literals or identifiers bound to one (constants, and
// variables given a literal with := or var). A subsystem that is
// configuration (an identifier bound to nothing) stands for each value the
// code gives a MetricsSubsystem setting. A histogram or summary also
// defines NAME_bucket, NAME_sum and NAME_count.
func definedMetrics(t *testing.T, root string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	type pending struct{ ns, name, opts string }
	var configured []pending // metrics whose subsystem is configuration
	subsystems := map[string]bool{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			return err
		}
		bound := boundStrings(f)
		str := func(e ast.Expr) (string, bool) {
			switch v := e.(type) {
			case *ast.BasicLit:
				if v.Kind == token.STRING {
					s, err := strconv.Unquote(v.Value)
					return s, err == nil
				}
			case *ast.Ident:
				s, ok := bound[v.Name]
				return s, ok
			}
			return "", false
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.KeyValueExpr:
				if k, ok := n.Key.(*ast.Ident); ok && k.Name == "MetricsSubsystem" {
					if s, ok := str(n.Value); ok {
						subsystems[s] = true
					}
				}
			case *ast.AssignStmt:
				for i, l := range n.Lhs {
					if sel, ok := l.(*ast.SelectorExpr); ok && sel.Sel.Name == "MetricsSubsystem" && i < len(n.Rhs) {
						if s, ok := str(n.Rhs[i]); ok {
							subsystems[s] = true
						}
					}
				}
			case *ast.CompositeLit:
				sel, ok := n.Type.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
					return true
				}
				parts, unbound := map[string]string{}, map[string]bool{}
				for _, el := range n.Elts {
					kv, ok := el.(*ast.KeyValueExpr)
					if !ok {
						continue
					}
					k, ok := kv.Key.(*ast.Ident)
					if !ok {
						continue
					}
					if s, ok := str(kv.Value); ok {
						parts[k.Name] = s
					} else {
						unbound[k.Name] = true
					}
				}
				switch {
				case parts["Name"] == "":
				case unbound["Subsystem"]:
					configured = append(configured, pending{parts["Namespace"], parts["Name"], sel.Sel.Name})
				default:
					add(out, fqName(parts["Namespace"], parts["Subsystem"], parts["Name"]), sel.Sel.Name)
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				switch {
				case sel.Sel.Name == "NewDesc" && len(n.Args) > 0:
					if s, ok := str(n.Args[0]); ok {
						add(out, s, "")
					}
				case sel.Sel.Name == "BuildFQName" && len(n.Args) == 3:
					ns, _ := str(n.Args[0])
					sub, subOK := str(n.Args[1])
					name, ok := str(n.Args[2])
					switch {
					case !ok:
					case !subOK:
						configured = append(configured, pending{ns, name, ""})
					default:
						add(out, fqName(ns, sub, name), "")
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range configured {
		for sub := range subsystems {
			add(out, fqName(c.ns, sub, c.name), c.opts)
		}
	}
	return out
}

// boundStrings returns the identifiers of a file bound to a string
// literal: constants, and variables declared with one (var or :=),
// wherever they are declared. A name bound to two values keeps the first.
func boundStrings(f *ast.File) map[string]string {
	out := map[string]string{}
	bind := func(names []*ast.Ident, values []ast.Expr) {
		for i, v := range values {
			bl, ok := v.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING || i >= len(names) {
				continue
			}
			if s, err := strconv.Unquote(bl.Value); err == nil {
				if _, dup := out[names[i].Name]; !dup {
					out[names[i].Name] = s
				}
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ValueSpec:
			bind(n.Names, n.Values)
		case *ast.AssignStmt:
			if n.Tok == token.DEFINE {
				names := make([]*ast.Ident, len(n.Lhs))
				for i, l := range n.Lhs {
					if id, ok := l.(*ast.Ident); ok {
						names[i] = id
					} else {
						names[i] = ast.NewIdent("_")
					}
				}
				bind(names, n.Rhs)
			}
		}
		return true
	})
	return out
}

func fqName(ns, sub, name string) string {
	var parts []string
	for _, p := range []string{ns, sub, name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

func add(out map[string]bool, name, opts string) {
	out[name] = true
	if opts == "HistogramOpts" || opts == "SummaryOpts" || opts == "" {
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			out[name+s] = true
		}
	}
}

// metricRef finds metric names in PromQL: identifiers of the portcullis
// namespace.
var metricRef = regexp.MustCompile(`\bportcullis_[a-z0-9_]+`)

// TestDashboardMetricsExist: every metric a panel of dashboard.json
// queries is defined in the code, so a renamed metric cannot leave a panel
// silently empty.
func TestDashboardMetricsExist(t *testing.T) {
	defined := definedMetrics(t, filepath.Join("..", ".."))
	if len(defined) < 20 {
		t.Fatalf("found only %d metric definitions; the extractor is broken", len(defined))
	}
	b, err := os.ReadFile("dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	refs := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			names := metricRef.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no portcullis metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				refs++
				if !defined[n] {
					t.Errorf("panel %q queries %s, which no code defines", p.Title, n)
				}
			}
		}
	}
	if refs == 0 {
		t.Fatal("the dashboard queries no metric")
	}
	if testing.Verbose() {
		var all []string
		for n := range defined {
			all = append(all, n)
		}
		slices.Sort(all)
		t.Logf("defined metrics:\n%s", strings.Join(all, "\n"))
	}
}

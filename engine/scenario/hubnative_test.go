package scenario

import (
	"net/netip"
	"testing"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/parser"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// nativeExprs are the shapes hubnative.go compiles; each must agree with
// expr on every event.
var nativeExprs = []string{
	`evt.Meta.log_type in ['http_access-log', 'http_error-log'] && evt.Meta.http_status in ['404', '403']`,
	`evt.Meta.http_verb == 'POST' && evt.Parsed.request != '/login'`,
	`Lower(evt.Meta.http_path) contains '/.git/'`,
	`Upper(evt.Meta.http_path) contains '/.%2E/'`,
	`upper(evt.Parsed.file_ext) in ['.PHP', '.ASP']`,
	`Upper(evt.Parsed.file_ext) == '.PHP'`,
	`lower(evt.Parsed.http_user_agent) startsWith 'curl'`,
	`evt.Parsed.http_user_agent endsWith 'bot)'`,
	`any(['UNION', 'SELECT'], { Upper(QueryUnescape(evt.Parsed.http_args)) contains #})`,
	`any(File('f.txt'), { evt.Parsed.file_name == #})`,
	`any(File('f.txt'), { Lower(evt.Parsed.file_name) == # })`,
	`any(File('f.txt'), { evt.Parsed.http_user_agent contains #})`,
	`RegexpInFile(evt.Parsed.http_user_agent, 'r.regex')`,
	`PathUnescape(evt.Meta.http_path) contains '../' || QueryUnescape(evt.Parsed.http_args) contains '<'`,
	`len(evt.Parsed.http_args) > 5 && !(evt.Meta.http_path matches '^/[a-z]+$')`,
	`not (evt.Meta.http_status startsWith '2')`,
}

func FuzzHubNative(f *testing.F) {
	f.Add("/index.php?a=1", "Mozilla/5.0", "GET", 200)
	f.Add("/x/../../etc/passwd", "sqlmap/1.0", "POST", 404)
	f.Add("/A%2fb/.%2E/.%2e/C99.PHP?q=UNION+select%201", "ÄÖÜ curl", "post", 403)
	f.Add("/wp-login.php", "() { :;}; x", "POST", 500)
	f.Add("/İstanbul/ǅ.PhP?x=%zz+%3Cscript", "Nikto", "GET", 302)
	files := map[string]*dataFile{"f.txt": {lines: []string{"c99.php", "shell.php", "Nikto"}}}
	re, _ := loadDataRegexps([]string{"(?i)sqlmap", "^Nikto"})
	files["r.regex"] = re
	type pair struct {
		native hpred
		src    string
		prog   func(*HubEvent) (bool, error)
	}
	var pairs []pair
	lits := newLiterals()
	for _, src := range nativeExprs {
		tree, err := parser.Parse(src)
		if err != nil {
			f.Fatal(err)
		}
		nc := &hubNative{files: files, lits: lits}
		p, ok := nc.boolNode(tree.Node)
		if !ok {
			f.Fatalf("%s: not compiled natively", src)
		}
		prog, err := expr.Compile(src, append([]expr.Option{expr.Env(hubEnv{}), expr.AsBool()}, hubFunctions(files)...)...)
		if err != nil {
			f.Fatal(err)
		}
		pairs = append(pairs, pair{p, src, func(h *HubEvent) (bool, error) {
			out, err := expr.Run(prog, &hubEnv{Evt: h})
			b, _ := out.(bool)
			return b, err
		}})
	}
	st := lits.build()
	st.needIP = true
	f.Fuzz(func(t *testing.T, path, ua, method string, status int) {
		ev := event.Event{Time: time.Unix(0, 0), Source: netip.MustParseAddr("192.0.2.1"), Type: event.TypeHTTPAccess,
			Parser: "nginx", Method: method, Path: path, Status: status % 1000, UserAgent: ua, Proto: "HTTP/1.1"}
		st.reset(&ev)
		h := st.hub()
		for _, p := range pairs {
			want, err := p.prog(h)
			if err != nil {
				continue // a runtime error means no match in a filter; natives never error
			}
			if got := p.native(st); got != want {
				t.Errorf("%s on path %q ua %q method %q status %d: native %v, expr %v", p.src, path, ua, method, status, got, want)
			}
		}
	})
}

func loadDataRegexps(lines []string) (*dataFile, error) {
	f := &dataFile{lines: lines}
	for _, l := range lines {
		re, err := regexpCompile(l)
		if err != nil {
			return nil, err
		}
		f.res = append(f.res, re)
	}
	return f, nil
}

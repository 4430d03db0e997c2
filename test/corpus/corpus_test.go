package corpus

import (
	"bytes"
	"cmp"
	"os"
	"path/filepath"
	"slices"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"

	"github.com/portcullis-ips/portcullis/config/scenarios"
	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/engine/parse"
	"github.com/portcullis-ips/portcullis/engine/profile"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

type recorder struct {
	alerts    []engine.Alert
	decisions []decisionfeed.Decision
}

func (r *recorder) Alert(a engine.Alert)             { r.alerts = append(r.alerts, a) }
func (r *recorder) Decision(d decisionfeed.Decision) { r.decisions = append(r.decisions, d) }

// replay runs the corpus files through the engine the way `portcullis
// replay` does, with the corpus's profiles.
func replay(t *testing.T, dir string, m Manifest) (*recorder, [2]engine.FeedStats) {
	t.Helper()
	scs, err := scenario.LoadFS(scenarios.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	pcfg, err := profile.Load(filepath.Join(dir, "profiles.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	prof, err := profile.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := prof.Close(); err != nil {
			t.Error(err)
		}
	}()
	rec := &recorder{}
	eng, err := engine.New(engine.Config{Scenarios: scs, Profiles: prof, Sink: rec})
	if err != nil {
		t.Fatal(err)
	}
	var st [2]engine.FeedStats
	for i, f := range []struct{ name, typ string }{{"access.log", "nginx"}, {"auth.log", "sshd"}} {
		fh, err := os.Open(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		p := &engine.Pipeline{Parser: parse.New(parse.Config{Reference: m.End}), Engine: eng}
		st[i], err = engine.Feed(fh, f.typ, f.name, p, nil)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return rec, st
}

func TestReplayFindsExactlyTheAttackers(t *testing.T) {
	dir := t.TempDir()
	m, err := Write(dir, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	rec, st := replay(t, dir, m)

	var got []Alert
	seen := map[Alert]bool{}
	for _, a := range rec.alerts {
		k := Alert{IP: a.IP, Scenario: a.Scenario}
		if !seen[k] {
			seen[k] = true
			got = append(got, k)
		}
	}
	slices.SortFunc(got, func(a, b Alert) int {
		return cmp.Or(cmp.Compare(a.IP, b.IP), cmp.Compare(a.Scenario, b.Scenario))
	})
	if d := gocmp.Diff(m.Expected, got); d != "" {
		t.Errorf("alerts (-expected +replayed):\n%s", d)
	}
	// Every scenario shipped is exercised.
	names := map[string]bool{}
	for _, a := range m.Expected {
		names[a.Scenario] = true
	}
	if len(names) != 12 {
		t.Errorf("corpus exercises %d scenarios, want all 12", len(names))
	}
	// Nobody who must not be banned is.
	banned := map[string]bool{}
	for _, d := range rec.decisions {
		banned[d.Value] = true
	}
	for _, ip := range append(slices.Clone(m.Decoys), OperatorIP) {
		if banned[ip] {
			t.Errorf("%s banned", ip)
		}
	}
	for _, a := range m.Expected {
		if !banned[a.IP] {
			t.Errorf("attacker %s (%s) not banned", a.IP, a.Scenario)
		}
	}
	if st[0].Lines != uint64(m.NginxLines) || st[1].Lines != uint64(m.AuthLines) {
		t.Errorf("lines read %d/%d, written %d/%d", st[0].Lines, st[1].Lines, m.NginxLines, m.AuthLines)
	}
	if st[0].Malformed != uint64(m.MalformedNginx) || st[1].Malformed != uint64(m.MalformedAuth) {
		t.Errorf("malformed read %d/%d, written %d/%d", st[0].Malformed, st[1].Malformed, m.MalformedNginx, m.MalformedAuth)
	}
	if m.MalformedNginx == 0 || m.MalformedAuth == 0 {
		t.Errorf("corpus has no malformed lines: %d/%d", m.MalformedNginx, m.MalformedAuth)
	}
}

// The same seed writes the same bytes; another seed does not.
func TestDeterministic(t *testing.T) {
	opt := DefaultOptions()
	opt.NginxLines, opt.AuthLines = 3000, 1000
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if _, err := Write(d, opt); err != nil {
			t.Fatal(err)
		}
	}
	opt.Seed = 2
	if _, err := Write(c, opt); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"access.log", "auth.log", "manifest.json"} {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs with the same seed", f)
		}
	}
	x, _ := os.ReadFile(filepath.Join(a, "access.log"))
	z, _ := os.ReadFile(filepath.Join(c, "access.log"))
	if bytes.Equal(x, z) {
		t.Error("access.log identical for seeds 1 and 2")
	}
}

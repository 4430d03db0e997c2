package acquire

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/engine/internal/enginetest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// collector gathers the lines a source hands on.
type collector chan Line

func (c collector) handle(ctx context.Context, lines []Line) error {
	for _, l := range lines {
		select {
		case c <- l:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// runSource runs s into a new collector of n lines until stop is called or
// the test ends, and fails the test if Run returns an error.
func runSource(t *testing.T, s Source, n int) (c collector, stop func()) {
	t.Helper()
	c = make(collector, n)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx, c.handle) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// expect reads len(want) lines and compares their text in order.
func (c collector) expect(t *testing.T, want ...string) []Line {
	t.Helper()
	var got []Line
	deadline := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case l := <-c:
			got = append(got, l)
		case <-deadline:
			t.Fatalf("timeout: got %d lines %q, want %q", len(got), texts(got), want)
		}
	}
	if g := texts(got); strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got lines\n%q\nwant\n%q", g, want)
	}
	return got
}

// quiet checks that nothing more arrives for a while.
func (c collector) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case l := <-c:
		t.Fatalf("unexpected line %q from %s", l.Text, l.Source)
	case <-time.After(d):
	}
}

func texts(ls []Line) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Text
	}
	return out
}

// startFiles runs a file source over patterns until the test ends.
func startFiles(t *testing.T, poll, fromBeginning bool, maxLine int, m *Metrics, patterns ...string) collector {
	t.Helper()
	s, err := NewFileSource(SourceConfig{
		Kind: KindFile, Filenames: patterns, FromBeginning: fromBeginning, MaxLineBytes: maxLine,
		Labels: map[string]string{"type": "nginx"},
	}, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	s.noNotify = poll
	c, _ := runSource(t, s, 1024)
	// Let the source open the files present now before the test writes more.
	time.Sleep(100 * time.Millisecond)
	return c
}

func bothModes(t *testing.T, f func(t *testing.T, poll bool)) {
	t.Run("inotify", func(t *testing.T) { t.Parallel(); f(t, false) })
	t.Run("poll", func(t *testing.T) { t.Parallel(); f(t, true) })
}

func TestFileStartsAtEnd(t *testing.T) {
	bothModes(t, func(t *testing.T, poll bool) {
		p := filepath.Join(t.TempDir(), "access.log")
		enginetest.AppendFile(t, p, "old1\nold2\npart")
		c := startFiles(t, poll, false, 0, nil, p)
		enginetest.AppendFile(t, p, "ial\nnew1\n")
		got := c.expect(t, "new1")
		if got[0].Source != p || got[0].Type != "nginx" {
			t.Fatalf("line %+v", got[0])
		}
		enginetest.AppendFile(t, p, "new2 with a held")
		c.quiet(t, 300*time.Millisecond)
		enginetest.AppendFile(t, p, " partial end\r\n\nnew3\n")
		c.expect(t, "new2 with a held partial end", "new3")
	})
}

func TestFileFromBeginning(t *testing.T) {
	bothModes(t, func(t *testing.T, poll bool) {
		p := filepath.Join(t.TempDir(), "auth.log")
		enginetest.AppendFile(t, p, "old1\nold2\n")
		c := startFiles(t, poll, true, 0, nil, p)
		c.expect(t, "old1", "old2")
		enginetest.AppendFile(t, p, "new1\n")
		c.expect(t, "new1")
	})
}

func TestFileRenameRotation(t *testing.T) {
	bothModes(t, func(t *testing.T, poll bool) {
		dir := t.TempDir()
		p := filepath.Join(dir, "access.log")
		enginetest.AppendFile(t, p, "")
		c := startFiles(t, poll, false, 0, nil, p)
		w, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = w.Close() }()
		if _, err := fmt.Fprint(w, "a1\na2\n"); err != nil {
			t.Fatal(err)
		}
		c.expect(t, "a1", "a2")
		// logrotate renames; the writer keeps its descriptor until it reopens.
		if err := os.Rename(p, p+".1"); err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprint(w, "a3 after rename\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		enginetest.AppendFile(t, p, "b1\nb2\n")
		c.expect(t, "a3 after rename", "b1", "b2")
		// A second rotation, this time renaming the now-current file away.
		if err := os.Rename(p, p+".2"); err != nil {
			t.Fatal(err)
		}
		enginetest.AppendFile(t, p, "c1\n")
		c.expect(t, "c1")
		c.quiet(t, 300*time.Millisecond)
	})
}

func TestFileCopyTruncate(t *testing.T) {
	bothModes(t, func(t *testing.T, poll bool) {
		m, err := NewMetrics(prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "access.log")
		enginetest.AppendFile(t, p, "")
		c := startFiles(t, poll, false, 0, m, p)
		enginetest.AppendFile(t, p, "a long first line before truncation\nanother long line before truncation\n")
		c.expect(t, "a long first line before truncation", "another long line before truncation")
		if err := os.Truncate(p, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond) // a poll interval, so the truncation is seen before the file regrows
		enginetest.AppendFile(t, p, "t1\nt2\n")
		c.expect(t, "t1", "t2")
		src := "file:" + p
		if n := testutil.ToFloat64(m.Rotations.WithLabelValues(src, "truncate")); n != 1 {
			t.Errorf("truncate rotations = %v, want 1", n)
		}
		if n := testutil.ToFloat64(m.Lines.WithLabelValues(src, "nginx")); n != 4 {
			t.Errorf("lines = %v, want 4", n)
		}
	})
}

func TestFileGlobNewFiles(t *testing.T) {
	bothModes(t, func(t *testing.T, poll bool) {
		dir := t.TempDir()
		enginetest.AppendFile(t, filepath.Join(dir, "a.log"), "old\n")
		enginetest.AppendFile(t, filepath.Join(dir, "ignored.txt"), "")
		c := startFiles(t, poll, false, 0, nil, filepath.Join(dir, "*.log"))
		// A file that appears after start is read from its first byte.
		enginetest.AppendFile(t, filepath.Join(dir, "b.log"), "b1\nb2\n")
		got := c.expect(t, "b1", "b2")
		if got[0].Source != filepath.Join(dir, "b.log") {
			t.Fatalf("source %q", got[0].Source)
		}
		enginetest.AppendFile(t, filepath.Join(dir, "ignored.txt"), "nope\n")
		enginetest.AppendFile(t, filepath.Join(dir, "a.log"), "a1\n")
		c.expect(t, "a1")
		// Renaming a followed file to another matching name is not a new file.
		if err := os.Rename(filepath.Join(dir, "a.log"), filepath.Join(dir, "a-old.log")); err != nil {
			t.Fatal(err)
		}
		enginetest.AppendFile(t, filepath.Join(dir, "a-old.log"), "a2\n")
		c.expect(t, "a2")
		c.quiet(t, 300*time.Millisecond)
	})
}

func TestFileDirectoryAppearsLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	c := startFiles(t, false, false, 0, nil, filepath.Join(dir, "x.log"))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	enginetest.AppendFile(t, filepath.Join(dir, "x.log"), "x1\n")
	c.expect(t, "x1") // found by the periodic rescan
}

func TestFileLongLines(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "access.log")
	enginetest.AppendFile(t, p, "")
	c := startFiles(t, false, false, 64, m, p)
	long := strings.Repeat("x", 65)
	enginetest.AppendFile(t, p, "ok1\n"+long+"\nok2\n"+strings.Repeat("y", 40))
	c.expect(t, "ok1", "ok2")
	enginetest.AppendFile(t, p, strings.Repeat("y", 40)+"\nok3\n"+strings.Repeat("z", 64)+"\n")
	c.expect(t, "ok3", strings.Repeat("z", 64))
	if n := testutil.ToFloat64(m.Skipped.WithLabelValues("file:"+p, SkipTooLong)); n != 2 {
		t.Fatalf("too long = %v, want 2", n)
	}
}

// A file much larger than the read buffer arrives whole and in order.
func TestFileLargeAppend(t *testing.T) {
	p := filepath.Join(t.TempDir(), "access.log")
	enginetest.AppendFile(t, p, "")
	c := startFiles(t, false, false, 0, nil, p)
	var b strings.Builder
	want := make([]string, 5000)
	for i := range want {
		want[i] = fmt.Sprintf("line %05d %s", i, strings.Repeat("p", i%97))
		b.WriteString(want[i] + "\n")
	}
	enginetest.AppendFile(t, p, b.String())
	c.expect(t, want...)
}

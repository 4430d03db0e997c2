package acquire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// File following: the directories of the patterns are watched with inotify
// (fsnotify), so writes, creations and renames are seen at once; a rescan
// every FileRescanInterval catches what a watch cannot (a directory that
// appears later, a pattern with a wildcard in its directory part, a lost
// event). Without inotify the source polls every FilePollInterval.
const (
	FileRescanInterval = time.Second
	FilePollInterval   = 250 * time.Millisecond
	// fileRetireIdle is how long a file that has been rotated away (renamed
	// or deleted) is still read after its last growth: a writer such as
	// nginx keeps appending to the old file until it reopens its logs.
	fileRetireIdle = 5 * time.Second
	// fileBatch is the most lines handed over in one Handler call.
	fileBatch = 512
)

// FileSource follows the files an acquis.yaml "filenames:" document names.
//
// It starts at the end of the files present at start (from their first
// byte with from_beginning), reads files that appear later from their first
// byte, follows rename+create rotation by inode and copytruncate rotation
// by size, holds a partial last line until its newline arrives, and skips
// (and counts) lines longer than max_line_bytes.
type FileSource struct {
	cfg      SourceConfig
	log      *slog.Logger
	met      *Metrics
	name     string
	typ      string // the type label, looked up once
	lines    prometheus.Counter
	tooLong  prometheus.Counter
	noNotify bool // poll only: for tests of the fallback and where inotify is missing
}

// NewFileSource checks a file document and returns its source.
func NewFileSource(c SourceConfig, o Options) (*FileSource, error) {
	if c.Kind != KindFile || len(c.Filenames) == 0 {
		return nil, errors.New("file source: no filenames")
	}
	// Clean patterns so that they match the paths inotify reports.
	c.Filenames = slices.Clone(c.Filenames)
	for i, p := range c.Filenames {
		if _, err := filepath.Match(p, ""); err != nil {
			return nil, fmt.Errorf("file source: pattern %q: %w", p, err)
		}
		c.Filenames[i] = filepath.Clean(p)
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = DefaultMaxLineBytes
	}
	name := c.Name()
	return &FileSource{
		cfg: c, log: o.logger().With("source", name), met: o.Metrics, name: name, typ: c.Type(),
		lines: o.Metrics.lines(name, c.Type()), tooLong: o.Metrics.skipped(name, SkipTooLong),
	}, nil
}

// Name implements Source.
func (s *FileSource) Name() string { return s.name }

type fileKey struct{ dev, ino uint64 }

// tailed is one open file being followed.
type tailed struct {
	path     string
	f        *os.File
	key      fileKey
	off      int64
	partial  []byte
	skipping bool      // inside an over-long line, dropping bytes until the next newline
	retired  time.Time // when the path stopped naming this file; zero while current
	grew     time.Time // last time data was read
}

// follower is the state of one Run.
type follower struct {
	s       *FileSource
	h       Handler
	buf     []byte
	batch   []Line
	files   map[fileKey]*tailed
	watched map[string]bool
	failed  map[string]bool // paths that could not be opened, reported once
	w       *fsnotify.Watcher
}

// Run implements Source.
func (s *FileSource) Run(ctx context.Context, h Handler) error {
	fl := &follower{
		s: s, h: h,
		buf:     make([]byte, 64<<10),
		batch:   make([]Line, 0, fileBatch),
		files:   make(map[fileKey]*tailed),
		watched: make(map[string]bool),
		failed:  make(map[string]bool),
	}
	defer fl.closeAll()
	interval := FileRescanInterval
	var events <-chan fsnotify.Event
	var errs <-chan error
	if !s.noNotify {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			s.log.Warn("inotify unavailable, polling", "interval", FilePollInterval, "err", err)
		} else {
			fl.w = w
			defer func() { _ = w.Close() }()
			events, errs = w.Events, w.Errors
		}
	}
	if fl.w == nil {
		interval = FilePollInterval
	}
	if err := fl.scan(ctx, true); err != nil {
		return done(ctx, err)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			err = fl.event(ctx, ev)
		case werr := <-errs:
			// An overflowed queue loses events; the next scan reads everything anyway.
			s.log.Warn("inotify", "err", werr)
			err = fl.scan(ctx, false)
		case <-tick.C:
			err = fl.scan(ctx, false)
		}
		if err != nil {
			return done(ctx, err)
		}
	}
}

// done turns a handler error caused by the end of ctx into a clean return.
func done(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (fl *follower) closeAll() {
	for _, t := range fl.files {
		_ = t.f.Close() // read-only: nothing to lose
	}
}

func (fl *follower) matches(path string) bool {
	for _, p := range fl.s.cfg.Filenames {
		if ok, _ := filepath.Match(p, path); ok {
			return true
		}
	}
	return false
}

// event handles one inotify event: a write reads the file it names (when
// followed); anything else may change which file a path names, so it rescans.
func (fl *follower) event(ctx context.Context, ev fsnotify.Event) error {
	if !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Remove) && !ev.Has(fsnotify.Rename) {
		for _, t := range fl.files {
			if t.path == ev.Name && t.retired.IsZero() {
				if err := fl.read(ctx, t); err != nil {
					return err
				}
				return fl.flush(ctx)
			}
		}
		if !fl.matches(ev.Name) {
			return nil
		}
	}
	return fl.scan(ctx, false)
}

// watch adds inotify watches on the directories of the patterns; a missing
// directory is tried again at the next scan.
func (fl *follower) watch() {
	if fl.w == nil {
		return
	}
	for _, p := range fl.s.cfg.Filenames {
		dir := filepath.Dir(p)
		if fl.watched[dir] || hasMeta(dir) {
			continue
		}
		if err := fl.w.Add(dir); err == nil {
			fl.watched[dir] = true
		}
	}
}

func hasMeta(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// scan matches the patterns, starts following new files, notices rotated and
// truncated ones, reads everything that grew and closes retired files that
// have been idle for fileRetireIdle.
func (fl *follower) scan(ctx context.Context, initial bool) error {
	fl.watch()
	now := time.Now()
	current := make(map[fileKey]bool, len(fl.files))
	var paths []string
	for _, p := range fl.s.cfg.Filenames {
		m, _ := filepath.Glob(p) // patterns were checked in NewFileSource
		paths = append(paths, m...)
	}
	slices.Sort(paths)
	paths = slices.Compact(paths)
	for _, path := range paths {
		fi, err := os.Stat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		key := keyOf(fi)
		current[key] = true
		if t := fl.files[key]; t != nil {
			t.path = path // the same file, perhaps renamed to another matching name
			t.retired = time.Time{}
			continue
		}
		if err := fl.open(path, key, initial && !fl.s.cfg.FromBeginning, now); err != nil {
			if !fl.failed[path] { // once, not at every rescan
				fl.s.log.Warn("cannot follow file", "path", path, "err", err)
				fl.failed[path] = true
			}
			continue
		}
		delete(fl.failed, path)
	}
	// Read rotated-away files first: their lines are older than the new file's.
	order := make([]*tailed, 0, len(fl.files))
	for key, t := range fl.files {
		if !current[key] && t.retired.IsZero() {
			t.retired = now
			fl.s.met.rotated(fl.s.name, "rename")
			fl.s.log.Info("file rotated away, draining", "path", t.path)
		}
		order = append(order, t)
	}
	slices.SortFunc(order, func(a, b *tailed) int {
		if a.retired.IsZero() != b.retired.IsZero() {
			if a.retired.IsZero() {
				return 1
			}
			return -1
		}
		return strings.Compare(a.path, b.path)
	})
	for _, t := range order {
		if err := fl.read(ctx, t); err != nil {
			return err
		}
		if !t.retired.IsZero() && now.Sub(t.grew) >= fileRetireIdle && now.Sub(t.retired) >= fileRetireIdle {
			if err := fl.retire(ctx, t); err != nil {
				return err
			}
		}
	}
	return fl.flush(ctx)
}

func keyOf(fi os.FileInfo) fileKey {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileKey{dev: uint64(st.Dev), ino: st.Ino}
	}
	return fileKey{}
}

// open starts following path. atEnd skips the content present now, and the
// rest of a partial last line with it.
func (fl *follower) open(path string, key fileKey, atEnd bool, now time.Time) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	if k := keyOf(fi); k != key {
		// Replaced between the stat and the open: follow what was opened.
		if fl.files[k] != nil {
			_ = f.Close()
			return nil
		}
		key = k
	}
	t := &tailed{path: path, f: f, key: key, grew: now}
	if atEnd && fi.Size() > 0 {
		t.off = fi.Size()
		var last [1]byte
		if _, err := f.ReadAt(last[:], t.off-1); err == nil && last[0] != '\n' {
			t.skipping = true
		}
	}
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		_ = f.Close()
		return err
	}
	fl.files[key] = t
	fl.s.log.Debug("following", "path", path, "offset", t.off)
	return nil
}

// read hands on every complete line t has gained since the last read.
func (fl *follower) read(ctx context.Context, t *tailed) error {
	fi, err := t.f.Stat()
	if err != nil {
		return nil
	}
	if fi.Size() < t.off {
		// copytruncate, or an operator's "> file": start over.
		fl.s.met.rotated(fl.s.name, "truncate")
		fl.s.log.Info("file truncated, reading from start", "path", t.path, "size", fi.Size(), "offset", t.off)
		t.off, t.partial, t.skipping = 0, t.partial[:0], false
		if _, err := t.f.Seek(0, io.SeekStart); err != nil {
			return nil
		}
	}
	for {
		n, err := t.f.Read(fl.buf)
		if n > 0 {
			t.off += int64(n)
			t.grew = time.Now()
			if err := fl.split(ctx, t, fl.buf[:n]); err != nil {
				return err
			}
		}
		if err != nil || n == 0 {
			break
		}
	}
	return nil
}

// split cuts data into lines, completing t's partial line first.
func (fl *follower) split(ctx context.Context, t *tailed, data []byte) error {
	max := fl.s.cfg.MaxLineBytes
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !t.skipping {
				if len(t.partial)+len(data) > max {
					add(fl.s.tooLong, 1)
					t.partial, t.skipping = t.partial[:0], true
				} else {
					t.partial = append(t.partial, data...)
				}
			}
			return nil
		}
		seg := data[:i]
		data = data[i+1:]
		if t.skipping {
			t.skipping = false
			continue
		}
		if len(t.partial) > 0 {
			if len(t.partial)+len(seg) > max {
				add(fl.s.tooLong, 1)
				t.partial = t.partial[:0]
				continue
			}
			t.partial = append(t.partial, seg...)
			seg = t.partial
		} else if len(seg) > max {
			add(fl.s.tooLong, 1)
			continue
		}
		if err := fl.emit(ctx, t.path, seg); err != nil {
			return err
		}
		t.partial = t.partial[:0]
	}
	return nil
}

func (fl *follower) emit(ctx context.Context, path string, b []byte) error {
	b = bytes.TrimSuffix(b, []byte{'\r'})
	if len(b) == 0 {
		return nil
	}
	fl.batch = append(fl.batch, Line{Text: string(b), Type: fl.s.typ, Source: path})
	if len(fl.batch) >= fileBatch {
		return fl.flush(ctx)
	}
	return nil
}

func (fl *follower) flush(ctx context.Context) error {
	if len(fl.batch) == 0 {
		return nil
	}
	n := len(fl.batch)
	err := fl.s.deliver(ctx, fl.h, fl.batch)
	clear(fl.batch)
	fl.batch = fl.batch[:0]
	if err == nil {
		add(fl.s.lines, n)
	}
	return err
}

func (s *FileSource) deliver(ctx context.Context, h Handler, lines []Line) error {
	if err := h(ctx, lines); err != nil {
		return fmt.Errorf("file source %s: %w", s.name, err)
	}
	return nil
}

// retire stops following a rotated-away file. Its unterminated last line,
// if any, is complete now: nobody will write to the file any more.
func (fl *follower) retire(ctx context.Context, t *tailed) error {
	if len(t.partial) > 0 && !t.skipping {
		if err := fl.emit(ctx, t.path, t.partial); err != nil {
			return err
		}
	}
	_ = t.f.Close()
	delete(fl.files, t.key)
	fl.s.log.Debug("stopped following", "path", t.path)
	return nil
}

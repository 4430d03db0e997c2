package banfile

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// Config configures the ban file.
type Config struct {
	// Path is the file nginx maps; its directory must exist. Put it on
	// tmpfs (/dev/shm, /run): it is rewritten on every change.
	Path string `yaml:"path"`
	// Debounce is how long changes are collected before a new generation
	// is written: a change takes effect in nginx after at most Debounce
	// plus the time to write the file.
	Debounce time.Duration `yaml:"debounce"`
	// Heartbeat is how often the bouncer marks the file as alive; readers
	// treat a file whose heartbeat is older than their stale_after (5 s by
	// default) as written by a bouncer that is down.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// OnError, when set, is told of a failed background write (which is
	// retried at the next change, expiry or heartbeat).
	OnError func(error) `yaml:"-"`
}

// DefaultConfig returns the defaults: /dev/shm/portcullis-nginx.bans,
// 200 ms debounce, 1 s heartbeat.
func DefaultConfig() Config {
	return Config{Path: "/dev/shm/portcullis-nginx.bans", Debounce: 200 * time.Millisecond, Heartbeat: time.Second}
}

// Validate checks the configuration without I/O.
func (c *Config) Validate() error {
	if c.Path == "" || !filepath.IsAbs(c.Path) {
		return fmt.Errorf("path: %q is not an absolute path", c.Path)
	}
	if c.Debounce < 0 || c.Debounce > 900*time.Millisecond {
		return fmt.Errorf("debounce: %s is not between 0 and 900ms (a change must apply within 1s)", c.Debounce)
	}
	if c.Heartbeat <= 0 || c.Heartbeat > 2*time.Second {
		return fmt.Errorf("heartbeat: %s is not between 0 and 2s", c.Heartbeat)
	}
	return nil
}

// File is the ban file enforcer. It implements enforcer.Enforcer for ban
// and captcha entries (enforcer.Entry.Remedy); ApplyRemedies and
// ReconcileRemedies take prefixset's entries. Writes are safe for
// concurrent use.
type File struct {
	cfg Config

	mu      sync.Mutex // guards pending and closed
	pending map[netip.Prefix]change
	closed  bool

	buildMu    sync.Mutex // guards everything below: one build at a time
	recs, next []rec
	at         attrs
	segs       segments
	buf        []byte
	generation uint64
	nextExpiry int64
	header     []byte // the current file's header, mapped shared
	stats      Stats

	kick  chan struct{} // a change was queued
	rearm chan struct{} // nextExpiry changed
	done  chan struct{}
	wg    sync.WaitGroup
}

// Stats describes the last generation written.
type Stats struct {
	Generation       uint64
	Prefixes         int
	Segments4        int
	Segments6        int
	Bytes            int
	BuildDuration    time.Duration
	Builds           uint64
	LastBuildSeconds float64
}

var (
	_ enforcer.Enforcer = (*File)(nil)
	_ enforcer.Lister   = (*File)(nil)
)

// New returns a File that writes cfg.Path from its first Reconcile or
// Apply on. Until then nginx finds the previous generation (or none) and
// applies its fail mode once that one's heartbeat is stale.
func New(cfg Config) (*File, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st, err := os.Stat(filepath.Dir(cfg.Path)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("ban file %s: directory missing", cfg.Path)
	}
	f := &File{
		cfg:        cfg,
		pending:    map[netip.Prefix]change{},
		kick:       make(chan struct{}, 1),
		rearm:      make(chan struct{}, 1),
		done:       make(chan struct{}),
		nextExpiry: never,
	}
	f.wg.Go(f.loop)
	return f, nil
}

// Apply queues ban and captcha entries. It implements enforcer.Enforcer.
func (f *File) Apply(ctx context.Context, b enforcer.Batch) error {
	return f.ApplyRemedies(ctx, prefixset.Batch{Add: withRemedies(b.Add), Delete: b.Delete})
}

// Reconcile makes the file hold exactly the given ban and captcha
// entries. It implements enforcer.Enforcer.
func (f *File) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	return f.ReconcileRemedies(ctx, withRemedies(entries))
}

func withRemedies(es []enforcer.Entry) []prefixset.Entry {
	out := make([]prefixset.Entry, len(es))
	for i, e := range es {
		r := prefixset.RemedyBan
		if e.Remedy == enforcer.RemedyCaptcha {
			r = prefixset.RemedyCaptcha
		}
		out[i] = prefixset.Entry{Entry: e, Remedy: r}
	}
	return out
}

// ApplyRemedies queues a batch, deletes before adds; the next generation,
// written within Debounce, holds it. The batch is checked whole first.
func (f *File) ApplyRemedies(ctx context.Context, b prefixset.Batch) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	dels := make([]netip.Prefix, len(b.Delete))
	for i, p := range b.Delete {
		c, err := enforcer.Canonical(p)
		if err != nil {
			return fmt.Errorf("apply: delete %d: %w", i, err)
		}
		dels[i] = c
	}
	// The kinds table is shared with Reconcile, which replaces it: queue
	// under the build lock so that no queued record names a stale kind.
	f.buildMu.Lock()
	defer f.buildMu.Unlock()
	adds, err := toRecs(b.Add, &f.at)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return fmt.Errorf("apply: %w", enforcer.ErrClosed)
	}
	for _, p := range dels {
		f.pending[p] = change{r: recFor(p), del: true}
	}
	for _, r := range adds {
		f.pending[r.prefix()] = change{r: r}
	}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
	return nil
}

// ReconcileRemedies writes a generation holding exactly the given entries
// (the later of two entries for one prefix wins) before it returns.
func (f *File) ReconcileRemedies(ctx context.Context, entries []prefixset.Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	f.buildMu.Lock()
	defer f.buildMu.Unlock()
	// A snapshot starts the kinds table afresh, so that kinds no longer
	// used do not accumulate.
	var at attrs
	rs, err := toRecs(entries, &at)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return fmt.Errorf("reconcile: %w", enforcer.ErrClosed)
	}
	clear(f.pending)
	f.mu.Unlock()
	f.at = at
	f.recs = sortDedup(rs)
	if err := f.buildLocked(time.Now()); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	return nil
}

// Flush writes a generation with the changes queued so far now, without
// waiting for the debounce.
func (f *File) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	f.buildMu.Lock()
	defer f.buildMu.Unlock()
	if f.isClosed() {
		return fmt.Errorf("flush: %w", enforcer.ErrClosed)
	}
	if err := f.buildLocked(time.Now()); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

func (f *File) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Stats returns figures about the last generation written.
func (f *File) Stats() Stats {
	f.buildMu.Lock()
	defer f.buildMu.Unlock()
	return f.stats
}

// buildLocked folds the pending changes into the records, drops what
// expired, and writes the next generation. Callers hold buildMu.
func (f *File) buildLocked(now time.Time) error {
	start := time.Now()
	f.mu.Lock()
	chs := make([]change, 0, len(f.pending))
	for _, c := range f.pending {
		chs = append(chs, c)
	}
	clear(f.pending)
	f.mu.Unlock()
	slices.SortFunc(chs, func(a, b change) int { return compareRec(&a.r, &b.r) })
	f.next, f.nextExpiry = merge(f.next, f.recs, chs, now.UnixNano())
	f.recs, f.next = f.next, f.recs
	select {
	case f.rearm <- struct{}{}:
	default:
	}
	flatten(f.recs, f.at.keys, &f.segs)
	f.generation++
	f.buf = encode(f.buf, &f.segs, f.at.keys, f.generation, now)
	if err := f.writeLocked(); err != nil {
		return err
	}
	d := time.Since(start)
	f.stats = Stats{
		Generation: f.generation, Prefixes: len(f.recs), Segments4: len(f.segs.attr4), Segments6: len(f.segs.attr6),
		Bytes: len(f.buf), BuildDuration: d, Builds: f.stats.Builds + 1, LastBuildSeconds: d.Seconds(),
	}
	return nil
}

// writeLocked replaces the file with f.buf: a temporary file renamed over
// the path, then the previous generation (this process's or, after a
// restart, the one found at the path) marked superseded.
func (f *File) writeLocked() error {
	dir := filepath.Dir(f.cfg.Path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.cfg.Path)+".*")
	if err != nil {
		return fmt.Errorf("write ban file: %w", err)
	}
	cleanup := func() { _ = tmp.Close(); _ = os.Remove(tmp.Name()) }
	if _, err := tmp.Write(f.buf); err != nil {
		cleanup()
		return fmt.Errorf("write ban file: %w", err)
	}
	// nginx workers run as another user.
	if err := tmp.Chmod(0o644); err != nil {
		cleanup()
		return fmt.Errorf("write ban file: %w", err)
	}
	hdr, err := unix.Mmap(int(tmp.Fd()), 0, HeaderSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		cleanup()
		return fmt.Errorf("map ban file header: %w", err)
	}
	_ = tmp.Close()
	old := f.header
	if old == nil {
		old = mapExisting(f.cfg.Path)
	}
	if err := os.Rename(tmp.Name(), f.cfg.Path); err != nil {
		_ = unix.Munmap(hdr)
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write ban file: %w", err)
	}
	if old != nil {
		atomic.StoreUint32(u32At(old, offSuperseded), 1)
		_ = unix.Munmap(old)
	}
	f.header = hdr
	// The build may have taken a while: the heartbeat says "now".
	atomic.StoreUint64(u64At(hdr, offHeartbeat), math.Float64bits(float64(time.Now().UnixNano())/1e9))
	return nil
}

// mapExisting maps the header of a ban file left at path by an earlier
// run, so it can be marked superseded; nil when there is none.
func mapExisting(path string) []byte {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer func() { _ = unix.Close(fd) }()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Size < HeaderSize {
		return nil
	}
	hdr, err := unix.Mmap(fd, 0, HeaderSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	if string(hdr[:len(Magic)]) != Magic {
		_ = unix.Munmap(hdr)
		return nil
	}
	return hdr
}

func u32At(b []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
func u64At(b []byte, off int) *uint64 { return (*uint64)(unsafe.Pointer(&b[off])) }

// beat stores the current time as the heartbeat of the current file and
// reports whether an expiry is due. It reads the clock after taking the
// lock: a tick that waited behind a long build is old.
func (f *File) beat() (due bool) {
	f.buildMu.Lock()
	defer f.buildMu.Unlock()
	now := time.Now()
	if f.header != nil {
		atomic.StoreUint64(u64At(f.header, offHeartbeat), math.Float64bits(float64(now.UnixNano())/1e9))
	}
	return f.nextExpiry != never && f.nextExpiry <= now.UnixNano()
}

// loop writes generations: Debounce after a change, at the earliest
// expiry, and refreshes the heartbeat.
func (f *File) loop() {
	hb := time.NewTicker(f.cfg.Heartbeat)
	defer hb.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	expiry := time.NewTimer(time.Hour)
	armed := false
	build := func() {
		f.buildMu.Lock()
		defer f.buildMu.Unlock()
		if err := f.buildLocked(time.Now()); err != nil && f.cfg.OnError != nil {
			f.cfg.OnError(err)
		}
	}
	for {
		select {
		case <-f.done:
			return
		case <-f.kick:
			if !armed {
				armed = true
				debounce.Reset(f.cfg.Debounce)
			}
		case <-debounce.C:
			armed = false
			build()
		case <-expiry.C:
			build()
		case <-f.rearm:
			f.buildMu.Lock()
			next := f.nextExpiry
			f.buildMu.Unlock()
			if next != never {
				expiry.Reset(time.Until(time.Unix(0, next)) + time.Millisecond)
			}
		case <-hb.C:
			// An expiry whose timer was not armed (a Reconcile does not
			// arm it) is caught here.
			if f.beat() {
				build()
			}
		}
	}
}

// List returns what the current generation enforces, read back from the
// file: each segment as the prefixes that make it up. It implements
// enforcer.Lister; pending changes are written first.
func (f *File) List(ctx context.Context) ([]enforcer.Entry, error) {
	if err := f.Flush(ctx); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	b, err := os.ReadFile(f.cfg.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", f.cfg.Path, err)
	}
	return t.Entries(time.Now()), nil
}

// Close stops the background writer. The file stays: nginx keeps
// enforcing it and, once its heartbeat is stale, applies its fail mode.
// Closing twice is harmless.
func (f *File) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	close(f.done)
	f.wg.Wait()
	f.buildMu.Lock()
	defer f.buildMu.Unlock()
	if f.header != nil {
		_ = unix.Munmap(f.header)
		f.header = nil
	}
	return nil
}

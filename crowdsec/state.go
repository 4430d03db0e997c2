package crowdsec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// stateVersion is the version of the state file this package writes.
const stateVersion = 1

// stateFile is the JSON form of a Server's durable state.
type stateFile struct {
	V int `json:"v"`
	// Seq is the last number of the sequence handed out.
	Seq int64 `json:"seq"`
	// DelsMin is the newest deletion forgotten; cursors at or below it
	// are answered as at startup.
	DelsMin   int64            `json:"dels_min"`
	Decisions []stateDecision  `json:"decisions"`
	Deleted   []stateDeletion  `json:"deleted"`
	Bouncers  map[string]int64 `json:"bouncers"`
}

// stateDecision is a live decision and its LAPI id.
type stateDecision struct {
	ID int64                 `json:"id"`
	D  decisionfeed.Decision `json:"d"`
}

// stateDeletion is a deletion bouncers may not have been told about yet.
type stateDeletion struct {
	Seq int64                 `json:"seq"`
	At  time.Time             `json:"at"`
	ID  int64                 `json:"id"`
	D   decisionfeed.Decision `json:"d"`
}

// load reads the state file, when there is one, into the empty server.
func (s *Server) load() error {
	b, err := os.ReadFile(s.state)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lapi state: %w", err)
	}
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return fmt.Errorf("lapi state %s: %w", s.state, err)
	}
	if st.V != stateVersion {
		return fmt.Errorf("lapi state %s: version %d, want %d", s.state, st.V, stateVersion)
	}
	lim := decisionfeed.DefaultLimits()
	slices.SortFunc(st.Decisions, func(a, b stateDecision) int { return int(a.ID - b.ID) })
	slices.SortFunc(st.Deleted, func(a, b stateDeletion) int { return int(a.Seq - b.Seq) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, sd := range st.Decisions {
		if err := sd.D.Validate(lim); err != nil {
			return fmt.Errorf("lapi state %s: decision %d: %w", s.state, i, err)
		}
		if sd.ID <= 0 || sd.ID > st.Seq || (i > 0 && sd.ID == st.Decisions[i-1].ID) {
			return fmt.Errorf("lapi state %s: decision %d: id %d repeated or outside 1..%d", s.state, i, sd.ID, st.Seq)
		}
		if _, dup := s.live[sd.D.Target()]; dup {
			return fmt.Errorf("lapi state %s: decision %d: key %s twice", s.state, i, sd.D.Target())
		}
		s.insertLocked(sd.D.Target(), &entry{d: sd.D, id: sd.ID})
	}
	for i, sd := range st.Deleted {
		if err := sd.D.Validate(lim); err != nil {
			return fmt.Errorf("lapi state %s: deletion %d: %w", s.state, i, err)
		}
		if sd.Seq <= 0 || sd.Seq > st.Seq || sd.ID > sd.Seq {
			return fmt.Errorf("lapi state %s: deletion %d: seq %d or id %d out of order", s.state, i, sd.Seq, sd.ID)
		}
		s.dels = append(s.dels, delEvent{seq: sd.Seq, at: sd.At, e: &entry{d: sd.D, id: sd.ID, removed: true}})
	}
	for id, c := range st.Bouncers {
		if c < 0 || c > st.Seq {
			return fmt.Errorf("lapi state %s: bouncer %s: cursor %d outside 0..%d", s.state, id, c, st.Seq)
		}
		s.cursors[id] = c
		s.durable[id] = struct{}{}
	}
	s.seq, s.delsMin, s.saved = st.Seq, st.DelsMin, st.Seq
	return nil
}

// journalName is the journal beside a state file.
func journalName(state string) string { return state + ".journal" }

// journalLine is one line of the journal: a decision and its id, or a
// bouncer's cursor.
type journalLine struct {
	ID int64                  `json:"id,omitempty"`
	D  *decisionfeed.Decision `json:"d,omitempty"`
	B  string                 `json:"b,omitempty"`
	C  int64                  `json:"c,omitempty"`
}

// replayJournal applies the decisions appended after the state file was
// written. A last line cut short (a crash while appending) is dropped; any
// other bad line is an error naming the file and line.
func (s *Server) replayJournal() error {
	name := journalName(s.state)
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lapi journal: %w", err)
	}
	lines := bytes.Split(b, []byte("\n"))
	lim := decisionfeed.DefaultLimits()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range lines {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		var jl journalLine
		dec := json.NewDecoder(bytes.NewReader(l))
		dec.DisallowUnknownFields()
		err := dec.Decode(&jl)
		switch {
		case err != nil:
		case jl.B != "":
			if jl.D != nil || jl.ID != 0 || jl.C < 0 {
				err = fmt.Errorf("bad cursor line for bouncer %s", jl.B)
			}
		case jl.D == nil || jl.ID <= 0:
			err = errors.New("neither a decision with an id nor a cursor")
		default:
			err = jl.D.Validate(lim)
		}
		if err != nil {
			if i == len(lines)-1 {
				break // cut short by a crash; the answer it was for was never sent
			}
			return fmt.Errorf("lapi journal %s:%d: %w", name, i+1, err)
		}
		if jl.B != "" {
			// The cursor may count deletions, which are not journaled.
			s.seq = max(s.seq, jl.C)
			s.cursors[jl.B] = max(s.cursors[jl.B], jl.C)
			s.durable[jl.B] = struct{}{}
			continue
		}
		if jl.ID <= s.saved {
			continue // already in the state file
		}
		k := jl.D.Target()
		if old, ok := s.live[k]; ok {
			if old.d.ID == jl.D.ID {
				continue
			}
			s.unindexLocked(k, old)
		}
		s.insertLocked(k, &entry{d: *jl.D, id: jl.ID})
		s.seq = max(s.seq, jl.ID)
	}
	s.saved = s.seq
	return nil
}

// openJournal opens the journal for appending.
func (s *Server) openJournal() error {
	f, err := os.OpenFile(journalName(s.state), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open lapi journal: %w", err)
	}
	s.journal = f
	return nil
}

// journal appends to the journal the live decisions with ids up to upTo
// that are not on disk yet and the cursor of bouncer, and syncs it.
func (s *Server) journalUpTo(upTo int64, bouncer string, cursor int64) error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	from := s.saved
	var es []*entry
	for _, e := range s.adds[sort.Search(len(s.adds), func(i int) bool { return s.adds[i].id > from }):] {
		if e.id > upTo {
			break
		}
		if !e.removed {
			es = append(es, e)
		}
	}
	s.mu.Unlock()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, e := range es {
		if err := enc.Encode(journalLine{ID: e.id, D: &e.d}); err != nil {
			return fmt.Errorf("encode lapi journal: %w", err)
		}
	}
	if err := enc.Encode(journalLine{B: bouncer, C: cursor}); err != nil {
		return fmt.Errorf("encode lapi journal: %w", err)
	}
	if _, err := s.journal.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("append lapi journal: %w", err)
	}
	if err := s.journal.Sync(); err != nil {
		return fmt.Errorf("sync lapi journal: %w", err)
	}
	s.mu.Lock()
	s.saved = max(s.saved, upTo)
	s.durable[bouncer] = struct{}{}
	s.mu.Unlock()
	return nil
}

// Save writes the state file atomically (a temporary file, synced, renamed
// over the old one). Without a StateFile it does nothing.
func (s *Server) Save() error {
	if s.state == "" {
		return nil
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	st := stateFile{V: stateVersion, Seq: s.seq, DelsMin: s.delsMin, Bouncers: make(map[string]int64, len(s.cursors))}
	entries := make([]*entry, 0, len(s.live))
	for _, e := range s.live {
		entries = append(entries, e)
	}
	dels := slices.Clone(s.dels)
	for id, c := range s.cursors {
		st.Bouncers[id] = c
	}
	s.dirty = false
	s.mu.Unlock()
	saved := slices.Collect(maps.Keys(st.Bouncers))

	st.Decisions = make([]stateDecision, len(entries))
	for i, e := range entries {
		st.Decisions[i] = stateDecision{ID: e.id, D: e.d}
	}
	st.Deleted = make([]stateDeletion, len(dels))
	for i, ev := range dels {
		st.Deleted[i] = stateDeletion{Seq: ev.seq, At: ev.at, ID: ev.e.id, D: ev.e.d}
	}
	if err := writeAtomic(s.state, &st); err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return err
	}
	// Everything journaled is in the file now (saveMu is held).
	if err := s.journal.Truncate(0); err != nil {
		return fmt.Errorf("empty lapi journal: %w", err)
	}
	s.mu.Lock()
	s.saved = max(s.saved, st.Seq)
	for _, id := range saved {
		s.durable[id] = struct{}{}
	}
	s.mu.Unlock()
	return nil
}

// Close writes the state a last time and closes the journal.
func (s *Server) Close() error {
	if s.state == "" {
		return nil
	}
	err := s.Save()
	if cerr := s.journal.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close lapi journal: %w", cerr)
	}
	return err
}

// SaveEvery writes the state every interval while something changed, and
// once more when ctx ends. It returns the error of that last write.
func (s *Server) SaveEvery(ctx context.Context, interval time.Duration, onErr func(error)) error {
	if s.state == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return s.Close()
		case <-t.C:
		}
		s.mu.Lock()
		changed := s.dirty || s.saved < s.seq
		s.mu.Unlock()
		if changed {
			if err := s.Save(); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}

// writeAtomic writes v as JSON to path through a synced temporary file in
// the same directory and a rename, then syncs the directory.
func writeAtomic(path string, v any) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write lapi state: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()           // already failed; the write error is the one to report
			_ = os.Remove(f.Name()) // best effort: a stray temporary file is harmless
		}
	}()
	if err = json.NewEncoder(f).Encode(v); err != nil {
		return fmt.Errorf("write lapi state %s: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync lapi state %s: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close lapi state %s: %w", f.Name(), err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename lapi state to %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open lapi state dir: %w", err)
	}
	defer d.Close() //nolint:errcheck // read-only handle
	if err = d.Sync(); err != nil {
		return fmt.Errorf("sync lapi state dir %s: %w", dir, err)
	}
	return nil
}

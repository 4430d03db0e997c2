package crowdsec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
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
		if sd.ID <= 0 || sd.ID > st.Seq {
			return fmt.Errorf("lapi state %s: decision %d: id %d outside 1..%d", s.state, i, sd.ID, st.Seq)
		}
		s.insertLocked(sd.D.Key(), &entry{d: sd.D, id: sd.ID})
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
	}
	s.seq, s.delsMin, s.saved = st.Seq, st.DelsMin, st.Seq
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
	s.mu.Lock()
	s.saved = max(s.saved, st.Seq)
	s.mu.Unlock()
	return nil
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
			return s.Save()
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

package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/parse"
)

// Pipeline runs both stages in one goroutine, for replays and single
// instances that need no re-keying.
type Pipeline struct {
	Parser *parse.Parser
	Engine *Engine
}

// Line parses one line and runs the event it carries. It returns the
// parse error of a malformed line (already counted by the parser) and nil
// for lines without an event.
func (p *Pipeline) Line(l acquire.Line) error {
	ev, err := p.Parser.Line(l)
	if err != nil {
		if errors.Is(err, parse.ErrNoEvent) {
			return nil
		}
		return err
	}
	p.Engine.Event(&ev)
	return nil
}

// MaxLineBytes is the longest line Feed accepts; longer lines are skipped
// and reported as malformed.
const MaxLineBytes = 64 << 10

// FeedStats counts what Feed read.
type FeedStats struct {
	Lines     uint64 // lines read, including malformed ones
	Malformed uint64 // lines the parser rejected or that were too long
}

// Feed reads newline-separated lines from r and runs each through p as a
// line of type typ from source. It reads in large blocks and converts each
// block to a string once, so lines cost no allocation of their own.
// onError, if not nil, is told about each malformed line with its 1-based
// line number. Feed returns on the first read error.
func Feed(r io.Reader, typ, source string, p *Pipeline, onError func(line uint64, err error)) (FeedStats, error) {
	var st FeedStats
	buf := make([]byte, 0, 256<<10)
	skipping := false // inside an over-long line
	for {
		n, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		eof := errors.Is(rerr, io.EOF)
		if rerr != nil && !eof {
			return st, fmt.Errorf("read %s: %w", source, rerr)
		}
		end := bytes.LastIndexByte(buf, '\n')
		if eof && len(buf) > 0 && end != len(buf)-1 {
			buf = append(buf, '\n') // last line without a newline
			end = len(buf) - 1
		}
		if end >= 0 {
			block := string(buf[:end+1])
			for len(block) > 0 {
				i := strings.IndexByte(block, '\n')
				if i < 0 {
					i = len(block)
				}
				line := block[:i]
				block = block[i+1:]
				if skipping {
					skipping = false
					continue
				}
				st.Lines++
				if len(line) > 0 && line[len(line)-1] == '\r' {
					line = line[:len(line)-1]
				}
				if len(line) > MaxLineBytes {
					st.Malformed++
					if onError != nil {
						onError(st.Lines, fmt.Errorf("%s: line longer than %d bytes", source, MaxLineBytes))
					}
					continue
				}
				if err := p.Line(acquire.Line{Text: line, Type: typ, Source: source}); err != nil {
					st.Malformed++
					if onError != nil {
						onError(st.Lines, err)
					}
				}
			}
			rest := copy(buf, buf[end+1:])
			buf = buf[:rest]
		}
		if eof {
			return st, nil
		}
		if len(buf) == cap(buf) {
			// A line longer than the buffer: drop what we have, skip to its end.
			if !skipping {
				st.Lines++
				st.Malformed++
				if onError != nil {
					onError(st.Lines, fmt.Errorf("%s: line longer than %d bytes", source, MaxLineBytes))
				}
			}
			skipping = true
			buf = buf[:0]
		}
	}
}

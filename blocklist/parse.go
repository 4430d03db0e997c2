// Package blocklist reads third-party IP blocklists — plain address or CIDR
// lists, FireHOL .netset files and Spamhaus DROP lists — into prefixes, so
// they can be published as decisions with origin "blocklist".
package blocklist

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
)

// MaxLineBytes is the longest line read; longer lines are reported and skipped.
const MaxLineBytes = 4096

// LineError is a line that could not be read as an address or range.
type LineError struct {
	Line   int
	Text   string
	Reason string
}

func (e LineError) Error() string {
	return fmt.Sprintf("line %d: %s: %q", e.Line, e.Reason, e.Text)
}

// Result is what a list held: its prefixes, sorted and without duplicates
// (single addresses as /32 or /128), and the lines that were skipped.
type Result struct {
	Prefixes []netip.Prefix
	Skipped  []LineError
}

// Parse reads a list. Comments start with '#' or ';' anywhere on a line
// (Spamhaus puts "; SBL…" after the range); blank lines are ignored. A range
// that is not in masked form ("10.0.0.1/8") is reported, not silently widened.
func Parse(r io.Reader) (Result, error) {
	var res Result
	br := bufio.NewReaderSize(r, MaxLineBytes)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			res.Skipped = append(res.Skipped, LineError{Line: n, Text: string(line[:32]) + "…",
				Reason: fmt.Sprintf("longer than %d bytes", MaxLineBytes)})
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return res, fmt.Errorf("read list: line %d: %w", n, err)
			}
			continue
		}
		if err != nil && err != io.EOF {
			return res, fmt.Errorf("read list: line %d: %w", n, err)
		}
		res.add(n, line)
		if err == io.EOF {
			break
		}
	}
	slices.SortFunc(res.Prefixes, comparePrefix)
	res.Prefixes = slices.Compact(res.Prefixes)
	return res, nil
}

func (res *Result) add(n int, line []byte) {
	if i := bytes.IndexAny(line, "#;"); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return
	}
	p, reason := parseEntry(string(line))
	if reason != "" {
		res.Skipped = append(res.Skipped, LineError{Line: n, Text: string(line), Reason: reason})
		return
	}
	res.Prefixes = append(res.Prefixes, p)
}

func parseEntry(s string) (netip.Prefix, string) {
	if strings.IndexByte(s, '/') >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, "not a CIDR range"
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, "zoned address"
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Sprintf("host bits set (did you mean %s?)", p.Masked())
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, "IPv4-mapped IPv6 range"
		}
		return p, ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, "not an IP address or CIDR range"
	}
	if a.Zone() != "" {
		return netip.Prefix{}, "zoned address"
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), ""
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

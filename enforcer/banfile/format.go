// Package banfile is the in-nginx enforcer of the nginx bouncer: it keeps
// the live ban and captcha decisions as a compact, sorted table of address
// ranges in a file that nginx workers map into memory and search with
// LuaJIT's FFI (contrib/nginx/portcullis/portcullis.lua), so a check costs a
// binary search in shared memory instead of an HTTP exchange.
//
// A new generation of the file is written beside the old one and renamed
// over it; the old file is then marked superseded in place, which readers
// notice on their next check (one memory read) and map the new file. The
// bouncer refreshes a heartbeat in the current file every second, so
// readers can tell a bouncer that is down (fail open or fail closed).
//
// File layout (little-endian; offsets from the start of the file):
//
//	0   [8]byte  magic "PCBANS\x00\x01"
//	8   uint32   format version (1)
//	12  uint32   header size (128)
//	16  uint32   superseded: 1 once a newer generation replaced this file
//	20  uint32   reserved (0)
//	24  uint64   generation, +1 per file written
//	32  float64  heartbeat, Unix seconds, refreshed while the bouncer runs
//	40  float64  built, Unix seconds
//	48  uint32   n4, IPv4 segments
//	52  uint32   n6, IPv6 segments
//	56  uint32   nattr, decision kinds
//	60  uint32   offset of index4: 65537 uint32, index4[h] is the first
//	             IPv4 segment whose start is at least h<<16
//	64  uint32   offset of the IPv4 segments: start uint32[n4],
//	             end uint32[n4], attr uint32[n4], then (8-aligned) until
//	             float64[n4]
//	68  uint32   offset of the IPv6 segments: start uint32[4*n6], end
//	             uint32[4*n6] (each address as four 32-bit words, most
//	             significant first), attr uint32[n6], then (8-aligned)
//	             until float64[n6]
//	72  uint32   offset of the attrs: nattr × {remedy uint32 (1 ban,
//	             2 captcha), text offset uint32, text length uint32}
//	76  uint32   reserved (0)
//	80  uint64   file size
//
// Segments are disjoint, inclusive address ranges sorted by start; each
// carries the decision that wins there (a ban over a captcha, then the
// latest expiry, then the most specific prefix) and that decision's expiry
// in Unix seconds (+Inf for none). A text is the X-Portcullis-Decision
// value, "TYPE; reason=R; origin=O".
package banfile

import (
	"encoding/binary"
	"math"
)

// Magic opens every ban file.
const Magic = "PCBANS\x00\x01"

// Version is the format version this package writes and reads.
const Version = 1

// HeaderSize is the size of the header.
const HeaderSize = 128

// Header field offsets.
const (
	offVersion    = 8
	offHeaderSize = 12
	offSuperseded = 16
	offGeneration = 24
	offHeartbeat  = 32
	offBuilt      = 40
	offN4         = 48
	offN6         = 52
	offNAttr      = 56
	offIndex4     = 60
	offSeg4       = 64
	offSeg6       = 68
	offAttrs      = 72
	offFileSize   = 80
)

// index4Len is the number of entries of the IPv4 /16 index.
const index4Len = 1<<16 + 1

// attrSize is the size of one attr record.
const attrSize = 12

var le = binary.LittleEndian

// align8 rounds n up to a multiple of 8.
func align8(n int) int { return (n + 7) &^ 7 }

// layout is where each section of a file with the given counts lives.
type layout struct {
	index4, seg4, seg6, attrs, text, size int
}

func newLayout(n4, n6, nattr, textLen int) layout {
	var l layout
	l.index4 = HeaderSize
	l.seg4 = align8(l.index4 + 4*index4Len)
	l.seg6 = align8(align8(l.seg4+12*n4) + 8*n4)
	l.attrs = align8(align8(l.seg6+36*n6) + 8*n6)
	l.text = l.attrs + attrSize*nattr
	l.size = l.text + textLen
	return l
}

// until4 is the offset of the IPv4 expiries for n4 segments at seg4.
func until4(seg4, n4 int) int { return align8(seg4 + 12*n4) }

// until6 is the offset of the IPv6 expiries for n6 segments at seg6.
func until6(seg6, n6 int) int { return align8(seg6 + 36*n6) }

// unixSeconds converts Unix nanoseconds to the file's float64 seconds;
// never becomes +Inf.
func unixSeconds(ns int64) float64 {
	if ns == never {
		return math.Inf(1)
	}
	return float64(ns) / 1e9
}

package banfile

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// FuzzParse corrupts a valid ban file and hands it to Parse; a file it
// accepts must answer lookups and list without panicking (the Lua reader
// relies on the same checks). The input is a list of edits, each a 4-byte
// position (modulo the file size) and a byte to store there, after a
// 4-byte length to cut the file to: whole files of a quarter megabyte are
// too big for the fuzzer's mutator to be useful.
func FuzzParse(f *testing.F) {
	hour := time.Unix(1_900_000_000, 0)
	var at attrs
	rs, err := toRecs([]prefixset.Entry{
		entry("10.0.0.0/8", prefixset.RemedyCaptcha, hour, "a"),
		entry("10.1.2.3/32", prefixset.RemedyBan, hour, "b"),
		entry("2001:db8::/32", prefixset.RemedyBan, time.Time{}, "c"),
		entry("2001:db8::1/128", prefixset.RemedyCaptcha, hour, "d"),
	}, &at)
	if err != nil {
		f.Fatal(err)
	}
	var s segments
	flatten(sortDedup(rs), at.keys, &s)
	base := encode(nil, &s, at.keys, 1, hour)
	if _, err := Parse(base); err != nil {
		f.Fatalf("seed file does not parse: %v", err)
	}
	seed := func(cut uint32, edits ...uint32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, cut)
		for i := 0; i+1 < len(edits); i += 2 {
			b = binary.LittleEndian.AppendUint32(b, edits[i])
			b = append(b, byte(edits[i+1]))
		}
		return b
	}
	f.Add(seed(0))
	f.Add(seed(100, 0, 'X'))
	f.Add(seed(0, offN4, 0xff, offSeg6, 0x10))
	f.Add(seed(0, offNAttr, 0, offAttrs+1, 0xff))
	f.Add(seed(0, uint32(len(base)-20), 0xff, HeaderSize+4*300, 9))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 4 {
			return
		}
		b := append([]byte(nil), base...)
		if cut := int(binary.LittleEndian.Uint32(in)); cut > 0 && cut < len(b) {
			b = b[:cut]
		}
		for in = in[4:]; len(in) >= 5; in = in[5:] {
			b[int(binary.LittleEndian.Uint32(in)%uint32(len(b)))] = in[4]
		}
		tb, err := Parse(b)
		if err != nil {
			return
		}
		now := time.Unix(1_800_000_000, 0)
		for _, ip := range []string{"10.1.2.3", "10.9.9.9", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
			tb.Lookup(netip.MustParseAddr(ip), now)
		}
		tb.Entries(now)
	})
}

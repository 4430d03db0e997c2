package blocklist

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseFormats(t *testing.T) {
	in := strings.Join([]string{
		"# FireHOL style header",
		"1.10.16.0/20 ; SBL256894", // Spamhaus DROP
		"  203.0.113.7  ",          // plain address, padded
		"198.51.100.0/24",          // netset
		"2001:db8::/32 ; SBL-v6",   // Spamhaus DROPv6
		"2001:db8::1",              // v6 address
		"::ffff:192.0.2.1",         // mapped: unmapped to v4
		"203.0.113.7",              // duplicate
		"10.0.0.1/8",               // host bits
		"not-an-ip",                // junk
		"",                         // blank
		"; only a comment",
		"fe80::1%eth0", // zoned
	}, "\n")
	res, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("1.10.16.0/20"),
		netip.MustParsePrefix("192.0.2.1/32"),
		netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("203.0.113.7/32"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
	}
	if !slices.Equal(res.Prefixes, want) {
		t.Errorf("prefixes:\n got %v\nwant %v", res.Prefixes, want)
	}
	var lines []int
	for _, s := range res.Skipped {
		lines = append(lines, s.Line)
	}
	if !slices.Equal(lines, []int{9, 10, 13}) {
		t.Errorf("skipped lines = %v, want [9 10 13]; %v", lines, res.Skipped)
	}
	if got := res.Skipped[0].Error(); got != `line 9: host bits set (did you mean 10.0.0.0/8?): "10.0.0.1/8"` {
		t.Errorf("error text = %s", got)
	}
}

func TestParseLongLine(t *testing.T) {
	in := "192.0.2.1\n" + strings.Repeat("1", MaxLineBytes+1) + "\n192.0.2.2\n"
	res, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")}
	if !slices.Equal(res.Prefixes, want) {
		t.Errorf("prefixes = %v, want %v", res.Prefixes, want)
	}
	if len(res.Skipped) != 1 || res.Skipped[0].Line != 2 {
		t.Errorf("skipped = %+v, want line 2", res.Skipped)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("1.2.3.0/24 ; SBL1\n# c\n2001:db8::/48\n1.2.3.4\n")
	f.Add("::ffff:1.2.3.4/120\n")
	f.Fuzz(func(t *testing.T, in string) {
		res, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		for i, p := range res.Prefixes {
			if !p.IsValid() || p.Masked() != p {
				t.Fatalf("invalid prefix %v", p)
			}
			if i > 0 && comparePrefix(res.Prefixes[i-1], p) >= 0 {
				t.Fatalf("not sorted/unique at %d: %v", i, res.Prefixes)
			}
		}
	})
}

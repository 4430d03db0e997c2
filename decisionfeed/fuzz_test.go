package decisionfeed

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"
)

// FuzzDecode holds the fast decoder to the strict one: the same messages
// accepted, the same decision, the same error; and every accepted message
// encodes and decodes back to itself.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(validJSON))
	d := NewDecision(OpAdd, TypeCaptcha, netip.MustParsePrefix("2001:db8::/48"), time.Hour, "cli", time.Unix(1_800_000_000, 0))
	d.Reason = "über ✓"
	b, err := Encode(&d, DefaultLimits())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	lim := DefaultLimits()
	interning := newDecoder(lim)
	f.Fuzz(func(t *testing.T, in []byte) {
		want, wantErr := decodeStrict(in, lim)
		for name, dec := range map[string]func([]byte) (Decision, error){
			"Decode":    func(b []byte) (Decision, error) { return Decode(b, lim) },
			"interning": interning.decode,
		} {
			got, err := dec(in)
			if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("%s: error %v, strict decoder %v", name, err, wantErr)
			}
			if !sameDecision(got, want) {
				t.Fatalf("%s: decision\n%+v\nstrict decoder\n%+v", name, got, want)
			}
		}
		if wantErr != nil {
			return
		}
		out, err := Encode(&want, lim)
		if err != nil {
			t.Fatalf("an accepted decision does not encode: %v", err)
		}
		back, err := Decode(out, lim)
		if err != nil {
			t.Fatalf("an encoded decision does not decode: %v\n%s", err, out)
		}
		if !sameDecision(back, want) {
			t.Fatalf("round trip\n%+v\n%+v", back, want)
		}
	})
}

// TestFastPathTaken keeps the common shapes on the fast path; a fallback
// would still be correct, only slow.
func TestFastPathTaken(t *testing.T) {
	d := NewDecision(OpAdd, TypeBan, netip.MustParsePrefix("203.0.113.7/32"), 4*time.Hour, "engine", time.Now())
	d.Scenario, d.Country, d.Host, d.Reason = "crowdsecurity/ssh-bf", "RU", "web-1", "brute force über ssh"
	enc, err := Encode(&d, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	pretty := `{
  "v": 1, "id": "x1", "op": "delete", "type": "ban", "scope": "range",
  "value": "2001:db8::/32", "origin": "kafka-python", "created_at": "2026-11-25T10:00:05+01:00"
}
`
	for _, in := range []string{validJSON, string(enc), pretty} {
		dc := newDecoder(DefaultLimits())
		if _, ok := dc.fast([]byte(in)); !ok {
			t.Errorf("fast path declined %s", in)
		}
	}
	for _, in := range []string{
		`{"v":1,"v":1}`, `{"ID":"x"}`, `{"id":"a\"b"}`, `{"v":1.0}`, `{"v":01}`, `{"id":null}`, `{"extra":1}`,
		validJSON + `}`, `[` + validJSON + `]`, "{\"id\":\"\xff\"}",
	} {
		dc := newDecoder(DefaultLimits())
		if _, ok := dc.fast([]byte(in)); ok {
			t.Errorf("fast path took %s", in)
		}
	}
}

func TestInterningSharesStrings(t *testing.T) {
	dc := newDecoder(DefaultLimits())
	a, err := dc.decode([]byte(validJSON))
	if err != nil {
		t.Fatal(err)
	}
	b, err := dc.decode([]byte(validJSON))
	if err != nil {
		t.Fatal(err)
	}
	if unsafeData(a.Scenario) != unsafeData(b.Scenario) || unsafeData(a.Origin) != unsafeData(b.Origin) {
		t.Fatal("repeated strings are not shared")
	}
	if a.ID != "0f8c2a" || a.Value != "203.0.113.7" {
		t.Fatalf("id %q value %q", a.ID, a.Value)
	}
}

func unsafeData(s string) *byte { return unsafe.StringData(s) }

// FuzzKey holds the record-key checks to their definitions: matchKey
// accepts exactly d.Key() and the legacy d.Target(), and a key parseKey
// accepts is the key of the decision it names.
func FuzzKey(f *testing.F) {
	for _, k := range []string{"ip:203.0.113.7", "ip:203.0.113.7@engine", "ip:203.0.113.7@cli", "range:198.51.100.0/24@lists:firehol_level1",
		"ip:2001:db8::7@engine", "range:2001:db8::/32", "ip:203.0.113.7@", "ip:203.0.113.7@eng ine", "ip:203.0.113.7@a@b",
		"ip:203.0.113.7@\u202eevil", "ip:", ":", "ip:203.0.113.07", "range:0.0.0.0/0", "ipx:1.2.3.4", "ip:1.2.3.4:80", "", "range:10.0.0.1/8"} {
		f.Add([]byte(k))
	}
	lim := DefaultLimits()
	d := Decision{Scope: ScopeIP, Value: "203.0.113.7", Origin: "engine"}
	f.Fuzz(func(t *testing.T, key []byte) {
		legacy, err := matchKey(key, &d)
		if want := string(key) == d.Key() || string(key) == d.Target(); (err == nil) != want || legacy != (string(key) == d.Target()) {
			t.Fatalf("matchKey(%q) = %v, %v; want ok=%v", key, legacy, err, want)
		}
		k, err := parseKey(key, lim)
		if err != nil {
			return
		}
		got := Decision{Scope: k.scope, Value: k.value, Origin: k.origin, Legacy: k.legacy}
		if got.Key() != string(key) {
			t.Fatalf("parseKey(%q) = %+v", key, k)
		}
		if _, err := matchKey(key, &got); err != nil {
			t.Fatalf("parseKey accepted %q, matchKey refuses it: %v", key, err)
		}
		if err := validateValue(k.scope, k.value, lim); err != nil {
			t.Fatalf("parseKey accepted %q: %v", key, err)
		}
		if !k.legacy {
			if err := CheckOrigin(k.origin); err != nil {
				t.Fatalf("parseKey accepted %q: %v", key, err)
			}
		}
	})
}

package decisionfeed

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// validJSON is a complete, valid schema v1 message.
const validJSON = `{"v":1,"id":"0f8c2a","op":"add","type":"ban","scope":"ip","value":"203.0.113.7",` +
	`"duration":"4h0m0s","until":"2026-11-25T14:00:05Z","scenario":"crowdsecurity/ssh-bf",` +
	`"origin":"engine","created_at":"2026-11-25T10:00:05Z","country":"RU","host":"web-1"}`

func TestDecodeValid(t *testing.T) {
	d, err := Decode([]byte(validJSON), DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want := Decision{
		V: 1, ID: "0f8c2a", Op: OpAdd, Type: TypeBan, Scope: ScopeIP, Value: "203.0.113.7",
		Duration: "4h0m0s", Until: time.Date(2026, 11, 25, 14, 0, 5, 0, time.UTC),
		Scenario: "crowdsecurity/ssh-bf", Origin: "engine",
		CreatedAt: time.Date(2026, 11, 25, 10, 0, 5, 0, time.UTC), Country: "RU", Host: "web-1",
	}
	if !sameDecision(d, want) {
		t.Fatalf("got %+v\nwant %+v", d, want)
	}
	if k, tg := d.Key(), d.Target(); k != "ip:203.0.113.7@engine" || tg != "ip:203.0.113.7" {
		t.Fatalf("key %q target %q", k, tg)
	}
	d.Legacy = true
	if k := d.Key(); k != "ip:203.0.113.7" {
		t.Fatalf("legacy key %q", k)
	}
}

// sameDecision compares decisions field by field, times with Equal.
func sameDecision(a, b Decision) bool {
	ta, tb := a.Until, b.Until
	ca, cb := a.CreatedAt, b.CreatedAt
	a.Until, b.Until, a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return a == b && ta.Equal(tb) && ca.Equal(cb) &&
		ta.Location().String() == tb.Location().String() && ca.Location().String() == cb.Location().String()
}

// edit returns validJSON with old replaced by new (which must occur).
func edit(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(validJSON, old) {
		t.Fatalf("edit: %q not in the valid message", old)
	}
	return strings.Replace(validJSON, old, new, 1)
}

func TestDecodeRejects(t *testing.T) {
	long := strings.Repeat("a", 300)
	cases := []struct {
		name, in, err string
	}{
		{"empty", ``, "json: EOF"},
		{"not json", `ban 1.2.3.4`, "json: invalid character"},
		{"truncated", validJSON[:len(validJSON)-10], "json: unexpected EOF"},
		{"trailing object", validJSON + `{}`, "json: trailing data after the object"},
		{"array", `[` + validJSON + `]`, "json: json: cannot unmarshal array"},
		{"unknown field", edit(t, `"v":1,`, `"v":1,"extra":true,`), `json: json: unknown field "extra"`},
		{"version 2", edit(t, `"v":1`, `"v":2`), "v: unsupported schema version 2"},
		{"version missing", edit(t, `"v":1,`, ``), "v: unsupported schema version 0"},
		{"version string", edit(t, `"v":1`, `"v":"1"`), "json: json: cannot unmarshal string"},
		{"id missing", edit(t, `"id":"0f8c2a",`, ``), "id: missing"},
		{"id with space", edit(t, `"0f8c2a"`, `"0f8c 2a"`), "id: byte 4 is not printable ASCII"},
		{"id too long", edit(t, `"0f8c2a"`, `"`+strings.Repeat("f", 65)+`"`), "id: longer than 64 bytes"},
		{"unknown op", edit(t, `"op":"add"`, `"op":"ban"`), `op: unknown operation "ban"`},
		{"op case", edit(t, `"op":"add"`, `"op":"ADD"`), `op: unknown operation "ADD"`},
		{"unknown type", edit(t, `"type":"ban"`, `"type":"drop"`), `type: unknown decision type "drop"`},
		{"unknown scope", edit(t, `"scope":"ip"`, `"scope":"country"`), `scope: unknown scope "country"`},
		{"bad ip", edit(t, `"203.0.113.7"`, `"203.0.113.256"`), `value: "203.0.113.256" is not an IP address`},
		{"ip with port", edit(t, `"203.0.113.7"`, `"203.0.113.7:22"`), `is not an IP address`},
		{"ip leading zero", edit(t, `"203.0.113.7"`, `"203.0.113.07"`), `is not an IP address`},
		{"ipv6 not canonical", edit(t, `"203.0.113.7"`, `"2001:DB8::1"`), `value: "2001:DB8::1" is not in canonical form (want "2001:db8::1")`},
		{"ipv6 long form", edit(t, `"203.0.113.7"`, `"2001:db8:0:0:0:0:0:1"`), `is not in canonical form (want "2001:db8::1")`},
		{"4in6", edit(t, `"203.0.113.7"`, `"::ffff:203.0.113.7"`), `is not in canonical form (want "203.0.113.7")`},
		{"zone", edit(t, `"203.0.113.7"`, `"fe80::1%eth0"`), `is not in canonical form (want "fe80::1")`},
		{"unspecified", edit(t, `"203.0.113.7"`, `"0.0.0.0"`), `value: "0.0.0.0" is the unspecified address`},
		{"ip scope with cidr", edit(t, `"203.0.113.7"`, `"203.0.113.0/24"`), `is not an IP address`},
		{"range not masked", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"203.0.113.7/24"`), `value: "203.0.113.7/24" is not in canonical form (want "203.0.113.0/24")`},
		{"range v6 not canonical", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"2001:DB8::/32"`), `is not in canonical form (want "2001:db8::/32")`},
		{"range too broad v4", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"0.0.0.0/0"`), `value: range "0.0.0.0/0" is broader than /8`},
		{"range too broad v4 /7", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"202.0.0.0/7"`), `broader than /8`},
		{"range too broad v6", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"::/0"`), `value: range "::/0" is broader than /32`},
		{"range single ip", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"203.0.113.7/32"`), `is a single address; use scope ip`},
		{"range bad", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"203.0.113.0/33"`), `is not a CIDR range`},
		{"range without bits", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"203.0.113.0"`), `is not a CIDR range`},
		{"bad duration", edit(t, `"4h0m0s"`, `"4 hours"`), `duration: "4 hours" is not a duration`},
		{"long duration field", edit(t, `"4h0m0s"`, `"`+strings.Repeat("1", 33)+`s"`), `duration: longer than 32 bytes`},
		{"until missing on add", edit(t, `"until":"2026-11-25T14:00:05Z",`, ``), `until: missing on an add`},
		{"until equals created", edit(t, `"2026-11-25T14:00:05Z"`, `"2026-11-25T10:00:05Z"`), `until: 2026-11-25T10:00:05Z is not after created_at 2026-11-25T10:00:05Z`},
		{"until before created", edit(t, `"2026-11-25T14:00:05Z"`, `"2026-11-25T09:00:05Z"`), `is not after created_at`},
		{"until too far", edit(t, `"2026-11-25T14:00:05Z"`, `"2046-11-25T14:00:05Z"`), `until: decision lasts longer than`},
		{"until not a time", edit(t, `"2026-11-25T14:00:05Z"`, `"tomorrow"`), `json: parsing time`},
		{"created missing", edit(t, `,"created_at":"2026-11-25T10:00:05Z"`, ``), `created_at: missing`},
		{"origin missing", edit(t, `"origin":"engine",`, ``), `origin: missing`},
		{"origin with newline", edit(t, `"engine"`, `"eng\nine"`), `origin: byte 3 (0x0a) is not one of A-Z a-z 0-9 . _ : / -`},
		{"origin with space", edit(t, `"engine"`, `"eng ine"`), `origin: byte 3 (0x20) is not one of`},
		{"origin with at", edit(t, `"engine"`, `"eng@ine"`), `origin: byte 3 (0x40) is not one of`},
		{"origin with bidi", edit(t, `"engine"`, `"eng\u202eine"`), `origin: byte 3 (0xe2) is not one of`},
		{"origin too long", edit(t, `"engine"`, `"`+strings.Repeat("o", 81)+`"`), `origin: longer than 80 bytes`},
		{"value and Value", edit(t, `"value":"203.0.113.7",`, `"value":"203.0.113.7","Value":"198.51.100.1",`), `json: key "Value" is not a field name (they are lower case)`},
		{"Value alone", edit(t, `"value":"203.0.113.7",`, `"Value":"203.0.113.7",`), `json: key "Value" is not a field name`},
		{"key twice", edit(t, `"value":"203.0.113.7",`, `"value":"198.51.100.1","value":"203.0.113.7",`), `json: key "value" appears twice`},
		{"escaped key twice", edit(t, `"value":"203.0.113.7",`, `"value":"198.51.100.1","val\u0075e":"203.0.113.7",`), `json: key "value" appears twice`},
		{"negative duration", edit(t, `"4h0m0s"`, `"-1h"`), `duration: "-1h" is negative`},
		{"duration disagrees with until", edit(t, `"4h0m0s"`, `"1h0m0s"`), `duration: "1h0m0s" disagrees with until - created_at = 4h0m0s`},
		{"reason with RLO", edit(t, `"host":"web-1"`, `"host":"web-1","reason":"ban \u202eevil"`), `reason: contains control or invalid characters`},
		{"reason with RLO raw", edit(t, `"host":"web-1"`, "\"host\":\"web-1\",\"reason\":\"ban \u202eevil\""), `reason: contains control or invalid characters`},
		{"reason with isolate", edit(t, `"host":"web-1"`, "\"host\":\"web-1\",\"reason\":\"a\u2067b\""), `reason: contains control or invalid characters`},
		{"reason with C1", edit(t, `"host":"web-1"`, `"host":"web-1","reason":"a\u0085b"`), `reason: contains control or invalid characters`},
		{"scenario with LRM", edit(t, `"crowdsecurity/ssh-bf"`, `"ssh\u200ebf"`), `scenario: contains control or invalid characters`},
		{"scenario control", edit(t, `"crowdsecurity/ssh-bf"`, `"ssh\u0007bf"`), `scenario: contains control or invalid characters`},
		{"scenario DEL", edit(t, `"crowdsecurity/ssh-bf"`, `"ssh\u007fbf"`), `scenario: contains control or invalid characters`},
		{"scenario bad utf8", edit(t, `"crowdsecurity/ssh-bf"`, "\"ssh\xffbf\""), `scenario: contains control or invalid characters`},
		{"scenario too long", edit(t, `"crowdsecurity/ssh-bf"`, `"`+long+`"`), `scenario: longer than 256 bytes`},
		{"country lower", edit(t, `"RU"`, `"ru"`), `country: "ru" is not an ISO 3166 alpha-2 code`},
		{"country long", edit(t, `"RU"`, `"RUS"`), `country: "RUS" is not an ISO 3166 alpha-2 code`},
		{"host space", edit(t, `"web-1"`, `"web 1"`), `host: byte 3 is not printable ASCII`},
		{"reason control", edit(t, `"host":"web-1"`, `"host":"web-1","reason":"a\tb"`), `reason: contains control or invalid characters`},
		{"reason too long", edit(t, `"host":"web-1"`, `"host":"web-1","reason":"`+strings.Repeat("r", 513)+`"`), `reason: longer than 512 bytes`},
		{"huge", edit(t, `"host":"web-1"`, `"host":"web-1","reason":"`+strings.Repeat("r", 5000)+`"`), `message too large: 5261 bytes, limit 4096`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := Decode([]byte(c.in), DefaultLimits())
			if err == nil {
				t.Fatalf("accepted: %+v", d)
			}
			if !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %q, want it to contain %q", err, c.err)
			}
			if d != (Decision{}) {
				t.Fatalf("a rejected message returned %+v", d)
			}
		})
	}
}

func TestDecodeTooLargeIsErrTooLarge(t *testing.T) {
	_, err := Decode(make([]byte, 5000), DefaultLimits())
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want ErrTooLarge", err)
	}
}

func TestDecodeAccepts(t *testing.T) {
	cases := []struct{ name, in string }{
		{"ipv6", edit(t, `"203.0.113.7"`, `"2001:db8::7"`)},
		{"range v4 /8", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"10.0.0.0/8"`)},
		{"range v6 /32", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"2001:db8::/32"`)},
		{"range v6 /127", edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"2001:db8::/127"`)},
		{"captcha", edit(t, `"type":"ban"`, `"type":"captcha"`)},
		{"throttle", edit(t, `"type":"ban"`, `"type":"throttle"`)},
		{"delete without until", edit(t, `"op":"add"`, `"op":"delete"`)},
		{"no optional fields", `{"v":1,"id":"x","op":"add","type":"ban","scope":"ip","value":"1.2.3.4","until":"2026-01-01T01:00:00Z","origin":"cli","created_at":"2026-01-01T00:00:00Z"}`},
		{"offset times", edit(t, `"2026-11-25T14:00:05Z"`, `"2026-11-25T15:00:05+01:00"`)},
		{"fractional seconds", edit(t, `"2026-11-25T14:00:05Z"`, `"2026-11-25T14:00:05.123456789Z"`)},
		{"unicode reason", edit(t, `"host":"web-1"`, `"host":"web-1","reason":"brute force über ssh ✓"`)},
		{"whitespace", strings.ReplaceAll(validJSON, `,"`, ` ,  "`)},
		{"trailing whitespace", validJSON + "\n  "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Decode([]byte(c.in), DefaultLimits()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLimitsAreConfigurable(t *testing.T) {
	in := []byte(edit(t, `"scope":"ip","value":"203.0.113.7"`, `"scope":"range","value":"10.0.0.0/8"`))
	lim := DefaultLimits()
	lim.MinRangeBitsV4 = 16
	if _, err := Decode(in, lim); err == nil || !strings.Contains(err.Error(), "broader than /16") {
		t.Fatalf("error %v, want broader than /16", err)
	}
	lim = DefaultLimits()
	lim.MaxMessageBytes = 100
	if _, err := Decode([]byte(validJSON), lim); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("error %v, want ErrTooLarge", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 5, 123456789, time.UTC)
	for _, p := range []string{"203.0.113.7/32", "2001:db8::7/128", "198.51.100.0/24", "2001:db8:1::/48"} {
		d := NewDecision(OpAdd, TypeBan, netip.MustParsePrefix(p), 4*time.Hour, "cli", now)
		d.Reason = "round trip"
		b, err := Encode(&d, DefaultLimits())
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		got, err := Decode(b, DefaultLimits())
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !sameDecision(got, d) {
			t.Fatalf("%s: round trip\ngot  %+v\nwant %+v", p, got, d)
		}
	}
}

func TestEncodeRejectsInvalid(t *testing.T) {
	d := NewDecision(OpAdd, TypeBan, netip.MustParsePrefix("0.0.0.0/0"), time.Hour, "cli", time.Now())
	if _, err := Encode(&d, DefaultLimits()); err == nil || !strings.Contains(err.Error(), "broader than /8") {
		t.Fatalf("error %v", err)
	}
}

func TestNewDecision(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 5, 123456789, time.FixedZone("CET", 3600))
	cases := []struct {
		prefix string
		scope  Scope
		value  string
	}{
		{"203.0.113.7/32", ScopeIP, "203.0.113.7"},
		{"::ffff:203.0.113.7/128", ScopeIP, "203.0.113.7"},
		{"::ffff:203.0.113.0/120", ScopeRange, "203.0.113.0/24"},
		{"198.51.100.77/24", ScopeRange, "198.51.100.0/24"},
		{"2001:db8::7/128", ScopeIP, "2001:db8::7"},
		{"2001:db8:0:0:1::/64", ScopeRange, "2001:db8::/64"},
	}
	for _, c := range cases {
		d := NewDecision(OpAdd, TypeBan, netip.MustParsePrefix(c.prefix), 90*time.Minute, "cli", now)
		if d.Scope != c.scope || d.Value != c.value {
			t.Errorf("%s: scope %s value %s", c.prefix, d.Scope, d.Value)
		}
		if err := d.Validate(DefaultLimits()); err != nil {
			t.Errorf("%s: %v", c.prefix, err)
		}
		wantCreated := time.Date(2026, 11, 25, 9, 0, 5, 123000000, time.UTC)
		if !d.CreatedAt.Equal(wantCreated) || d.CreatedAt.Location() != time.UTC {
			t.Errorf("%s: created_at %s, want %s", c.prefix, d.CreatedAt, wantCreated)
		}
		if !d.Until.Equal(wantCreated.Add(90*time.Minute)) || d.Duration != "1h30m0s" {
			t.Errorf("%s: until %s duration %s", c.prefix, d.Until, d.Duration)
		}
		if len(d.ID) != 32 || d.V != 1 || d.Origin != "cli" {
			t.Errorf("%s: id %q v %d origin %q", c.prefix, d.ID, d.V, d.Origin)
		}
	}
	del := NewDecision(OpDelete, TypeBan, netip.MustParsePrefix("203.0.113.7/32"), 0, "cli", now)
	if !del.Until.IsZero() || del.Duration != "0s" {
		t.Fatalf("delete has until %s duration %q", del.Until, del.Duration)
	}
	if err := del.Validate(DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	if a, b := NewDecision(OpAdd, TypeBan, netip.MustParsePrefix("1.2.3.4/32"), time.Hour, "x", now), NewDecision(OpAdd, TypeBan, netip.MustParsePrefix("1.2.3.4/32"), time.Hour, "x", now); a.ID == b.ID {
		t.Fatal("two decisions share an id")
	}
}

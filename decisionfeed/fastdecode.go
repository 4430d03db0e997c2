package decisionfeed

import "unicode/utf8"

// A decoder decodes messages like Decode, first with a fast path for the
// exact shape this package and the seed's producers write (one flat object,
// known lower-case keys each at most once, strings without escapes, v a
// plain integer), falling back to the strict encoding/json decoder for
// anything else. Both paths accept and reject the same messages with the
// same results and errors; FuzzDecode holds them to it. A decoder with an
// intern table shares the storage of repeated strings (op, type, scenario,
// origin, ...) between decisions, which matters when a million of them are
// held at once. It is not safe for concurrent use.
type decoder struct {
	lim    Limits
	intern map[string]string
	buf    []byte
}

// maxInterned bounds a decoder's intern table, so free-text fields cannot
// grow it without limit.
const maxInterned = 4096

// newDecoder returns a decoder that interns repeated strings.
func newDecoder(lim Limits) *decoder {
	return &decoder{lim: lim, intern: make(map[string]string, 64)}
}

// decode is Decode.
func (dc *decoder) decode(b []byte) (Decision, error) {
	if err := checkSize(b, dc.lim); err != nil {
		return Decision{}, err
	}
	d, ok := dc.fast(b)
	if !ok {
		return decodeStrict(b, dc.lim)
	}
	if err := d.Validate(dc.lim); err != nil {
		return Decision{}, err
	}
	return d, nil
}

// The fields of schema v1, as bits of a seen-set.
const (
	fV = iota
	fID
	fOp
	fType
	fScope
	fValue
	fDuration
	fUntil
	fScenario
	fOrigin
	fCreatedAt
	fCountry
	fHost
	fReason
)

func fieldOf(k []byte) int {
	switch string(k) {
	case "v":
		return fV
	case "id":
		return fID
	case "op":
		return fOp
	case "type":
		return fType
	case "scope":
		return fScope
	case "value":
		return fValue
	case "duration":
		return fDuration
	case "until":
		return fUntil
	case "scenario":
		return fScenario
	case "origin":
		return fOrigin
	case "created_at":
		return fCreatedAt
	case "country":
		return fCountry
	case "host":
		return fHost
	case "reason":
		return fReason
	}
	return -1
}

// fast parses the common shape; ok=false means "ask the strict decoder",
// never "invalid".
func (dc *decoder) fast(b []byte) (d Decision, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return d, false
	}
	i++
	var (
		seen      uint16
		id, value []byte
	)
	for {
		key, j, ok := rawString(b, skipSpace(b, i))
		if !ok {
			return d, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return d, false
		}
		i = skipSpace(b, i+1)
		f := fieldOf(key)
		if f < 0 || seen&(1<<f) != 0 {
			return d, false
		}
		seen |= 1 << f
		if f == fV {
			n, j, ok := smallInt(b, i)
			if !ok {
				return d, false
			}
			d.V, i = n, j
		} else {
			s, j, ok := rawString(b, i)
			if !ok {
				return d, false
			}
			switch f {
			case fID:
				id = s
			case fValue:
				value = s
			case fUntil, fCreatedAt:
				t := &d.Until
				if f == fCreatedAt {
					t = &d.CreatedAt
				}
				// The strict decoder calls this very method on the raw
				// literal; on an error it gives its own message.
				if t.UnmarshalJSON(b[i:j]) != nil {
					return d, false
				}
			case fOp:
				d.Op = Op(dc.word(s))
			case fType:
				d.Type = Type(dc.word(s))
			case fScope:
				d.Scope = Scope(dc.word(s))
			case fDuration:
				d.Duration = dc.str(s)
			case fScenario:
				d.Scenario = dc.str(s)
			case fOrigin:
				d.Origin = dc.str(s)
			case fCountry:
				d.Country = dc.str(s)
			case fHost:
				d.Host = dc.str(s)
			case fReason:
				d.Reason = dc.str(s)
			}
			i = j
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return d, false
		}
		if b[i] == '}' {
			i++
			break
		}
		if b[i] != ',' {
			return d, false
		}
		i++
	}
	if skipSpace(b, i) != len(b) {
		return d, false
	}
	// One allocation holds both unique strings of the decision.
	dc.buf = append(append(dc.buf[:0], id...), value...)
	both := string(dc.buf)
	d.ID, d.Value = both[:len(id)], both[len(id):]
	return d, true
}

// str returns s as a string, shared with earlier equal strings when the
// decoder interns.
func (dc *decoder) str(s []byte) string {
	if len(s) == 0 {
		return ""
	}
	if dc.intern == nil {
		return string(s)
	}
	if v, ok := dc.intern[string(s)]; ok {
		return v
	}
	v := string(s)
	if len(dc.intern) < maxInterned {
		dc.intern[v] = v
	}
	return v
}

// word is str for the few words of op, type and scope, without a lookup.
func (dc *decoder) word(s []byte) string {
	switch string(s) {
	case "add":
		return string(OpAdd)
	case "delete":
		return string(OpDelete)
	case "ban":
		return string(TypeBan)
	case "captcha":
		return string(TypeCaptcha)
	case "throttle":
		return string(TypeThrottle)
	case "ip":
		return string(ScopeIP)
	case "range":
		return string(ScopeRange)
	}
	return dc.str(s)
}

// skipSpace skips JSON whitespace from i.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// rawString reads a JSON string at i that needs no unescaping: no
// backslash, no control byte, valid UTF-8. It returns the content and the
// index after the closing quote.
func rawString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	ascii := true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s := b[i+1 : j]
			if !ascii && !utf8.Valid(s) {
				return nil, 0, false
			}
			return s, j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		case c >= 0x80:
			ascii = false
		}
	}
	return nil, 0, false
}

// smallInt reads a non-negative JSON integer of at most 9 digits at i.
func smallInt(b []byte, i int) (int, int, bool) {
	j, n := i, 0
	for j < len(b) && j-i < 10 && b[j] >= '0' && b[j] <= '9' {
		n = n*10 + int(b[j]-'0')
		j++
	}
	if j == i || j-i > 9 || (b[i] == '0' && j-i > 1) {
		return 0, 0, false
	}
	return n, j, true
}

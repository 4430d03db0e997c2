package event

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// encodingVersion is the first byte of the binary form. A decoder rejects
// other versions so that instances of different builds fail loudly.
const encodingVersion = 1

// MaxEncodedSize bounds the binary form accepted by UnmarshalBinary.
const MaxEncodedSize = 256 << 10

const (
	flagStatic = 1 << iota
	flagInvalidUser
	flagHasTime
)

// strFields lists the string fields in wire order.
func (e *Event) strFields() [10]*string {
	return [10]*string{&e.Type, &e.Parser, &e.Host, &e.Method, &e.Path, &e.Proto,
		&e.UserAgent, &e.Referer, &e.User, &e.Message}
}

// AppendBinary appends the binary form of e to b: a version byte, flags,
// time, address, status, bytes and the string fields, length-prefixed.
func (e *Event) AppendBinary(b []byte) ([]byte, error) {
	var flags byte
	if e.Static {
		flags |= flagStatic
	}
	if e.InvalidUser {
		flags |= flagInvalidUser
	}
	if !e.Time.IsZero() {
		flags |= flagHasTime
	}
	if e.Status < 0 || e.Bytes < 0 {
		return b, fmt.Errorf("encode event: negative status %d or bytes %d", e.Status, e.Bytes)
	}
	b = append(b, encodingVersion, flags)
	if flags&flagHasTime != 0 {
		b = binary.AppendVarint(b, e.Time.UnixNano())
	}
	a := e.Source.WithZone("")
	switch {
	case !a.IsValid():
		b = append(b, 0)
	case a.Is4():
		v := a.As4()
		b = append(b, 4)
		b = append(b, v[:]...)
	default:
		v := a.As16()
		b = append(b, 16)
		b = append(b, v[:]...)
	}
	b = binary.AppendUvarint(b, uint64(e.Status))
	b = binary.AppendUvarint(b, uint64(e.Bytes))
	for _, s := range e.strFields() {
		b = binary.AppendUvarint(b, uint64(len(*s)))
		b = append(b, *s...)
	}
	if len(b) > MaxEncodedSize {
		return b, fmt.Errorf("encode event: %d bytes, limit %d", len(b), MaxEncodedSize)
	}
	return b, nil
}

// MarshalBinary returns the binary form of e (see AppendBinary).
func (e *Event) MarshalBinary() ([]byte, error) {
	return e.AppendBinary(make([]byte, 0, 64+len(e.Path)+len(e.UserAgent)+len(e.Referer)+len(e.Message)))
}

var errShort = errors.New("truncated")

// UnmarshalBinary decodes the binary form written by AppendBinary. The
// string fields share one copy of data. The error names the field at fault.
func (e *Event) UnmarshalBinary(data []byte) error {
	if len(data) > MaxEncodedSize {
		return fmt.Errorf("decode event: %d bytes, limit %d", len(data), MaxEncodedSize)
	}
	if len(data) < 2 {
		return fmt.Errorf("decode event: header: %w", errShort)
	}
	if data[0] != encodingVersion {
		return fmt.Errorf("decode event: unsupported version %d", data[0])
	}
	flags := data[1]
	if flags&^(flagStatic|flagInvalidUser|flagHasTime) != 0 {
		return fmt.Errorf("decode event: unknown flags %#x", flags)
	}
	// One string copy for all string fields.
	s := string(data)
	p := 2
	var ev Event
	ev.Static = flags&flagStatic != 0
	ev.InvalidUser = flags&flagInvalidUser != 0
	if flags&flagHasTime != 0 {
		ns, n := binary.Varint(data[p:])
		if n <= 0 {
			return fmt.Errorf("decode event: time: %w", errShort)
		}
		p += n
		ev.Time = time.Unix(0, ns).UTC()
	}
	if p >= len(data) {
		return fmt.Errorf("decode event: address: %w", errShort)
	}
	alen := int(data[p])
	p++
	if len(data)-p < alen {
		return fmt.Errorf("decode event: address: %w", errShort)
	}
	switch alen {
	case 0:
	case 4:
		ev.Source = netip.AddrFrom4([4]byte(data[p : p+4]))
	case 16:
		ev.Source = netip.AddrFrom16([16]byte(data[p : p+16]))
	default:
		return fmt.Errorf("decode event: address: length %d", alen)
	}
	p += alen
	st, n := binary.Uvarint(data[p:])
	if n <= 0 || st > 999 {
		return fmt.Errorf("decode event: status: bad value")
	}
	p += n
	ev.Status = int(st)
	by, n := binary.Uvarint(data[p:])
	if n <= 0 || by > 1<<62 {
		return fmt.Errorf("decode event: bytes: bad value")
	}
	p += n
	ev.Bytes = int64(by)
	names := [...]string{"type", "parser", "host", "method", "path", "proto", "user_agent", "referer", "user", "message"}
	for i, f := range ev.strFields() {
		l, n := binary.Uvarint(data[p:])
		if n <= 0 {
			return fmt.Errorf("decode event: %s: %w", names[i], errShort)
		}
		p += n
		if l > uint64(len(data)-p) {
			return fmt.Errorf("decode event: %s: %w", names[i], errShort)
		}
		*f = s[p : p+int(l)]
		p += int(l)
	}
	if p != len(data) {
		return fmt.Errorf("decode event: %d trailing bytes", len(data)-p)
	}
	*e = ev
	return nil
}

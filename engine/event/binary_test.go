package event

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestBinaryRoundTrip(t *testing.T) {
	events := []Event{
		{},
		{Time: time.Date(2026, 11, 25, 10, 0, 5, 123, time.UTC), Source: netip.MustParseAddr("185.220.101.5"),
			Type: TypeHTTPAccess, Parser: "nginx", Host: "web-1", Method: "GET", Path: "/x?y=1", Proto: "HTTP/1.1",
			Status: 404, Bytes: 1 << 40, UserAgent: "sqlmap/1.5", Referer: "-", Static: true},
		{Time: time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), Source: netip.MustParseAddr("2001:db8::1"),
			Type: TypeSSHFailedAuth, Parser: "sshd", User: "oracle db", InvalidUser: true, Message: "Failed password"},
	}
	for _, ev := range events {
		b, err := ev.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Event
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if got != ev {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, ev)
		}
	}
}

func TestUnmarshalBinaryErrors(t *testing.T) {
	ev := Event{Source: netip.MustParseAddr("192.0.2.1"), Type: TypeHTTPAccess, Path: "/a"}
	good, _ := ev.MarshalBinary()
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "decode event: header: truncated"},
		{"version", append([]byte{9}, good[1:]...), "decode event: unsupported version 9"},
		{"flags", append([]byte{1, 0x80}, good[2:]...), "decode event: unknown flags 0x80"},
		{"address length", []byte{1, 0, 5, 1, 2, 3, 4, 5}, "decode event: address: length 5"},
		{"truncated string", good[:len(good)-1], "decode event: message: truncated"},
		{"trailing", append(append([]byte{}, good...), 0), "decode event: 1 trailing bytes"},
		{"status", []byte{1, 0, 0, 0xe8, 0x07}, "decode event: status: bad value"},
	}
	for _, tt := range tests {
		var e Event
		err := e.UnmarshalBinary(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	big := Event{Message: strings.Repeat("x", MaxEncodedSize)}
	if _, err := big.MarshalBinary(); err == nil {
		t.Error("oversized event encoded")
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	ev := Event{Time: time.Unix(1, 2), Source: netip.MustParseAddr("2001:db8::1"), Type: TypeSSHInvalidUser, User: "x"}
	b, _ := ev.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		if err := e.UnmarshalBinary(data); err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		out, err := e.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again Event
		if err := again.UnmarshalBinary(out); err != nil || again != e {
			t.Fatalf("re-decode: %v, %+v != %+v", err, again, e)
		}
	})
}

package decisionfeed

import "testing"

// BenchmarkDecode compares the fast path with the strict decoder on a
// typical engine decision.
func BenchmarkDecode(b *testing.B) {
	msg := []byte(validJSON)
	lim := DefaultLimits()
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := decodeStrict(msg, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := Decode(msg, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast-interning", func(b *testing.B) {
		dc := newDecoder(lim)
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := dc.decode(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

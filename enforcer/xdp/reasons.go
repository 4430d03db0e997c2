//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/portcullis-ips/portcullis/bpf"
)

// OverflowReason names the shared counter of bans whose (reason, origin)
// pair arrived after every reason id was taken, or that had neither.
const OverflowReason = "(overflow)"

// reasonName is the pair a reason id stands for.
type reasonName struct {
	reason, origin string
}

// reasonTable assigns reason ids, the indexes of the per-reason drop
// counters. The assignments live in the pinned portcullis_rsn map, so a
// restarted daemon keeps them and the counters keep their meaning. Ids are
// never reused; id 0 is the overflow counter.
type reasonTable struct {
	m     *ebpf.Map
	max   uint32
	ids   map[reasonName]uint32
	names []reasonName // index is the id
}

func loadReasons(m *ebpf.Map, max uint32) (*reasonTable, error) {
	t := &reasonTable{m: m, max: max, ids: make(map[reasonName]uint32), names: []reasonName{{}}}
	var (
		id uint32
		v  bpf.XdpReasonName
	)
	it := m.Iterate()
	for it.Next(&id, &v) {
		n := reasonName{reason: cString(v.Reason[:]), origin: cString(v.Origin[:])}
		if id == 0 || n == (reasonName{}) {
			continue
		}
		for uint32(len(t.names)) <= id {
			t.names = append(t.names, reasonName{})
		}
		t.names[id] = n
		t.ids[n] = id
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read portcullis_rsn: %w", err)
	}
	return t, nil
}

// id returns the id of (reason, origin), assigning and storing a new one if
// needed; 0 when the table is full or both are empty.
func (t *reasonTable) id(reason, origin string) (uint32, error) {
	n := reasonName{reason: reason, origin: origin}
	if n == (reasonName{}) {
		return 0, nil
	}
	if id, ok := t.ids[n]; ok {
		return id, nil
	}
	var v bpf.XdpReasonName
	if err := putCString(v.Reason[:], reason); err != nil {
		return 0, fmt.Errorf("reason: %w", err)
	}
	if err := putCString(v.Origin[:], origin); err != nil {
		return 0, fmt.Errorf("origin: %w", err)
	}
	if uint32(len(t.names)) >= t.max {
		return 0, nil
	}
	id := uint32(len(t.names))
	if err := t.m.Update(id, &v, ebpf.UpdateAny); err != nil {
		return 0, fmt.Errorf("write portcullis_rsn[%d]: %w", id, err)
	}
	t.names = append(t.names, n)
	t.ids[n] = id
	return id, nil
}

// name returns the pair for id; the zero pair for unknown ids.
func (t *reasonTable) name(id uint32) reasonName {
	if id < uint32(len(t.names)) {
		return t.names[id]
	}
	return reasonName{}
}

// len returns one more than the highest id in use.
func (t *reasonTable) len() uint32 { return uint32(len(t.names)) }

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// putCString copies s into dst, which it must fit; s must hold no NUL.
func putCString(dst []int8, s string) error {
	if len(s) > len(dst) {
		return fmt.Errorf("%d bytes, limit %d", len(s), len(dst))
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains a NUL byte")
	}
	for i := 0; i < len(s); i++ {
		dst[i] = int8(s[i])
	}
	return nil
}

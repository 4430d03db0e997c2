package bpf

import (
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
)

// TestSpec checks the committed object against what the Go side relies on:
// map kinds, key and value sizes matching the generated types, and one XDP
// program. It parses the ELF only, so it needs no privileges.
func TestSpec(t *testing.T) {
	spec, err := LoadXdp()
	if err != nil {
		t.Fatal(err)
	}
	maps := []struct {
		name       string
		typ        ebpf.MapType
		key, value uintptr
		flags      uint32
	}{
		{XdpMapPortcullisIp4, ebpf.Hash, 4, unsafe.Sizeof(XdpBan{}), 0},
		{XdpMapPortcullisIp6, ebpf.Hash, unsafe.Sizeof(XdpAddr6{}), unsafe.Sizeof(XdpBan{}), 0},
		{XdpMapPortcullisNet4, ebpf.LPMTrie, unsafe.Sizeof(XdpLpmKey4{}), unsafe.Sizeof(XdpBan{}), 1},
		{XdpMapPortcullisNet6, ebpf.LPMTrie, unsafe.Sizeof(XdpLpmKey6{}), unsafe.Sizeof(XdpBan{}), 1},
		{XdpMapPortcullisCfg, ebpf.Array, 4, unsafe.Sizeof(XdpConfig{}), 0},
		{XdpMapPortcullisDrop, ebpf.PerCPUArray, 4, unsafe.Sizeof(XdpDropCount{}), 0},
		{XdpMapPortcullisRsn, ebpf.Array, 4, unsafe.Sizeof(XdpReasonName{}), 0},
	}
	// Beside these: portcullis_clk (the clock the never-attached
	// portcullis_clock program reads for user space) and the compiler's
	// data sections (".rodata" and the like).
	named := 0
	for name := range spec.Maps {
		if !strings.HasPrefix(name, ".") {
			named++
		}
	}
	if _, ok := spec.Maps[XdpMapPortcullisClk]; !ok || named != len(maps)+1 {
		t.Errorf("object has %d named maps (clock map present: %v), want %d", named, ok, len(maps)+1)
	}
	for _, want := range maps {
		m, ok := spec.Maps[want.name]
		if !ok {
			t.Errorf("map %s missing", want.name)
			continue
		}
		if m.Type != want.typ || uintptr(m.KeySize) != want.key || uintptr(m.ValueSize) != want.value || m.Flags != want.flags {
			t.Errorf("map %s: %s key %d value %d flags %#x, want %s key %d value %d flags %#x",
				want.name, m.Type, m.KeySize, m.ValueSize, m.Flags, want.typ, want.key, want.value, want.flags)
		}
	}
	if got := unsafe.Sizeof(XdpBan{}); got != 16 {
		t.Errorf("ban value is %d bytes, want 16 with no hidden padding", got)
	}
	p, ok := spec.Programs[XdpProgPortcullisXdp]
	_, clock := spec.Programs[XdpProgPortcullisClock]
	if !ok || p.Type != ebpf.XDP || !clock || len(spec.Programs) != 2 {
		t.Fatalf("programs = %v, want the XDP program %s and the clock reader %s", spec.Programs, XdpProgPortcullisXdp, XdpProgPortcullisClock)
	}
}

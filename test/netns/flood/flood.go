//go:build linux

// Package flood sends a bounded flood of crafted UDP packets out of one
// interface, for drop-rate benchmarks on veth pairs (this kernel has no
// pktgen). It writes whole Ethernet frames to an AF_PACKET socket with
// sendmmsg, bypassing the qdisc, cycling over a set of source addresses;
// every run stops after a packet count or a timeout, whichever comes first.
//
// Open must be called inside the network namespace of the interface (a
// socket keeps the namespace it was created in); Run may be called from
// anywhere.
package flood

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Config describes the flood.
type Config struct {
	// Iface is the interface to send on.
	Iface string
	// SrcMAC and DstMAC are the frame's addresses: the sender's interface
	// and the receiver's (the veth peer).
	SrcMAC, DstMAC net.HardwareAddr
	// Sources are the packets' source addresses, used in turn; all of one
	// family, the family of Dst.
	Sources []netip.Addr
	// Dst and DstPort are where the packets go.
	Dst     netip.Addr
	DstPort uint16
	// Payload is the UDP payload length in bytes.
	Payload int
	// Batch is how many frames one sendmmsg call carries (default 64).
	Batch int
}

// Limits on a flood's shape.
const (
	maxBatch   = 1024
	maxPayload = 1400
	maxSources = 1 << 20
)

func (c *Config) validate() error {
	switch {
	case len(c.SrcMAC) != 6 || len(c.DstMAC) != 6:
		return errors.New("flood: src and dst MAC must be 6 bytes")
	case len(c.Sources) == 0 || len(c.Sources) > maxSources:
		return fmt.Errorf("flood: %d sources, want 1..%d", len(c.Sources), maxSources)
	case !c.Dst.IsValid():
		return errors.New("flood: no destination")
	case c.Payload < 0 || c.Payload > maxPayload:
		return fmt.Errorf("flood: payload %d outside 0..%d", c.Payload, maxPayload)
	case c.Batch < 0 || c.Batch > maxBatch:
		return fmt.Errorf("flood: batch %d outside 1..%d", c.Batch, maxBatch)
	}
	for _, s := range c.Sources {
		if s.Is4() != c.Dst.Is4() {
			return fmt.Errorf("flood: source %s and destination %s differ in family", s, c.Dst)
		}
	}
	return nil
}

// Sender is an open flood socket with its frames built.
type Sender struct {
	fd     int
	frames [][]byte
	batch  int
}

// Open builds the frames and opens the socket, in the calling thread's
// network namespace.
func Open(cfg Config) (*Sender, error) {
	if cfg.Batch == 0 {
		cfg.Batch = 64
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName(cfg.Iface)
	if err != nil {
		return nil, fmt.Errorf("flood: interface %s: %w", cfg.Iface, err)
	}
	proto := uint16(unix.ETH_P_IP)
	if cfg.Dst.Is6() {
		proto = unix.ETH_P_IPV6
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("flood: packet socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		_ = unix.Close(fd) // unused socket: the setsockopt error is the one to report
		return nil, fmt.Errorf("flood: qdisc bypass: %w", err)
	}
	// Protocol 0: the socket only sends, it never receives a copy.
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
		_ = unix.Close(fd) // unused socket: the bind error is the one to report
		return nil, fmt.Errorf("flood: bind %s: %w", cfg.Iface, err)
	}
	s := &Sender{fd: fd, batch: cfg.Batch}
	for _, src := range cfg.Sources {
		s.frames = append(s.frames, Frame(cfg.SrcMAC, cfg.DstMAC, proto, src, cfg.Dst, cfg.DstPort, cfg.Payload))
	}
	return s, nil
}

// Close closes the socket.
func (s *Sender) Close() error { return unix.Close(s.fd) }

// Result is what one Run did.
type Result struct {
	// Sent counts frames the kernel accepted.
	Sent int
	// Elapsed is the wall time of the run.
	Elapsed time.Duration
	// CPU is the CPU time of the sending thread. On veth the receiving
	// side's processing (XDP, netfilter, the stack) mostly runs as a
	// softirq in the sender's context, and without IRQ time accounting
	// the kernel charges it to the sender, so this is most of the cost
	// of handling the packets too.
	CPU time.Duration
}

// Run sends up to n frames, for at most timeout (and until ctx ends), on
// one OS thread whose CPU time it reports.
func (s *Sender) Run(ctx context.Context, n int, timeout time.Duration) (Result, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var t0, t1 unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0); err != nil {
		return Result{}, fmt.Errorf("flood: thread clock: %w", err)
	}
	res, err := s.run(ctx, n, timeout)
	if cerr := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1); cerr == nil {
		res.CPU = time.Duration(t1.Nano() - t0.Nano())
	}
	return res, err
}

func (s *Sender) run(ctx context.Context, n int, timeout time.Duration) (Result, error) {
	msgs := make([]unix.Mmsghdr, s.batch)
	iovs := make([]unix.Iovec, s.batch)
	start := time.Now()
	deadline := start.Add(timeout)
	next := 0
	sent := 0
	for sent < n {
		if sent%(s.batch*64) == 0 {
			if ctx.Err() != nil || time.Now().After(deadline) {
				break
			}
		}
		k := min(s.batch, n-sent)
		for i := range k {
			f := s.frames[next]
			next++
			if next == len(s.frames) {
				next = 0
			}
			iovs[i].Base = &f[0]
			iovs[i].SetLen(len(f))
			msgs[i].Hdr.Iov = &iovs[i]
			msgs[i].Hdr.SetIovlen(1)
		}
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(k), 0, 0, 0)
		if errno != 0 {
			if errno == unix.ENOBUFS || errno == unix.EAGAIN || errno == unix.EINTR {
				continue
			}
			return Result{Sent: sent, Elapsed: time.Since(start)}, fmt.Errorf("flood: sendmmsg: %w", errno)
		}
		sent += int(r)
	}
	return Result{Sent: sent, Elapsed: time.Since(start)}, nil
}

// Frame builds one Ethernet frame carrying a UDP datagram from src to
// dst:port (source port 9, the discard port) with a zero payload of the
// given length, checksums filled in.
func Frame(srcMAC, dstMAC net.HardwareAddr, ethType uint16, src, dst netip.Addr, port uint16, payload int) []byte {
	const eth, udp = 14, 8
	ipLen := 20
	if dst.Is6() {
		ipLen = 40
	}
	b := make([]byte, eth+ipLen+udp+payload)
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:14], ethType)
	ip := b[eth : eth+ipLen]
	u := b[eth+ipLen:]
	udpLen := udp + payload
	binary.BigEndian.PutUint16(u[0:2], 9)
	binary.BigEndian.PutUint16(u[2:4], port)
	binary.BigEndian.PutUint16(u[4:6], uint16(udpLen))
	var pseudo []byte
	if dst.Is4() {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen+udpLen))
		ip[8] = 64 // TTL
		ip[9] = unix.IPPROTO_UDP
		s4, d4 := src.As4(), dst.As4()
		copy(ip[12:16], s4[:])
		copy(ip[16:20], d4[:])
		binary.BigEndian.PutUint16(ip[10:12], checksum(ip, 0))
		pseudo = append(append(append([]byte{}, s4[:]...), d4[:]...), 0, unix.IPPROTO_UDP, byte(udpLen>>8), byte(udpLen))
	} else {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:6], uint16(udpLen))
		ip[6] = unix.IPPROTO_UDP
		ip[7] = 64 // hop limit
		s16, d16 := src.As16(), dst.As16()
		copy(ip[8:24], s16[:])
		copy(ip[24:40], d16[:])
		pseudo = append(append(append([]byte{}, s16[:]...), d16[:]...), 0, 0, byte(udpLen>>8), byte(udpLen), 0, 0, 0, unix.IPPROTO_UDP)
	}
	c := checksum(u, sum(pseudo))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:8], c)
	return b
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

// checksum is the Internet checksum of b, starting from a partial sum.
func checksum(b []byte, initial uint32) uint16 {
	s := initial + sum(b)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

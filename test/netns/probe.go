//go:build linux

package netns

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Proto is a kind of probe.
type Proto string

// The probes.
const (
	TCP  Proto = "tcp"  // a TCP connect to the victim's TCP server
	UDP  Proto = "udp"  // a datagram to the victim's UDP echo server, and its echo
	ICMP Proto = "icmp" // an ICMP or ICMPv6 echo request, and its reply
)

// Protos lists every probe.
var Protos = []Proto{TCP, UDP, ICMP}

// Servers are the victim's listeners the probes talk to. Both listen on
// every address of both families.
type Servers struct {
	TCPPort, UDPPort uint16
}

// Serve starts a TCP server (accept, then close) and a UDP echo server in
// n, on ports the kernel picks, and stops them at cleanup.
func (n *NS) Serve(t testing.TB) Servers {
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		if ln, err = net.Listen("tcp", ":0"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", ":0")
		return err
	})
	if err != nil {
		t.Fatalf("servers in %s: %v", n.Name, err)
	}
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:k], from)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		_ = pc.Close()
		<-done
		<-done
	})
	return Servers{
		TCPPort: uint16(ln.Addr().(*net.TCPAddr).Port),
		UDPPort: uint16(pc.LocalAddr().(*net.UDPAddr).Port),
	}
}

var probeSeq atomic.Uint32

// Probe sends one probe of kind p from src (an address of n) to dst and
// waits at most timeout for the answer. It returns nil when the answer
// came, and an error saying what was missing otherwise.
func (n *NS) Probe(p Proto, src, dst netip.Addr, srv Servers, timeout time.Duration) error {
	switch p {
	case TCP:
		return n.probeTCP(src, netip.AddrPortFrom(dst, srv.TCPPort), timeout)
	case UDP:
		return n.probeUDP(src, netip.AddrPortFrom(dst, srv.UDPPort), timeout)
	case ICMP:
		return n.probePing(src, dst, timeout)
	}
	return fmt.Errorf("unknown probe %q", p)
}

func (n *NS) probeTCP(src netip.Addr, dst netip.AddrPort, timeout time.Duration) error {
	var c net.Conn
	err := n.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		c, err = d.Dial("tcp", dst.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("tcp connect %s -> %s: %w", src, dst, err)
	}
	return c.Close()
}

func (n *NS) probeUDP(src netip.Addr, dst netip.AddrPort, timeout time.Duration) (err error) {
	var c *net.UDPConn
	err = n.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		return fmt.Errorf("udp socket %s -> %s: %w", src, dst, err)
	}
	defer closeInto(c, &err)
	token := []byte("portcullis-probe-" + strconv.FormatUint(uint64(probeSeq.Add(1)), 10))
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write(token); err != nil {
		return fmt.Errorf("udp send %s -> %s: %w", src, dst, err)
	}
	buf := make([]byte, 256)
	for {
		k, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("udp echo %s -> %s: %w", src, dst, err)
		}
		if bytes.Equal(buf[:k], token) {
			return nil
		}
	}
}

func (n *NS) probePing(src, dst netip.Addr, timeout time.Duration) (err error) {
	network, proto := "ip4:icmp", 1
	var typ, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, proto = "ip6:ipv6-icmp", 58
		typ, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	err = n.Do(func() error {
		var err error
		c, err = icmp.ListenPacket(network, src.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("icmp socket %s: %w", src, err)
	}
	defer closeInto(c, &err)
	id, seq := os.Getpid()&0xffff, int(probeSeq.Add(1)&0xffff)
	payload := []byte("portcullis-ping")
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return err
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("icmp send %s -> %s: %w", src, dst, err)
	}
	buf := make([]byte, 1500)
	for {
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("icmp echo %s -> %s: %w", src, dst, err)
		}
		m, err := icmp.ParseMessage(proto, buf[:k])
		if err != nil || m.Type != reply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		ipa, _ := from.(*net.IPAddr)
		if ok && ipa != nil && e.ID == id && e.Seq == seq && bytes.Equal(e.Data, payload) {
			if got, _ := netip.AddrFromSlice(ipa.IP); got.Unmap() == dst {
				return nil
			}
		}
	}
}

// DialContext dials from inside n, for clients (HTTP, Kafka) that should
// reach a server in n, its loopback say.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Forward listens on addr inside n and relays every connection to the same
// addr dialled from the caller's namespace, until cleanup. It makes a
// server on the host's loopback (a test broker) reachable at the same
// address from a process inside n, which has a loopback of its own.
func (n *NS) Forward(t testing.TB, addr string) {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("forward %s in %s: %v", addr, n.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relay(ctx, c, addr)
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		<-done
	})
}

// closeInto closes c, keeping its error in *err unless *err holds one.
func closeInto(c io.Closer, err *error) {
	if cerr := c.Close(); *err == nil {
		*err = cerr
	}
}

// relay has no one to report to: a failed copy or close just ends it.
func relay(ctx context.Context, in net.Conn, addr string) {
	defer func() { _ = in.Close() }()
	var d net.Dialer
	out, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return
	}
	defer func() { _ = out.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = in.Close(); _ = out.Close() })
	defer stop()
	// Each direction ends at EOF and half-closes the other side; the
	// relay ends when both have, or when the test ends.
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(out, in)
	go cp(in, out)
	<-done
	<-done
}

package acquire

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// syslogMaxConns bounds the TCP connections a syslog source serves at once.
const syslogMaxConns = 256

// SyslogSource receives syslog messages (RFC 3164 and RFC 5424) over UDP, or
// over TCP with octet-counting or newline framing (RFC 6587). Each message
// becomes a Line in auth.log form, "TIMESTAMP HOST TAG: MESSAGE", whose Host
// is the syslog hostname, so the syslog and sshd parsers read it as they
// read a file.
type SyslogSource struct {
	cfg      SourceConfig
	log      *slog.Logger
	name     string
	source   string
	udp      net.PacketConn
	tcp      net.Listener
	lines    prometheus.Counter
	bad      prometheus.Counter
	tooLong  prometheus.Counter
	mu       sync.Mutex // serialises Handler calls from TCP connections
	closeOne sync.Once
}

// NewSyslogSource checks a syslog document and binds its listener.
func NewSyslogSource(c SourceConfig, o Options) (*SyslogSource, error) {
	if c.Kind != KindSyslog || c.ListenAddr == "" {
		return nil, errors.New("syslog source: listen_addr is required")
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = DefaultMaxLineBytes
	}
	if c.Protocol == "" {
		c.Protocol = "udp"
	}
	s := &SyslogSource{cfg: c}
	var err error
	switch c.Protocol {
	case "udp":
		s.udp, err = net.ListenPacket("udp", c.ListenAddr)
	case "tcp":
		s.tcp, err = net.Listen("tcp", c.ListenAddr)
	default:
		return nil, fmt.Errorf("syslog source: protocol %q is not udp or tcp", c.Protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("syslog source: listen %s %s: %w", c.Protocol, c.ListenAddr, err)
	}
	s.name = c.Name()
	s.source = "syslog:" + c.Protocol + ":" + s.Addr().String()
	s.log = o.logger().With("source", s.name)
	s.lines = o.Metrics.lines(s.name, c.Type())
	s.bad = o.Metrics.skipped(s.name, SkipBadSyslog)
	s.tooLong = o.Metrics.skipped(s.name, SkipTooLong)
	return s, nil
}

// Name implements Source.
func (s *SyslogSource) Name() string { return s.name }

// Addr returns the address the source listens on (useful with port 0).
func (s *SyslogSource) Addr() net.Addr {
	if s.udp != nil {
		return s.udp.LocalAddr()
	}
	return s.tcp.Addr()
}

// Close releases the listener; Run does it when it returns.
func (s *SyslogSource) Close() error {
	var err error
	s.closeOne.Do(func() {
		if s.udp != nil {
			err = s.udp.Close()
		} else {
			err = s.tcp.Close()
		}
	})
	return err
}

// shut closes the listener to stop Run; an error closing it changes nothing.
func (s *SyslogSource) shut() { _ = s.Close() }

// Run implements Source.
func (s *SyslogSource) Run(ctx context.Context, h Handler) error {
	defer s.shut()
	stop := context.AfterFunc(ctx, s.shut)
	defer stop()
	if s.udp != nil {
		return s.runUDP(ctx, h)
	}
	return s.runTCP(ctx, h)
}

func (s *SyslogSource) runUDP(ctx context.Context, h Handler) error {
	buf := make([]byte, 64<<10)
	for {
		n, peer, err := s.udp.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("syslog source %s: read: %w", s.name, err)
		}
		if err := s.handle(ctx, h, buf[:n], peer); err != nil {
			return err
		}
	}
}

func (s *SyslogSource) runTCP(ctx context.Context, h Handler) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, syslogMaxConns)
	connCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer s.shut() // before wg.Wait: no accept after a failed handler
	for {
		conn, err := s.tcp.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return context.Cause(connCtx) // a connection's handler failed, or nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("syslog source %s: accept: %w", s.name, err)
		}
		select {
		case sem <- struct{}{}:
		default:
			s.log.Warn("too many syslog connections, refusing", "peer", conn.RemoteAddr(), "limit", syslogMaxConns)
			_ = conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.serveConn(connCtx, h, conn); err != nil && connCtx.Err() == nil {
				// The handler is gone: stop the whole source.
				cancel(err)
				s.shut()
			}
		}()
	}
}

// serveConn reads framed messages from one TCP connection until it closes.
func (s *SyslogSource) serveConn(ctx context.Context, h Handler, conn net.Conn) error {
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	peer := conn.RemoteAddr()
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		msg, err := readFrame(r, s.cfg.MaxLineBytes)
		if errors.Is(err, ErrLineTooLong) {
			add(s.tooLong, 1)
			continue
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
				add(s.bad, 1)
				s.log.Warn("syslog connection dropped", "peer", peer, "err", err)
			}
			return nil
		}
		if err := s.handle(ctx, h, msg, peer); err != nil {
			return err
		}
	}
}

// readFrame reads one message in either RFC 6587 framing: octet counting
// ("LEN SP MSG", chosen when the frame starts with a digit) or a trailing
// LF (CR and NUL before it are dropped). A frame over max is consumed and reported as ErrLineTooLong;
// a broken length prefix is an error that ends the connection, since the
// stream cannot be resynchronised.
func readFrame(r *bufio.Reader, max int) ([]byte, error) {
	for {
		c, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		if c == '\n' || c == '\r' || c == 0 {
			continue // blank frames and stray delimiters
		}
		if c < '1' || c > '9' {
			_ = r.UnreadByte() // cannot fail right after ReadByte
			return readDelimited(r, max)
		}
		n := int(c - '0')
		for {
			c, err = r.ReadByte()
			if err != nil {
				return nil, fmt.Errorf("octet count: %w", err)
			}
			if c == ' ' {
				break
			}
			if c < '0' || c > '9' || n > 1<<24 {
				return nil, fmt.Errorf("octet count: unexpected byte %q", c)
			}
			n = n*10 + int(c-'0')
		}
		if n > max {
			if _, err := r.Discard(n); err != nil {
				return nil, fmt.Errorf("discard %d bytes: %w", n, err)
			}
			return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrLineTooLong, n, max)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("read %d-byte frame: %w", n, err)
		}
		return buf, nil
	}
}

func readDelimited(r *bufio.Reader, max int) ([]byte, error) {
	var out []byte
	tooLong := false
	for {
		frag, err := r.ReadSlice('\n')
		if !tooLong {
			if len(out)+len(frag) > max+2 { // +2: the CR LF that are trimmed
				tooLong, out = true, nil
			} else {
				out = append(out, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && (!errors.Is(err, io.EOF) || len(out) == 0) {
			return nil, err
		}
		if tooLong {
			return nil, fmt.Errorf("%w: limit %d", ErrLineTooLong, max)
		}
		return bytes.TrimRight(out, "\r\n\x00"), nil
	}
}

// handle parses one syslog message and hands its line on.
func (s *SyslogSource) handle(ctx context.Context, h Handler, msg []byte, peer net.Addr) error {
	msg = bytes.TrimRight(msg, "\r\n\x00")
	if len(msg) == 0 {
		return nil
	}
	if len(msg) > s.cfg.MaxLineBytes {
		add(s.tooLong, 1)
		return nil
	}
	m, err := ParseSyslog(msg, time.Now())
	if err != nil {
		add(s.bad, 1)
		s.log.Debug("bad syslog message", "peer", peer, "err", err)
		return nil
	}
	if m.Host == "" {
		m.Host = peerHost(peer)
	}
	l := Line{Text: m.Line(), Type: s.cfg.Type(), Source: s.source, Host: m.Host, Time: m.Time}
	s.mu.Lock()
	err = h(ctx, []Line{l})
	s.mu.Unlock()
	if err != nil {
		return done(ctx, fmt.Errorf("syslog source %s: %w", s.name, err))
	}
	add(s.lines, 1)
	return nil
}

func peerHost(a net.Addr) string {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap().String()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap().String()
	}
	return ""
}

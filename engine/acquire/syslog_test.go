package acquire

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var syslogNow = time.Date(2026, 11, 25, 10, 0, 9, 0, time.UTC)

func TestParseSyslog(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SyslogMessage
		line string
	}{
		{"<38>Nov 25 10:00:05 bastion sshd[4242]: Failed password for root from 185.220.101.5 port 40022 ssh2",
			SyslogMessage{Priority: 38, Stamp: "Nov 25 10:00:05", Host: "bastion", Content: "sshd[4242]: Failed password for root from 185.220.101.5 port 40022 ssh2"},
			"Nov 25 10:00:05 bastion sshd[4242]: Failed password for root from 185.220.101.5 port 40022 ssh2"},
		{"<13>Nov  5 01:02:03 sshd[1]: Invalid user admin from 2001:db8::7 port 22",
			SyslogMessage{Priority: 13, Stamp: "Nov  5 01:02:03", Content: "sshd[1]: Invalid user admin from 2001:db8::7 port 22"},
			"Nov  5 01:02:03  sshd[1]: Invalid user admin from 2001:db8::7 port 22"},
		{"<86>2026-11-25T10:00:05.5+01:00 web-1 sshd[7]: Connection closed by 203.0.113.9 port 5 [preauth]",
			SyslogMessage{Priority: 86, Stamp: "2026-11-25T10:00:05.5+01:00", Time: time.Date(2026, 11, 25, 9, 0, 5, 500000000, time.UTC), Host: "web-1", Content: "sshd[7]: Connection closed by 203.0.113.9 port 5 [preauth]"},
			"2026-11-25T10:00:05.5+01:00 web-1 sshd[7]: Connection closed by 203.0.113.9 port 5 [preauth]"},
		{`<165>1 2026-11-25T10:00:05.003Z mymachine.example.com sshd 4242 ID47 [exampleSDID@32473 iut="3" eventSource="Ap\]p"][x@1 a="b"] ` + "\xEF\xBB\xBF" + "Failed password for invalid user bob from 192.0.2.1 port 2 ssh2",
			SyslogMessage{Priority: 165, Stamp: "2026-11-25T10:00:05.003Z", Time: time.Date(2026, 11, 25, 10, 0, 5, 3000000, time.UTC), Host: "mymachine.example.com", Content: "sshd[4242]: Failed password for invalid user bob from 192.0.2.1 port 2 ssh2"},
			"2026-11-25T10:00:05.003Z mymachine.example.com sshd[4242]: Failed password for invalid user bob from 192.0.2.1 port 2 ssh2"},
		{"<34>1 - - su - - - 'su root' failed",
			SyslogMessage{Priority: 34, Stamp: "2026-11-25T10:00:09Z", Time: syslogNow, Content: "su: 'su root' failed"},
			"2026-11-25T10:00:09Z  su: 'su root' failed"},
		{"<34>1 2026-11-25T10:00:05Z host - - - -",
			SyslogMessage{Priority: 34, Stamp: "2026-11-25T10:00:05Z", Time: time.Date(2026, 11, 25, 10, 0, 5, 0, time.UTC), Host: "host"},
			"2026-11-25T10:00:05Z host "},
		{"<0>host prog: no timestamp",
			SyslogMessage{Priority: 0, Stamp: "Nov 25 10:00:09", Host: "host", Content: "prog: no timestamp"},
			"Nov 25 10:00:09 host prog: no timestamp"},
	} {
		got, err := ParseSyslog([]byte(tc.in), syslogNow)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
		if l := got.Line(); l != tc.line {
			t.Errorf("%q: line %q, want %q", tc.in, l, tc.line)
		}
	}
}

func TestParseSyslogErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Nov 25 10:00:05 host sshd: x", "no <PRI>"},
		{"<1a>x", "bad <PRI>"},
		{"<1000>x", "bad <PRI>"},
		{"<192>Nov 25 10:00:05 h p: x", "priority 192 above 191"},
		{"<34>1 yesterday h a p m - x", `rfc5424 timestamp "yesterday": not RFC 3339`},
		{"<34>1 2026-11-25T10:00:05Z h a", "rfc5424 header: too few fields"},
		{"<34>1 2026-11-25T10:00:05Z h a p m [unterminated x", "rfc5424 structured data: unterminated element"},
		{"<34>1 2026-11-25T10:00:05Z h a p m -x", "rfc5424 structured data: junk after -"},
		{"<34>1 2026-11-25T10:00:05Z h a p m [a]x", "rfc5424 structured data: no space before message"},
		{"<34>1 2026-11-25T10:00:05Z h " + strings.Repeat("a", 49) + " p m - x", "rfc5424 app-name: longer than 48 bytes"},
		{"<34>Nov 25 10:00:05 host ", "rfc3164: no message"},
	} {
		_, err := ParseSyslog([]byte(tc.in), syslogNow)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseSyslog(f *testing.F) {
	f.Add([]byte("<38>Nov 25 10:00:05 bastion sshd[4242]: Failed password for root from 185.220.101.5 port 40022 ssh2"))
	f.Add([]byte(`<165>1 2026-11-25T10:00:05.003Z h sshd 1 ID [a b="\]"] msg`))
	f.Add([]byte("<13>2026-11-25T10:00:05Z h p: m"))
	f.Add([]byte("<13>Nov  5 01:02:03 sshd[1]: x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseSyslog(b, syslogNow)
		if err != nil {
			return
		}
		if m.Priority < 0 || m.Priority > 191 || m.Stamp == "" {
			t.Fatalf("accepted %+v", m)
		}
		if strings.ContainsAny(m.Host, " \n") {
			t.Fatalf("host %q", m.Host)
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte("12 <13>Nov 5 x\n<13>line two\n"))
	f.Add([]byte("5 abc"))
	f.Add([]byte("99999999999 x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReaderSize(strings.NewReader(string(b)), 16)
		for range 1000 {
			msg, err := readFrame(r, 64)
			if errors.Is(err, ErrLineTooLong) {
				continue
			}
			if err != nil {
				return
			}
			if len(msg) > 64+2 {
				t.Fatalf("frame of %d bytes past the limit", len(msg))
			}
		}
	})
}

func startSyslog(t *testing.T, proto string, m *Metrics) (*SyslogSource, collector) {
	t.Helper()
	s, err := NewSyslogSource(SourceConfig{
		Kind: KindSyslog, ListenAddr: "127.0.0.1:0", Protocol: proto, MaxLineBytes: 256,
		Labels: map[string]string{"type": "syslog"},
	}, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := runSource(t, s, 64)
	return s, c
}

func TestSyslogUDP(t *testing.T) {
	m, _ := NewMetrics(prometheus.NewRegistry())
	s, c := startSyslog(t, "udp", m)
	conn, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	for _, msg := range []string{
		"<38>Nov 25 10:00:05 bastion sshd[1]: Failed password for root from 185.220.101.5 port 1 ssh2\n",
		"not syslog at all",
		"<13>Nov 25 10:00:06 sshd[2]: Invalid user x from 192.0.2.3 port 2",
		"<38>Nov 25 10:00:07 bastion sshd[1]: " + strings.Repeat("x", 300),
	} {
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	got := c.expect(t,
		"Nov 25 10:00:05 bastion sshd[1]: Failed password for root from 185.220.101.5 port 1 ssh2",
		"Nov 25 10:00:06 127.0.0.1 sshd[2]: Invalid user x from 192.0.2.3 port 2")
	if got[0].Host != "bastion" || got[1].Host != "127.0.0.1" || got[0].Type != "syslog" || got[0].Source != "syslog:udp:"+s.Addr().String() {
		t.Fatalf("lines %+v", got)
	}
	waitCounter(t, m.Skipped.WithLabelValues(s.Name(), SkipBadSyslog), 1)
	waitCounter(t, m.Skipped.WithLabelValues(s.Name(), SkipTooLong), 1)
}

func TestSyslogTCPFraming(t *testing.T) {
	m, _ := NewMetrics(prometheus.NewRegistry())
	s, c := startSyslog(t, "tcp", m)
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	octet := func(s string) string { return fmt.Sprintf("%d %s", len(s), s) }
	stream := octet("<38>1 2026-11-25T10:00:05Z h1 sshd 9 - - Failed password for root from 198.51.100.1 port 1 ssh2") +
		"<38>Nov 25 10:00:06 h2 sshd[3]: newline framed\n" +
		octet("<38>Nov 25 10:00:07 h3 sshd[3]: multi\nline octet-counted") +
		"<38>Nov 25 10:00:08 h4 sshd[3]: " + strings.Repeat("y", 300) + "\n" +
		octet("<38>Nov 25 10:00:09 h5 sshd[3]: "+strings.Repeat("y", 300)) +
		"<38>Nov 25 10:00:10 h6 sshd[3]: crlf\r\n"
	// Write in small pieces so that frames straddle reads.
	for i := 0; i < len(stream); i += 7 {
		if _, err := conn.Write([]byte(stream[i:min(i+7, len(stream))])); err != nil {
			t.Fatal(err)
		}
	}
	got := c.expect(t,
		"2026-11-25T10:00:05Z h1 sshd[9]: Failed password for root from 198.51.100.1 port 1 ssh2",
		"Nov 25 10:00:06 h2 sshd[3]: newline framed",
		"Nov 25 10:00:07 h3 sshd[3]: multi\nline octet-counted",
		"Nov 25 10:00:10 h6 sshd[3]: crlf")
	if got[0].Host != "h1" || !got[0].Time.Equal(time.Date(2026, 11, 25, 10, 0, 5, 0, time.UTC)) || got[3].Host != "h6" {
		t.Fatalf("lines %+v", got)
	}
	waitCounter(t, m.Skipped.WithLabelValues(s.Name(), SkipTooLong), 2)
	// A second connection is served too, and a broken octet count drops only its connection.
	c2, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c2.Close() }()
	if _, err := fmt.Fprint(c2, "12x <13>oops\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprint(conn, "<38>Nov 25 10:00:11 h7 sshd[3]: still here\n"); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "Nov 25 10:00:11 h7 sshd[3]: still here")
	waitCounter(t, m.Skipped.WithLabelValues(s.Name(), SkipBadSyslog), 1)
	if n := testutil.ToFloat64(m.Lines.WithLabelValues(s.Name(), "syslog")); n != 5 {
		t.Fatalf("lines = %v, want 5", n)
	}
}

func TestSyslogBindError(t *testing.T) {
	s, _ := startSyslog(t, "tcp", nil)
	_, err := NewSyslogSource(SourceConfig{Kind: KindSyslog, ListenAddr: s.Addr().String(), Protocol: "tcp",
		Labels: map[string]string{"type": "syslog"}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "syslog source: listen tcp "+s.Addr().String()) {
		t.Fatalf("error %v", err)
	}
}

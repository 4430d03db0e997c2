package notify

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and its key
// to dir, returning the two paths; the certificate is its own CA.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "portcullis notify test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// startSMTPD runs testdata/smtpd.py (aiosmtpd, STARTTLS and AUTH
// required) and returns its address and the directory it writes messages
// to. Without python3 and aiosmtpd the test skips, or fails under CI=true.
func startSMTPD(t *testing.T, user, password string) (addr, outdir, caFile string) {
	t.Helper()
	if err := exec.Command("python3", "-c", "import aiosmtpd").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3 with aiosmtpd is required under CI=true (scripts/deps.sh installs it): %v", err)
		}
		t.Skipf("python3 with aiosmtpd not available (pip install aiosmtpd): %v", err)
	}
	dir := t.TempDir()
	outdir = filepath.Join(dir, "mail")
	if err := os.Mkdir(outdir, 0o700); err != nil {
		t.Fatal(err)
	}
	cert, key := writeCert(t, dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	cmd := exec.Command("python3", "testdata/smtpd.py", "127.0.0.1", strconv.Itoa(port), cert, key, outdir, user, password)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "ready ") {
			t.Fatalf("smtpd.py: %q", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("smtpd.py did not start within 20 s")
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), outdir, cert
}

func TestEmailOverSTARTTLSWithAuth(t *testing.T) {
	addr, outdir, ca := startSMTPD(t, "ips", "s3cret-pass")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mail := Destination{Name: "soc", Type: "email", SMTP: SMTPConfig{Addr: addr, From: "ips@example.net",
		To: []string{"soc@example.net"}, Username: "ips", PasswordFile: pwFile, CAFile: ca}}
	cfg := testConfig(mail)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	src := &fakeSource{msgs: messages(t,
		alert("192.0.2.10", "crowdsecurity/ssh-bf", decisionfeed.TypeBan),
		alert("2001:db8::10", "evil\r\nBcc: victim@example.org", decisionfeed.TypeBan))}
	run(t, n, map[string]*fakeSource{n.GroupFor("soc"): src}, func() bool { return src.commitOffset() == 2 })
	// The second alert is not an alert (control characters in its
	// scenario): skipped and counted, the first delivered alone.
	b, err := os.ReadFile(filepath.Join(outdir, "1.eml"))
	if err != nil {
		t.Fatalf("no message received: %v", err)
	}
	m := string(b)
	for _, want := range []string{"Subject: [portcullis] 1 alert: crowdsecurity/ssh-bf from 192.0.2.10", "To: soc@example.net",
		"192.0.2.10", "ban 4h0m0s"} {
		if !strings.Contains(m, want) {
			t.Errorf("message lacks %q:\n%s", want, m)
		}
	}
	if strings.Contains(m, "Bcc") || strings.Contains(m, "2001:db8::10") {
		t.Errorf("the alert with control characters was sent:\n%s", m)
	}
	if v := testutil.ToFloat64(n.m.invalid); v != 1 {
		t.Errorf("invalid alerts counted %v, want 1", v)
	}

	// A wrong password is refused and retried, never delivered, and the
	// password appears in no error.
	if err := os.WriteFile(pwFile, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n2, err := New(testConfig(mail), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := n2.dests[0]
	sendErr := d.sender.send(t.Context(), Batch{Alerts: []engine.Alert{alert("192.0.2.11", "s", decisionfeed.TypeBan)}})
	if sendErr == nil || !strings.Contains(sendErr.Error(), "smtp auth as ips") || strings.Contains(sendErr.Error(), "wrong") {
		t.Errorf("wrong password: error %v", sendErr)
	}
}

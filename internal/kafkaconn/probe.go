package kafkaconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

// ProbeTimeout bounds one broker's probe.
const ProbeTimeout = 5 * time.Second

// ErrUnreachable is returned (wrapped) by Probe when no broker answered at
// the network level: a daemon goes on and retries, the settings may be fine.
var ErrUnreachable = errors.New("no broker reachable")

// Probe connects to the brokers in turn with s and asks the first that
// answers for its metadata, so that a security setting that cannot work is
// reported at start as one line naming the setting instead of as endless
// client retries: a CA that did not sign the broker's certificate, a
// broker that does not speak TLS, credentials the broker refuses, a
// mechanism it does not offer, a broker that wants TLS or SASL from a
// client that has neither. When no broker can be reached at all the error
// wraps ErrUnreachable.
func (s *Security) Probe(ctx context.Context, brokers []string) error {
	var last error
	for _, b := range brokers {
		err := s.probeOne(ctx, b)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrUnreachable) {
			return err
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if last == nil {
		return fmt.Errorf("%w: no brokers given", ErrUnreachable)
	}
	return last
}

func (s *Security) probeOne(ctx context.Context, broker string) error {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	// A bare TCP connection first: it tells "nobody there" apart from a
	// broker that accepts the connection and then never completes the
	// TLS handshake (a plaintext listener reads a ClientHello as the
	// length of a huge request and waits for the rest).
	var nd net.Dialer
	tcp, err := nd.DialContext(ctx, "tcp", broker)
	if err != nil {
		return fmt.Errorf("%w: broker %s: %s", ErrUnreachable, broker, oneLine(err.Error()))
	}
	_ = tcp.Close()
	d := s.Dialer(&kafka.Dialer{Timeout: ProbeTimeout, DualStack: true})
	conn, err := d.DialContext(ctx, "tcp", broker)
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(ProbeTimeout))
		_, err = conn.Brokers()
		_ = conn.Close()
	}
	if err == nil {
		return nil
	}
	return s.explain(broker, err)
}

// explain turns a connection error into one line naming the setting to
// look at. kafka-go's own messages are not repeated: they can be long and
// they vary between versions.
func (s *Security) explain(broker string, err error) error {
	tlsOn := s.TLS() != nil
	saslOn := s.SASL() != nil
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		invalid   x509.CertificateInvalidError
		verifyErr *tls.CertificateVerificationError
		recordErr tls.RecordHeaderError
		kerr      kafka.Error
		alert     tls.AlertError
	)
	switch {
	case errors.As(err, &hostErr):
		return fmt.Errorf("kafka tls (--kafka-tls) broker %s: its certificate is not valid for that name: %s", broker, oneLine(hostErr.Error()))
	case errors.As(err, &unknownCA):
		return fmt.Errorf("kafka tls_ca (--kafka-tls-ca) broker %s: its certificate is not signed by %s", broker, s.caName())
	case errors.As(err, &invalid):
		return fmt.Errorf("kafka tls_ca (--kafka-tls-ca) broker %s: its certificate is invalid: %s", broker, oneLine(invalid.Error()))
	case errors.As(err, &verifyErr):
		return fmt.Errorf("kafka tls_ca (--kafka-tls-ca) broker %s: certificate verification failed: %s", broker, oneLine(verifyErr.Err.Error()))
	case errors.As(err, &recordErr):
		return fmt.Errorf("kafka tls (--kafka-tls) broker %s: does not speak TLS on this port; turn TLS off or use its TLS listener", broker)
	case errors.As(err, &alert):
		return fmt.Errorf("kafka tls_cert (--kafka-tls-cert) broker %s: refused the TLS handshake (%s): it may want a client certificate", broker, oneLine(alert.Error()))
	case errors.As(err, &kerr):
		switch kerr {
		case kafka.SASLAuthenticationFailed:
			return fmt.Errorf("kafka sasl_username/sasl_password_file (--kafka-sasl-username, --kafka-sasl-password-file) broker %s: authentication failed for user %q", broker, s.cfg.SASLUsername)
		case kafka.UnsupportedSASLMechanism:
			return fmt.Errorf("kafka sasl_mechanism (--kafka-sasl-mechanism) broker %s: does not offer %s", broker, s.cfg.mechanism())
		case kafka.IllegalSASLState:
			return fmt.Errorf("kafka sasl_mechanism (--kafka-sasl-mechanism) broker %s: SASL exchange refused", broker)
		}
		return fmt.Errorf("kafka broker %s: %s", broker, oneLine(kerr.Title()))
	case tlsOn && isTimeout(err):
		return fmt.Errorf("kafka tls (--kafka-tls) broker %s: accepted the connection but did not complete a TLS handshake within %s: it does not speak TLS on this port", broker, ProbeTimeout)
	case isRefusedOrTimeout(err):
		return fmt.Errorf("%w: broker %s: %s", ErrUnreachable, broker, oneLine(err.Error()))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		switch {
		case saslOn:
			// kafka-go reports a refused SASL exchange on some brokers as
			// a closed connection.
			return fmt.Errorf("kafka sasl_username/sasl_password_file (--kafka-sasl-username, --kafka-sasl-password-file) broker %s: closed the connection during authentication: credentials refused or the listener is not SASL", broker)
		case tlsOn:
			return fmt.Errorf("kafka sasl_mechanism (--kafka-sasl-mechanism) broker %s: closed the connection after the TLS handshake: it requires SASL authentication", broker)
		default:
			return fmt.Errorf("kafka tls/sasl_mechanism (--kafka-tls, --kafka-sasl-mechanism) broker %s: closed the connection: it requires TLS or SASL authentication", broker)
		}
	}
	return fmt.Errorf("kafka broker %s: %s", broker, oneLine(err.Error()))
}

func (s *Security) caName() string {
	if s.cfg.TLSCA != "" {
		return "the CA in " + s.cfg.TLSCA
	}
	return "a CA of the system pool"
}

// isRefusedOrTimeout reports network-level failures that say nothing about
// the security settings.
func isRefusedOrTimeout(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

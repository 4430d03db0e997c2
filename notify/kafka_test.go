package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/engine"
)

// downFor is how long the receiver is unreachable in
// TestReceiverDownAMinuteAcrossRestart: the "down for a minute".
const downFor = time.Minute

// flakyServer is a webhook receiver on a fixed address that can be taken
// down (listener closed: connection refused) and brought back.
type flakyServer struct {
	addr string
	mu   sync.Mutex
	ips  map[string]int // alert address -> times received
	srv  *http.Server
}

func (f *flakyServer) up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		t.Fatalf("receiver listen %s: %v", f.addr, err)
	}
	f.addr = ln.Addr().String()
	f.srv = &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body struct{ Alerts []engine.Alert }
		if err := json.Unmarshal(b, &body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		for _, a := range body.Alerts {
			f.ips[a.IP]++
		}
		f.mu.Unlock()
	})}
	go func() { _ = f.srv.Serve(ln) }()
}

func (f *flakyServer) down() { _ = f.srv.Close() }

func (f *flakyServer) distinct() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ips)
}

// startNotify runs notify against the brokers until the returned stop is
// called.
func startNotify(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	n, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var readers []*kafka.Reader
	done := make(chan error, 1)
	go func() {
		done <- n.Run(ctx, func(group string) (Source, error) {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Brokers, Topic: cfg.Topic, GroupID: group,
				StartOffset: kafka.FirstOffset, MaxWait: 200 * time.Millisecond})
			readers = append(readers, r)
			return r, nil
		})
	}()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("notify: %v", err)
		}
		for _, r := range readers {
			_ = r.Close()
		}
	}
}

func publishAlerts(t *testing.T, brokers []string, topic string, from, to int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer func() { _ = w.Close() }()
	var msgs []kafka.Message
	for i := from; i < to; i++ {
		b, _ := json.Marshal(alert(fmt.Sprintf("10.9.%d.%d", i/250, i%250+1), "crowdsecurity/ssh-bf", decisionfeed.TypeBan))
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: b})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("publish alerts: %v", err)
	}
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReceiverDownAMinuteAcrossRestart: alerts published while the
// receiver is down for a minute, and notify restarted in the middle, all
// arrive once it is back — the committed offsets carry them over.
func TestReceiverDownAMinuteAcrossRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute (-short)")
	}
	brokers := feedtest.Brokers(t)
	topic := feedtest.Topic(t, 2)
	rcv := &flakyServer{addr: "127.0.0.1:0", ips: map[string]int{}}
	rcv.up(t)
	t.Cleanup(rcv.down)
	cfg := testConfig(Destination{Name: "hook", Type: "webhook", URL: "http://" + rcv.addr + "/alerts"})
	cfg.Brokers, cfg.Topic = brokers, topic
	cfg.Group = "notify-test-" + topic
	cfg.Retry = RetryConfig{Min: 100 * time.Millisecond, Max: 2 * time.Second}

	stop := startNotify(t, cfg)
	publishAlerts(t, brokers, topic, 0, 10)
	waitFor(t, "first 10 alerts delivered", 30*time.Second, func() bool { return rcv.distinct() == 10 })

	rcv.down()
	downAt := time.Now()
	publishAlerts(t, brokers, topic, 10, 30)
	time.Sleep(downFor / 3)
	stop() // notify restarts while the receiver is still down
	stop = startNotify(t, cfg)
	defer func() { stop() }()
	publishAlerts(t, brokers, topic, 30, 40)
	time.Sleep(time.Until(downAt.Add(downFor)))
	if n := rcv.distinct(); n != 10 {
		t.Fatalf("receiver down, yet %d alerts counted", n)
	}
	rcv.up(t)
	waitFor(t, "all 40 alerts delivered after the receiver came back", 30*time.Second, func() bool { return rcv.distinct() == 40 })
}

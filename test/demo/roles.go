//go:build linux

package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
)

// Event is one line a role process writes on its standard output, as
// JSON: what it saw and when, by its own clock (every process shares the
// host's clock).
type Event struct {
	// Kind is alert, decision, drops (watch); probe, request (attacker);
	// browse (bystander).
	Kind string    `json:"kind"`
	At   time.Time `json:"at"`
	// Src is the attacker or bystander source address of a probe or request.
	Src string `json:"src,omitempty"`
	// What names the attack step of a request, or the path browsed.
	What string `json:"what,omitempty"`
	// OK is the outcome of a probe or request.
	OK     bool   `json:"ok,omitempty"`
	Status int    `json:"status,omitempty"`
	Err    string `json:"err,omitempty"`
	// IP, Scenario, Op, Type, Duration describe an alert or a decision.
	IP       string `json:"ip,omitempty"`
	Scenario string `json:"scenario,omitempty"`
	Op       string `json:"op,omitempty"`
	Type     string `json:"type,omitempty"`
	Duration string `json:"duration,omitempty"`
	// Value is the fw-bouncer drop counter (drops).
	Value float64 `json:"value,omitempty"`
}

// RunRole runs one role process (watch, attacker or bystander) with its
// command-line arguments, writing Events to out until in reaches EOF (the
// orchestrator closes it to stop the role) or, for the attacker, until
// the attack is over. The orchestrator starts each role inside its
// network namespace.
func RunRole(ctx context.Context, role string, args []string, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The orchestrator closes our standard input to stop us; a dead
		// orchestrator does the same.
		_, _ = io.Copy(io.Discard, in)
		cancel()
	}()
	em := &emitter{enc: json.NewEncoder(out)}
	switch role {
	case "watch":
		return watch(ctx, args, em)
	case "attacker":
		return attack(ctx, args, em)
	case "bystander":
		return browse(ctx, args, em)
	}
	return fmt.Errorf("role %q: unknown (watch, attacker, bystander)", role)
}

// emitter serialises Events from several goroutines.
type emitter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (e *emitter) emit(ev Event) {
	if ev.At.IsZero() {
		ev.At = time.Now()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = e.enc.Encode(ev) // a closed pipe means the orchestrator is gone
}

// watch follows the alerts and decisions topics from the start and polls
// fw-bouncer's drop counter, inside the server namespace.
func watch(ctx context.Context, args []string, em *emitter) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	brokers := fs.String("brokers", "127.0.0.1:9092", "broker address")
	metrics := fs.String("metrics", "", "fw-bouncer metrics URL")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ConsumeTopics(decisionfeed.TopicAlerts, decisionfeed.TopicDecisions),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		return fmt.Errorf("watch: kafka client: %w", err)
	}
	defer cl.Close()
	if *metrics != "" {
		go pollDrops(ctx, *metrics, em)
	}
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		now := time.Now()
		fetches.EachRecord(func(r *kgo.Record) {
			switch r.Topic {
			case decisionfeed.TopicAlerts:
				var a engine.Alert
				if err := json.Unmarshal(r.Value, &a); err != nil {
					em.emit(Event{Kind: "invalid", At: now, Err: fmt.Sprintf("alert at offset %d: %v", r.Offset, err)})
					return
				}
				ev := Event{Kind: "alert", At: now, IP: a.IP, Scenario: a.Scenario}
				if a.Decision != nil {
					ev.Type, ev.Duration = string(a.Decision.Type), a.Decision.Duration
				}
				em.emit(ev)
			case decisionfeed.TopicDecisions:
				d, err := decisionfeed.Decode(r.Value, decisionfeed.DefaultLimits())
				if err != nil {
					em.emit(Event{Kind: "invalid", At: now, Err: fmt.Sprintf("decision at offset %d: %v", r.Offset, err)})
					return
				}
				em.emit(Event{Kind: "decision", At: now, IP: d.Value, Scenario: d.Scenario,
					Op: string(d.Op), Type: string(d.Type), Duration: d.Duration})
			}
		})
	}
	return nil
}

// pollDrops reports each change of portcullis_fw_bouncer_dropped_packets_total.
func pollDrops(ctx context.Context, url string, em *emitter) {
	client := &http.Client{Timeout: time.Second}
	last := -1.0
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v, err := scrapeSum(ctx, client, url, "portcullis_fw_bouncer_dropped_packets_total")
		if err != nil {
			continue // fw-bouncer not serving yet, or stopping
		}
		if v != last {
			em.emit(Event{Kind: "drops", Value: v})
			last = v
		}
	}
}

// scrapeSum sums every series of the metric name on a Prometheus text page.
func scrapeSum(ctx context.Context, client *http.Client, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: status %s", url, resp.Status)
	}
	sum, err := sumMetric(resp.Body, name)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	return sum, nil
}

// sumMetric sums every series of the metric name in Prometheus text
// exposition; comments and other metrics are skipped.
func sumMetric(r io.Reader, name string) (float64, error) {
	var sum float64
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // another metric, or a longer name sharing the prefix
		}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				return 0, fmt.Errorf("line %d: unterminated labels", n)
			}
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("line %d: no value", n)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("line %d: value: %w", n, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	return sum, nil
}

// Attack steps: each comes from its own source address so that each one
// is detected and banned on its own.
const (
	StepBadUA     = "bad-user-agent"
	StepWordPress = "wordpress-bf"
	StepCVE       = "cve-2021-41773"
	// StepBadUA6 is the bad user agent again, from an IPv6 address.
	StepBadUA6 = "bad-user-agent-v6"
)

// attack runs the three attack steps one after another, each from its own
// source address, while TCP-connect probes from every source address show
// when its packets start to be dropped. A step waits for its source to be
// blocked (or for --wait) before the next begins.
func attack(ctx context.Context, args []string, em *emitter) error {
	fs := flag.NewFlagSet("attacker", flag.ContinueOnError)
	target := fs.String("target", "", "server address")
	srcList := fs.String("src", "", "three source addresses: bad user agent, WordPress, CVE probe; a fourth, IPv6, sends the bad user agent again to --target6")
	target6 := fs.String("target6", "", "the server's IPv6 address, for the fourth source")
	probePort := fs.Int("probe-port", 81, "TCP port the probes connect to")
	wait := fs.Duration("wait", 15*time.Second, "how long a step waits for its source to be blocked")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("attacker: %w", err)
	}
	srcs := strings.Split(*srcList, ",")
	if *target == "" || len(srcs) < 3 || len(srcs) > 4 || (len(srcs) == 4 && *target6 == "") {
		return errors.New("attacker: need --target and three --src addresses (a fourth, IPv6, with --target6)")
	}
	p := &prober{em: em, target: net.JoinHostPort(*target, strconv.Itoa(*probePort)),
		target6: net.JoinHostPort(*target6, strconv.Itoa(*probePort)), blocked: map[string]chan struct{}{}}
	var wg sync.WaitGroup
	pctx, stopProbes := context.WithCancel(ctx)
	for _, s := range srcs {
		p.blocked[s] = make(chan struct{})
		wg.Add(1)
		go func() { defer wg.Done(); p.run(pctx, s) }()
	}
	defer func() { stopProbes(); wg.Wait() }()

	base := "http://" + *target
	steps := []struct {
		src, what string
		run       func(c *http.Client)
	}{
		{srcs[0], StepBadUA, func(c *http.Client) {
			do(ctx, em, c, srcs[0], StepBadUA, http.MethodGet, base+"/?id=1", "sqlmap/1.7.2#stable (https://sqlmap.org)", nil)
		}},
		{srcs[1], StepWordPress, func(c *http.Client) {
			for i := 0; i < 15 && ctx.Err() == nil; i++ {
				body := fmt.Sprintf("log=admin&pwd=guess%d&wp-submit=Log+In", i)
				if !do(ctx, em, c, srcs[1], StepWordPress, http.MethodPost, base+"/wp-login.php", "Mozilla/5.0", strings.NewReader(body)) {
					return // blocked already
				}
				time.Sleep(30 * time.Millisecond)
			}
		}},
		{srcs[2], StepCVE, func(c *http.Client) {
			do(ctx, em, c, srcs[2], StepCVE, http.MethodGet, base+"/cgi-bin/.%2e/.%2e/.%2e/.%2e/etc/passwd", "curl/7.88.1", nil)
		}},
	}
	if len(srcs) == 4 {
		base6 := "http://" + net.JoinHostPort(*target6, "80")
		steps = append(steps, struct {
			src, what string
			run       func(c *http.Client)
		}{srcs[3], StepBadUA6, func(c *http.Client) {
			do(ctx, em, c, srcs[3], StepBadUA6, http.MethodGet, base6+"/?id=1", "sqlmap/1.7.2#stable (https://sqlmap.org)", nil)
		}})
	}
	for _, st := range steps {
		st.run(clientFrom(st.src))
		select {
		case <-p.blocked[st.src]:
		case <-time.After(*wait):
		case <-ctx.Done():
			return nil
		}
	}
	time.Sleep(500 * time.Millisecond) // a few more probes past the last block
	return nil
}

// clientFrom is an HTTP client whose connections leave from src, one per
// request, with short timeouts: a dropped SYN shows as a failed request.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 500 * time.Millisecond}
	return &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
	}
}

// do sends one request and reports it; it returns whether a response came.
func do(ctx context.Context, em *emitter, c *http.Client, src, what, method, url, ua string, body io.Reader) bool {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		em.emit(Event{Kind: "request", Src: src, What: what, Err: err.Error()})
		return false
	}
	if strings.Contains(url, "%2e") {
		// Send the path as written: the probe is the encoded dot segments.
		req.URL.Opaque = url[strings.Index(url[len("http://"):], "/")+len("http://"):]
	}
	req.Header.Set("User-Agent", ua)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.Do(req)
	if err != nil {
		em.emit(Event{Kind: "request", Src: src, What: what, Err: err.Error()})
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	em.emit(Event{Kind: "request", Src: src, What: what, OK: true, Status: resp.StatusCode})
	return true
}

// prober connects to target from each source address in a loop and
// reports every change of outcome with the start time of the attempt.
type prober struct {
	em              *emitter
	target, target6 string // host:port per family
	blocked         map[string]chan struct{}
}

func (p *prober) run(ctx context.Context, src string) {
	ip := net.ParseIP(src)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 100 * time.Millisecond}
	target := p.target
	if ip.To4() == nil {
		target = p.target6
	}
	state := 0 // 0 unknown, 1 ok, 2 failing
	closed := false
	for ctx.Err() == nil {
		start := time.Now()
		c, err := d.DialContext(ctx, "tcp", target)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			_ = c.Close()
			if state != 1 {
				p.em.emit(Event{Kind: "probe", At: start, Src: src, OK: true})
			}
			state = 1
			// The pause bounds the drop time's resolution.
			time.Sleep(2 * time.Millisecond)
			continue
		}
		if state != 2 {
			p.em.emit(Event{Kind: "probe", At: start, Src: src, Err: err.Error()})
			if !closed {
				close(p.blocked[src])
				closed = true
			}
		}
		state = 2
	}
}

// browse requests the site's pages one after another from the bystander
// until stopped, reporting each outcome.
func browse(ctx context.Context, args []string, em *emitter) error {
	fs := flag.NewFlagSet("bystander", flag.ContinueOnError)
	target := fs.String("target", "", "server address")
	src := fs.String("src", "", "bystander source address")
	gap := fs.Duration("gap", 150*time.Millisecond, "pause between requests")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("bystander: %w", err)
	}
	if *target == "" || *src == "" {
		return errors.New("bystander: need --target and --src")
	}
	c := clientFrom(*src)
	pages := []string{"/", "/about.html", "/style.css", "/logo.png", "/blog/hello.html"}
	for i := 0; ctx.Err() == nil; i++ {
		path := pages[i%len(pages)]
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*target+path, nil)
		if err != nil {
			return fmt.Errorf("bystander: %w", err)
		}
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
		start := time.Now()
		resp, err := c.Do(req)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			em.emit(Event{Kind: "browse", At: start, Src: *src, What: path, Err: err.Error()})
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			em.emit(Event{Kind: "browse", At: start, Src: *src, What: path, OK: resp.StatusCode == http.StatusOK, Status: resp.StatusCode})
		}
		select {
		case <-ctx.Done():
		case <-time.After(*gap):
		}
	}
	return nil
}

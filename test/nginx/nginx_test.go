package nginx

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// upstream is the tiny application behind nginx.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		if r.URL.Path == "/captcha" {
			_, _ = fmt.Fprintf(w, "captcha challenge for %s\n", r.Header.Get("X-Portcullis-Decision"))
			return
		}
		_, _ = fmt.Fprintf(w, "hello from upstream %s %s\n", r.Method, r.URL.Path)
	}))
	t.Cleanup(u.Close)
	return u
}

type feed struct {
	brokers string
	topic   string
	pub     *decisionfeed.Publisher
}

func newFeed(t *testing.T) *feed {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, decisionfeed.PartitionsDecisions)
	pub, err := decisionfeed.NewPublisher(decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	return &feed{brokers: strings.Join(brokers, ","), topic: topic, pub: pub}
}

// publish sends one decision and returns it.
func (f *feed) publish(t *testing.T, op decisionfeed.Op, typ decisionfeed.Type, prefix string, dur time.Duration, scenario string) decisionfeed.Decision {
	t.Helper()
	d := decisionfeed.NewDecision(op, typ, netip.MustParsePrefix(prefix), dur, "test", time.Now())
	d.Scenario = scenario
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.pub.Publish(ctx, d); err != nil {
		t.Fatalf("publish %s %s: %v", op, prefix, err)
	}
	return d
}

// TestThroughNginx checks every verdict through a real nginx running the
// shipped snippets, with the real bouncer following an embedded broker.
func TestThroughNginx(t *testing.T) {
	requireNginx(t)
	app := newUpstream(t)
	fd := newFeed(t)
	// The bouncer believes only nginx (127.0.0.1), not every loopback
	// address; the untrusted client is 127.0.0.2, whose ban the host
	// protection would refuse, so it is off here.
	b := startBouncer(t, fd.brokers, fd.topic, "--trusted-proxy", "127.0.0.1", "--protect-host-addresses=false")
	b.waitReady(t, 15*time.Second)

	dir := t.TempDir()
	proxy := fmt.Sprintf("proxy_pass %s;", app.URL)
	trusted := site{listen: freePort(t), realIP: true, check: "check.conf", failMode: "fail-open.conf", content: proxy}
	direct := site{listen: freePort(t), realIP: false, check: "check.conf", failMode: "fail-open.conf", content: proxy}
	cached := site{listen: freePort(t), realIP: true, check: "check-cached.conf", failMode: "fail-open.conf", content: proxy}
	sites := []site{trusted, direct, cached}
	conf := nginxConf(t, dir, b.addr, 1, sites)
	// Captcha decisions go to the application's challenge page, with the
	// decision passed on from the auth subrequest.
	addCaptchaRoute(t, conf, app.URL)
	startNginx(t, dir, conf, sites)

	ctx := context.Background()
	c := newClient("127.0.0.1")
	other := newClient("127.0.0.2") // a client nginx does not trust
	url := func(s site, path string) string { return "http://" + s.listen + path }
	xff := func(ip string) string { return "X-Forwarded-For: " + ip }

	fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.7/32", time.Hour, "crowdsecurity/http-probing")
	fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "203.0.113.0/24", time.Hour, "crowdsecurity/ssh-bf")
	fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "2001:db8:bad::/48", time.Hour, "v6-range")
	fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "198.18.0.0/24", time.Hour, "crowdsecurity/http-crawl")
	waitUntil(t, 10*time.Second, "four decisions loaded", func() bool { return b.metric(t, "portcullis_nginx_bouncer_prefixes") == 4 })

	t.Run("BannedIPGetsBanPage", func(t *testing.T) {
		before := app.hits.Load()
		r := c.get(t, ctx, "GET", url(trusted, "/index.html"), xff("198.51.100.7"))
		if r.status != 403 {
			t.Fatalf("status %d, want 403; body %q", r.status, r.body)
		}
		for _, want := range []string{"<title>Access denied</title>", "Address 198.51.100.7", "reason crowdsecurity/http-probing"} {
			if !strings.Contains(r.body, want) {
				t.Errorf("ban page lacks %q:\n%s", want, r.body)
			}
		}
		if r.header.Get("Content-Type") != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", r.header.Get("Content-Type"))
		}
		// A POST is judged the same (the check is always a GET without body).
		if r := c.get(t, ctx, "POST", url(trusted, "/form"), xff("198.51.100.7")); r.status != 403 {
			t.Errorf("banned POST: %d, want 403", r.status)
		}
		if app.hits.Load() != before {
			t.Error("a banned request reached the upstream")
		}
	})

	t.Run("AllowedIPReachesUpstream", func(t *testing.T) {
		for _, method := range []string{"GET", "POST", "HEAD"} {
			r := c.get(t, ctx, method, url(trusted, "/page"), xff("198.51.100.8"))
			want := "hello from upstream " + method + " /page\n"
			if method == "HEAD" {
				want = ""
			}
			if r.status != 200 || r.body != want {
				t.Errorf("%s: %d %q, want 200 %q", method, r.status, r.body, want)
			}
		}
	})

	t.Run("RangeBanCoversMembers", func(t *testing.T) {
		for ip, want := range map[string]int{
			"203.0.113.0": 403, "203.0.113.1": 403, "203.0.113.200": 403, "203.0.113.255": 403,
			"203.0.112.255": 200, "203.0.114.0": 200,
			"2001:db8:bad:ffff::1": 403, "2001:db8:bad::": 403, "2001:db8:bae::1": 200,
		} {
			if r := c.get(t, ctx, "GET", url(trusted, "/"), xff(ip)); r.status != want {
				t.Errorf("%s: %d, want %d", ip, r.status, want)
			}
		}
	})

	t.Run("CaptchaRoutesToChallenge", func(t *testing.T) {
		r := c.get(t, ctx, "GET", url(trusted, "/shop"), xff("198.18.0.77"))
		want := "captcha challenge for captcha; reason=crowdsecurity/http-crawl; origin=test\n"
		if r.status != 200 || r.body != want {
			t.Errorf("captcha: %d %q, want 200 %q", r.status, r.body, want)
		}
	})

	t.Run("UntrustedForwardedForCannotSpoof", func(t *testing.T) {
		// nginx without set_real_ip_from: the header is the client's word.
		if r := c.get(t, ctx, "GET", url(direct, "/"), xff("198.51.100.7")); r.status != 200 {
			t.Errorf("spoofed ban through a server that trusts no header: %d, want 200", r.status)
		}
		// A banned client nginx does not trust cannot pose as a clean one,
		// neither where nginx reads no header nor where it trusts only 127.0.0.1.
		// From a peer nginx does not trust (127.0.0.2; set_real_ip_from
		// names 127.0.0.1 only) the header is not read either. Loopback
		// addresses are never banned (the shared policy), so a banned
		// untrusted peer cannot be staged here: the header is shown to be
		// ignored by the banned address it names not being judged.
		for _, s := range []site{direct, trusted} {
			if r := other.get(t, ctx, "GET", url(s, "/"), xff("198.51.100.7"), "X-Real-IP: 198.51.100.7"); r.status != 200 {
				t.Errorf("spoofed ban from untrusted 127.0.0.2 via %s: %d, want 200", s.listen, r.status)
			}
		}
		// Asking the bouncer directly with a header from an untrusted peer:
		// judged by the peer (127.0.0.2, clean), not the banned header.
		req, _ := http.NewRequest("GET", "http://"+b.addr+"/check", nil)
		req.Header.Set("X-Real-IP", "198.51.100.7")
		resp, err := other.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		drain(resp)
		if resp.StatusCode != 204 {
			t.Errorf("direct check from untrusted 127.0.0.2 with a banned X-Real-IP: %d, want 204", resp.StatusCode)
		}
	})

	t.Run("DeleteRestoresWithinASecond", func(t *testing.T) {
		fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.20/32", time.Hour, "to-delete")
		waitUntil(t, 5*time.Second, "ban applied", func() bool {
			return c.get(t, ctx, "GET", url(trusted, "/"), xff("198.51.100.20")).status == 403
		})
		fd.publish(t, decisionfeed.OpDelete, decisionfeed.TypeBan, "198.51.100.20/32", 0, "")
		start := time.Now()
		for c.get(t, ctx, "GET", url(trusted, "/"), xff("198.51.100.20")).status != 200 {
			if time.Since(start) > time.Second {
				t.Fatal("still banned one second after the delete was acknowledged")
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("delete took effect %s after it was acknowledged", time.Since(start).Round(time.Millisecond))
	})

	t.Run("ExpiryRestoresOnTime", func(t *testing.T) {
		d := fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.30/32", 4*time.Second, "short")
		waitUntil(t, 2*time.Second, "short ban applied", func() bool {
			return c.get(t, ctx, "GET", url(trusted, "/"), xff("198.51.100.30")).status == 403
		})
		// The margin before until absorbs a slow request on a busy machine.
		time.Sleep(time.Until(d.Until) - time.Second)
		if r := c.get(t, ctx, "GET", url(trusted, "/"), xff("198.51.100.30")); r.status != 403 {
			t.Errorf("one second before until: %d, want 403", r.status)
		}
		time.Sleep(time.Until(d.Until) + 50*time.Millisecond)
		if r := c.get(t, ctx, "GET", url(trusted, "/"), xff("198.51.100.30")); r.status != 200 {
			t.Errorf("50ms after until: %d, want 200", r.status)
		}
	})

	t.Run("AllowAnswersCached", func(t *testing.T) {
		before := b.metric(t, `portcullis_nginx_bouncer_checks_total{verdict="allow"}`)
		for range 5 {
			if r := c.get(t, ctx, "GET", url(cached, "/"), xff("198.51.100.40")); r.status != 200 {
				t.Fatalf("cached site: %d, want 200", r.status)
			}
		}
		if got := b.metric(t, `portcullis_nginx_bouncer_checks_total{verdict="allow"}`) - before; got != 1 {
			t.Errorf("bouncer asked %v times for five requests of one client, want 1", got)
		}
		// Bans are never cached.
		banBefore := b.metric(t, `portcullis_nginx_bouncer_checks_total{verdict="ban"}`)
		for range 3 {
			if r := c.get(t, ctx, "GET", url(cached, "/"), xff("198.51.100.7")); r.status != 403 {
				t.Fatalf("cached site, banned: %d, want 403", r.status)
			}
		}
		if got := b.metric(t, `portcullis_nginx_bouncer_checks_total{verdict="ban"}`) - banBefore; got != 3 {
			t.Errorf("bouncer asked %v times for three banned requests, want 3", got)
		}
		// A new ban reaches a cached client within the cache validity (5s).
		fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.40/32", time.Hour, "late")
		waitUntil(t, 7*time.Second, "ban of a cached client", func() bool {
			return c.get(t, ctx, "GET", url(cached, "/"), xff("198.51.100.40")).status == 403
		})
	})

	t.Run("FloodOfUniqueClientsIsBounded", func(t *testing.T) {
		n := 200_000
		if testing.Short() {
			n = 20_000
		}
		bad0 := b.metric(t, `portcullis_nginx_bouncer_client_address_invalid_total{header="x-real-ip"}`)
		rss0 := b.rssBytes(t)
		flood(t, c, url(trusted, "/"), b.addr, n)
		rss1 := b.rssBytes(t)
		bad := b.metric(t, `portcullis_nginx_bouncer_client_address_invalid_total{header="x-real-ip"}`) - bad0
		t.Logf("bouncer RSS %d KiB -> %d KiB after %d unique client addresses through nginx", rss0>>10, rss1>>10, n)
		if bad != float64(n/10) {
			t.Errorf("malformed X-Real-IP counted %v times, want %d", bad, n/10)
		}
		// Per-client state of even 50 bytes would add 10 MB here; the
		// allowance covers the runtime's heap growth under load.
		if growth := rss1 - rss0; growth > 24<<20 {
			t.Errorf("bouncer RSS grew by %d KiB over %d unique clients", growth>>10, n)
		}
		// Still answering correctly.
		if r := c.get(t, ctx, "GET", url(trusted, "/"), xff("198.51.100.7")); r.status != 403 {
			t.Errorf("after the flood: %d, want 403", r.status)
		}
	})
}

// flood sends n requests through nginx from distinct client addresses
// (10.x.y.z, none banned), and n/10 requests straight to the bouncer with a
// malformed X-Real-IP, over 8 connections.
func flood(t *testing.T, c *client, url, bouncerAddr string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				target, header := url, "X-Forwarded-For: "+ip.String()
				req, _ := http.NewRequestWithContext(ctx, "GET", target, nil)
				name, value, _ := strings.Cut(header, ": ")
				req.Header.Set(name, value)
				if i%10 == 0 {
					bad, _ := http.NewRequestWithContext(ctx, "GET", "http://"+bouncerAddr+"/check", nil)
					bad.Header.Set("X-Real-IP", "garbage-"+ip.String())
					resp, err := c.http.Do(bad)
					if err != nil {
						failed.Add(1)
					} else {
						drain(resp)
						if resp.StatusCode != 204 {
							failed.Add(1)
						}
					}
				}
				resp, err := c.http.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				drain(resp)
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("flood did not finish: %v", ctx.Err())
	}
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d flood requests failed or were not allowed", f, n)
	}
}

// drain reads the body to its end so that the connection is reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}

// addCaptchaRoute adds the @portcullis_captcha location to every server
// that includes the snippets: the application's challenge page.
func addCaptchaRoute(t *testing.T, conf, appURL string) {
	t.Helper()
	route := fmt.Sprintf(`        location @portcullis_captcha {
            auth_request off;
            proxy_method GET;
            proxy_set_header X-Portcullis-Decision $portcullis_decision;
            rewrite ^ /captcha break;
            proxy_pass %s;
        }
        include portcullis/server.conf;`, appURL)
	replaceInFile(t, conf, "        include portcullis/server.conf;", route)
}

// TestFailModes checks the routing of a bouncer that cannot answer: not
// running at all, and running without its decisions (broker unreachable).
func TestFailModes(t *testing.T) {
	requireNginx(t)
	app := newUpstream(t)
	proxy := fmt.Sprintf("proxy_pass %s;", app.URL)
	open := site{listen: freePort(t), realIP: true, check: "check.conf", failMode: "fail-open.conf", content: proxy}
	closed := site{listen: freePort(t), realIP: true, check: "check.conf", failMode: "fail-closed.conf", content: proxy}
	openCached := site{listen: freePort(t), realIP: true, check: "check-cached.conf", failMode: "fail-open.conf", content: proxy}
	sites := []site{open, closed, openCached}
	dir := t.TempDir()
	bouncerAddr := freePort(t) // nothing listens here yet
	conf := nginxConf(t, dir, bouncerAddr, 1, sites)
	replaceInFile(t, conf, "        include portcullis/server.conf;",
		"        location @portcullis_captcha { auth_request off; return 302 /captcha; }\n        include portcullis/server.conf;")
	startNginx(t, dir, conf, sites)
	ctx := context.Background()
	c := newClient("127.0.0.1")
	check := func(what string, s site, want int) {
		t.Helper()
		r := c.get(t, ctx, "GET", "http://"+s.listen+"/", "X-Forwarded-For: 198.51.100.1")
		if r.status != want {
			t.Errorf("%s, %s: %d %q, want %d", what, s.listen, r.status, r.body, want)
		}
		if want == 503 && r.body != "Service temporarily unavailable.\n" {
			t.Errorf("%s: fail-closed body %q", what, r.body)
		}
	}
	check("bouncer down, fail open", open, 200)
	check("bouncer down, fail open, cached", openCached, 200)
	check("bouncer down, fail closed", closed, 503)

	// A bouncer whose broker is unreachable never gets its snapshot.
	for _, mode := range []string{"open", "closed"} {
		t.Run("unready-"+mode, func(t *testing.T) {
			b := &bouncer{addr: bouncerAddr, metrics: freePort(t)}
			b.process = startProcess(t, bouncerBin, 15, "--listen", bouncerAddr, "--metrics-listen", b.metrics,
				"--brokers", freePort(t), "--topic", "none", "--group", "-", "--fail-mode", mode, "--log-level", "error")
			waitUntil(t, 10*time.Second, "bouncer listening", func() bool {
				resp, err := http.Get("http://" + bouncerAddr + "/ready")
				if err != nil {
					return false
				}
				_ = resp.Body.Close()
				return resp.StatusCode == 503 && resp.Header.Get("X-Portcullis-Fail-Mode") == mode
			})
			// nginx and the bouncer are configured with the same mode.
			if mode == "open" {
				check("unready bouncer", open, 200)
			} else {
				check("unready bouncer", closed, 503)
			}
			if got := b.metric(t, `portcullis_nginx_bouncer_checks_total{verdict="unready_`+mode+`"}`); got != 1 {
				t.Errorf("unready checks counted %v, want 1", got)
			}
			b.stop(15)
		})
	}
}

package nginx

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// TestAuthRequestOverUnixSocket runs the auth_request mode with the
// bouncer on a unix socket: nginx's X-Real-IP is believed without
// --trusted-proxy, and ban, captcha and allow answers go through.
func TestAuthRequestOverUnixSocket(t *testing.T) {
	requireNginx(t)
	app := newUpstream(t)
	fd := newFeed(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "bouncer.sock")
	b := &bouncer{addr: "unix:" + sock, metrics: freePort(t)}
	b.process = startProcess(t, bouncerBin, syscall.SIGTERM, "--listen", b.addr, "--metrics-listen", b.metrics,
		"--brokers", fd.brokers, "--topic", fd.topic, "--group", "-", "--log-level", "warn", "--trusted-proxy", "192.0.2.254")
	waitUntil(t, 10*time.Second, "bouncer on its unix socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeBan, "198.51.100.7/32", time.Hour, "unix-ban")
	fd.publish(t, decisionfeed.OpAdd, decisionfeed.TypeCaptcha, "198.18.0.0/24", time.Hour, "unix-captcha")
	waitUntil(t, 10*time.Second, "two decisions loaded", func() bool { return b.metric(t, "portcullis_nginx_bouncer_prefixes") == 2 })

	s := site{listen: freePort(t), realIP: true, check: "check.conf", failMode: "fail-closed.conf", content: fmt.Sprintf("proxy_pass %s;", app.URL)}
	conf := nginxConf(t, dir, "unix:"+sock, 1, []site{s})
	addCaptchaRoute(t, conf, app.URL)
	startNginx(t, dir, conf, []site{s})
	c := newClient("127.0.0.1")
	ctx := context.Background()
	for ip, want := range map[string]int{"198.51.100.7": 403, "198.51.100.8": 200, "198.18.0.5": 200} {
		r := c.get(t, ctx, "GET", "http://"+s.listen+"/x", "X-Forwarded-For: "+ip)
		if r.status != want {
			t.Errorf("%s: %d %q, want %d", ip, r.status, r.body, want)
		}
		if ip == "198.18.0.5" && r.body != "captcha challenge for captcha; reason=unix-captcha; origin=test\n" {
			t.Errorf("captcha route: %q", r.body)
		}
	}
}

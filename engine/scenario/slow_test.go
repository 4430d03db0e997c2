package scenario_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

// feed runs events through a set and returns the overflows.
func feed(set *scenario.Set, evs []*event.Event) []scenario.Overflow {
	var out []scenario.Overflow
	for _, ev := range evs {
		out = set.Event(ev, out)
	}
	return out
}

func sshAt(ip string, at time.Duration) *event.Event {
	return &event.Event{Time: w0.Add(at), Source: netip.MustParseAddr(ip), Type: event.TypeSSHFailedAuth, Parser: "sshd", User: "admin"}
}

// A guess every 2 to 15 minutes over hours is caught by the time-based
// scenario (and by neither rate scenario); a user who mistypes twice or
// three times, a few times a day, never is.
func TestSSHTimeBased(t *testing.T) {
	var slow []*event.Event
	at := time.Duration(0)
	for i := range 12 {
		at += time.Duration(2+(i*7)%14) * time.Minute
		slow = append(slow, sshAt("203.0.113.50", at))
	}
	for _, name := range []string{"crowdsecurity/ssh-bf", "crowdsecurity/ssh-slow-bf"} {
		if out := feed(shipped(t, name), slow); len(out) != 0 {
			t.Errorf("%s caught the slow attacker: rate scenarios are not enough, the test proves little", name)
		}
	}
	out := feed(shipped(t, "portcullis/ssh-time-based-bf"), slow)
	if len(out) != 1 || out[0].Events != 8 {
		t.Fatalf("slow brute force: %+v, want one overflow at the 8th guess", out)
	}
	var user []*event.Event
	for day := range 14 {
		for slot, hour := range []int{9, 13, 18} {
			base := time.Duration(day)*24*time.Hour + time.Duration(hour)*time.Hour
			for try := range 2 + (day+slot)%2 {
				user = append(user, sshAt("203.0.113.51", base+time.Duration(try)*25*time.Second))
			}
		}
	}
	set := shipped(t, "portcullis/ssh-time-based-bf")
	if out := feed(set, user); len(out) != 0 {
		t.Fatalf("a user mistyping a few times a day was caught: %+v", out)
	}
}

func httpAt(ip string, at time.Duration, method, path string, status int) *event.Event {
	return &event.Event{Time: w0.Add(at), Source: netip.MustParseAddr(ip), Type: event.TypeHTTPAccess, Parser: "nginx",
		Method: method, Path: path, Proto: "HTTP/1.1", Status: status, UserAgent: "Mozilla/5.0"}
}

// Each shipped quiet-attack scenario fires on its attack and stays silent
// on the look-alike legitimate traffic.
func TestQuietAttacks(t *testing.T) {
	rep := func(n int, every time.Duration, f func(i int) (string, string, int)) []*event.Event {
		var evs []*event.Event
		for i := range n {
			m, p, st := f(i)
			evs = append(evs, httpAt("198.51.100.60", time.Duration(i)*every, m, p, st))
		}
		return evs
	}
	cases := []struct {
		name        string
		fire, quiet []*event.Event
	}{
		{"crowdsecurity/http-bf-wordpress_bf_xmlrpc",
			rep(10, 5*time.Second, func(int) (string, string, int) { return "POST", "/xmlrpc.php", 200 }),
			// A pingback client: a few calls a minute.
			rep(30, 10*time.Second, func(int) (string, string, int) { return "POST", "/xmlrpc.php", 200 })},
		{"crowdsecurity/http-generic-bf",
			rep(10, 3*time.Second, func(i int) (string, string, int) { return "POST", "/api/login", 401 + 2*(i%2) }),
			// Nine refusals, then the right password, then more requests.
			append(rep(9, 3*time.Second, func(int) (string, string, int) { return "POST", "/api/login", 401 }),
				rep(20, time.Second, func(int) (string, string, int) { return "POST", "/api/orders", 200 })...)},
		{"crowdsecurity/http-path-traversal-probing",
			rep(3, 10*time.Second, func(i int) (string, string, int) {
				return "GET", []string{"/static/../../etc/passwd", "/img/..%2f..%2fetc/shadow", "/dl?f=%2e%2e%2f%2e%2e%2fboot.ini"}[i], 400
			}),
			rep(20, time.Second, func(i int) (string, string, int) { return "GET", fmt.Sprintf("/docs/v1.%d/index.html", i), 200 })},
		{"crowdsecurity/http-sqli-probing",
			rep(3, 10*time.Second, func(i int) (string, string, int) {
				return "GET", []string{"/item?id=1%20UNION%20SELECT%20null,null", "/item?id=1'+or+1=1--", "/item?id=1%20AND%20SLEEP(5)"}[i], 200
			}),
			rep(20, time.Second, func(i int) (string, string, int) {
				return "GET", fmt.Sprintf("/search?q=union+station+%d&sort=asc", i), 200
			})},
		{"crowdsecurity/http-backdoors-attempts",
			rep(2, 5*time.Second, func(i int) (string, string, int) {
				return "GET", []string{"/wp-content/c99.php", "/uploads/WSO.php"}[i], 404
			}),
			rep(20, time.Second, func(i int) (string, string, int) { return "GET", fmt.Sprintf("/shop/item-%d.php", i), 200 })},
		{"portcullis/http-admin-interface-probing",
			rep(5, 2*time.Second, func(i int) (string, string, int) {
				return "GET", []string{"/phpmyadmin/", "/pma/", "/admin/login", "/manager/html", "/cpanel"}[i], 404
			}),
			// The site's administrator: the admin page exists and answers.
			rep(20, 2*time.Second, func(i int) (string, string, int) { return "GET", fmt.Sprintf("/admin/page/%d", i), 200 })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if out := feed(shipped(t, c.name), c.fire[:len(c.fire)-1]); len(out) != 0 {
				t.Fatalf("one event short of the attack: %d overflows", len(out))
			}
			if out := feed(shipped(t, c.name), c.fire); len(out) != 1 {
				t.Fatalf("attack: %d overflows, want 1", len(out))
			}
			if out := feed(shipped(t, c.name), c.quiet); len(out) != 0 {
				t.Fatalf("legitimate look-alike: %d overflows, want 0", len(out))
			}
		})
	}
}

package daemon

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// corpus is a small deterministic log with known attackers: nginx access
// lines and auth.log lines, each in time order.
type corpus struct {
	nginx []string
	auth  []string
	// all holds both files' lines merged in time order, as a shipper
	// tailing both would send them.
	all []typedLine
	// attackers maps each attacking address to the one scenario that must
	// catch it; every other address must not be banned.
	attackers map[string]string
}

type stamped struct {
	t    time.Time
	line string
	typ  string
}

type typedLine struct {
	typ, line string
}

// genCorpus writes the corpus with event times from base on. Attack volumes
// are far enough above the thresholds, and decoy volumes below the bucket
// capacities, that the verdicts hold in any order of arrival (lines spread
// over partitions arrive out of order).
func genCorpus(base time.Time) corpus {
	rng := rand.New(rand.NewPCG(7, 11))
	var web, auth []stamped
	access := func(t time.Time, ip, method, path string, status int, ua string) {
		web = append(web, stamped{t: t, typ: "nginx", line: fmt.Sprintf(`%s - - [%s] "%s %s HTTP/1.1" %d %d "-" "%s"`,
			ip, t.Format("02/Jan/2006:15:04:05 -0700"), method, path, status, 200+rng.IntN(5000), ua)})
	}
	sshFail := func(t time.Time, ip, user string, port int) {
		auth = append(auth, stamped{t: t, typ: "syslog", line: fmt.Sprintf("%s bastion sshd[%d]: Failed password for %s from %s port %d ssh2",
			t.Format(time.Stamp), 1000+port%97, user, ip, port)})
	}
	const browser = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
	c := corpus{attackers: map[string]string{
		"203.0.113.10":   "crowdsecurity/http-crawl-non_statics",
		"203.0.113.20":   "crowdsecurity/http-bad-user-agent",
		"2001:db8::30":   "crowdsecurity/http-cve-2021-41773",
		"198.51.100.40":  "crowdsecurity/http-bf-wordpress_bf",
		"2001:db8:1::41": "crowdsecurity/http-bf-wordpress_bf",
		"185.220.101.5":  "crowdsecurity/ssh-bf",
		"2001:db8:2::5":  "crowdsecurity/ssh-bf",
	}}
	// Benign visitors: a page and its assets now and then, over ten minutes.
	for i := range 400 {
		ip := fmt.Sprintf("192.0.2.%d", 100+i%40)
		if i%5 == 0 {
			ip = fmt.Sprintf("2001:db8:ffff::%x", 100+i%7)
		}
		t := base.Add(time.Duration(i) * 1500 * time.Millisecond)
		access(t, ip, "GET", fmt.Sprintf("/blog/post-%d", rng.IntN(30)), 200, browser)
		access(t, ip, "GET", "/static/site.css", 200, browser)
		access(t.Add(time.Second), ip, "GET", fmt.Sprintf("/img/%d.png", rng.IntN(9)), 200, browser)
	}
	// Crawler: 80 distinct pages in 2 s.
	for i := range 80 {
		access(base.Add(60*time.Second+time.Duration(i)*25*time.Millisecond), "203.0.113.10", "GET", fmt.Sprintf("/catalog/item-%d", i), 200, browser)
	}
	// Scanner user agent, one request.
	access(base.Add(90*time.Second), "203.0.113.20", "GET", "/", 200, "sqlmap/1.7.2#stable (https://sqlmap.org)")
	// CVE-2021-41773 path traversal, one request, IPv6.
	access(base.Add(100*time.Second), "2001:db8::30", "GET", "/cgi-bin/.%2e/.%2e/.%2e/.%2e/etc/passwd", 400, "curl/8.4.0")
	// WordPress login brute force: 20 failed logins in 20 s, IPv4 and IPv6.
	for i := range 20 {
		t := base.Add(120*time.Second + time.Duration(i)*time.Second)
		access(t, "198.51.100.40", "POST", "/wp-login.php", 200, browser)
		access(t.Add(300*time.Millisecond), "2001:db8:1::41", "POST", "/wp-login.php", 200, browser)
	}
	// Decoy: 9 failed logins, one short of the bucket (capacity 9), in any order.
	for i := range 9 {
		access(base.Add(150*time.Second+time.Duration(i)*4*time.Second), "198.51.100.50", "POST", "/wp-login.php", 200, browser)
	}
	// Decoy: 45 distinct pages, below the crawl bucket's 49.
	for i := range 45 {
		access(base.Add(200*time.Second+time.Duration(i)*40*time.Millisecond), "203.0.113.60", "GET", fmt.Sprintf("/docs/page-%d", i), 200, browser)
	}
	// The operator's own address, whitelisted, crawling hard.
	for i := range 70 {
		access(base.Add(250*time.Second+time.Duration(i)*10*time.Millisecond), "127.0.0.1", "GET", fmt.Sprintf("/admin/report-%d", i), 200, browser)
	}
	// SSH brute force: 8 failures in 16 s, IPv4 and IPv6.
	for i := range 8 {
		t := base.Add(30*time.Second + time.Duration(i)*2*time.Second)
		sshFail(t, "185.220.101.5", "root", 40000+i)
		sshFail(t.Add(500*time.Millisecond), "2001:db8:2::5", "admin", 41000+i)
	}
	// SSH decoys: four failures (capacity 4), and a user who mistyped twice.
	for i := range 4 {
		sshFail(base.Add(200*time.Second+time.Duration(i)*time.Second), "198.51.100.77", "deploy", 42000+i)
	}
	for i := range 2 {
		sshFail(base.Add(300*time.Second+time.Duration(i)*5*time.Second), "192.0.2.200", "alice", 43000+i)
	}
	auth = append(auth, stamped{t: base.Add(301 * time.Second), typ: "syslog", line: base.Add(301*time.Second).Format(time.Stamp) +
		" bastion sshd[99]: Accepted password for alice from 192.0.2.200 port 43002 ssh2"})
	// Malformed lines: parse errors, not events.
	web = append(web, stamped{t: base.Add(5 * time.Second), typ: "nginx", line: "this is not an access log line"})
	web = append(web, stamped{t: base.Add(6 * time.Second), typ: "nginx", line: `192.0.2.1 - - [32/Foo/2026:99:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"`})
	auth = append(auth, stamped{t: base.Add(7 * time.Second), typ: "syslog", line: "garbage in auth.log"})

	byTime := func(a, b stamped) int { return a.t.Compare(b.t) }
	sortLines := func(s []stamped) []string {
		slices.SortStableFunc(s, byTime)
		out := make([]string, len(s))
		for i := range s {
			out[i] = s[i].line
		}
		return out
	}
	c.nginx, c.auth = sortLines(web), sortLines(auth)
	merged := append(slices.Clone(web), auth...)
	slices.SortStableFunc(merged, byTime)
	for _, m := range merged {
		c.all = append(c.all, typedLine{m.typ, m.line})
	}
	return c
}

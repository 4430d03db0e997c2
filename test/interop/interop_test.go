package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/broker"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// portcullisBin is the portcullis binary built once by TestMain.
var portcullisBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "portcullis-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop: temp dir:", err)
		os.Exit(1)
	}
	portcullisBin = filepath.Join(dir, "portcullis")
	out, err := exec.Command("go", "build", "-o", portcullisBin,
		"github.com/portcullis-ips/portcullis/cmd/portcullis").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop: go build ./cmd/portcullis: %v\n%s", err, out)
		removeAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	removeAll(dir)
	os.Exit(code)
}

func removeAll(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintln(os.Stderr, "interop: remove build dir:", err)
	}
}

// requireTool skips the test when a client it needs is missing, or fails it
// when CI=true: CI installs every client, so a missing one there is a bug.
func requireTool(t *testing.T, name string, check ...string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		missing(t, fmt.Sprintf("%s not found on PATH", name))
		return
	}
	if len(check) > 0 {
		if out, err := exec.Command(name, check...).CombinedOutput(); err != nil {
			missing(t, fmt.Sprintf("%s %s: %v: %s", name, strings.Join(check, " "), err, bytes.TrimSpace(out)))
		}
	}
}

func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs %s (scripts/deps.sh installs it)", why)
	}
	t.Skipf("needs %s; run scripts/deps.sh", why)
}

// published is what `portcullis decisions` was asked to publish, and the id it reported.
type published struct {
	id       string
	op       decisionfeed.Op
	typ      decisionfeed.Type
	scope    decisionfeed.Scope
	value    string
	duration string
}

var idRE = regexp.MustCompile(`(?m)\(id ([0-9a-f]{32})\)$`)

// portcullis runs `portcullis decisions ARGS... --brokers B` and returns the
// decision id it printed.
func portcullis(t *testing.T, brokers []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append(append([]string{"decisions"}, args...), "--brokers", strings.Join(brokers, ","))
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, portcullisBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("portcullis %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	m := idRE.FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("portcullis %s: no decision id in output %q", strings.Join(args, " "), stdout.String())
	}
	return m[1]
}

// randomSuffix returns n random bytes; addresses built from them keep the
// decisions of one run apart from earlier runs on a long-lived Kafka.
func randomSuffix(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// publishMix creates the decisions topic when needed and publishes, with the
// portcullis CLI, an IPv4 ban, an IPv6 ban, a range ban and a captcha
// decision. It returns them in publish order.
func publishMix(t *testing.T, brokers []string) []published {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// On a fresh embedded broker the topic does not exist yet; on a shared
	// Kafka it may, which CreateTopic accepts.
	err := feedtest.CreateTopic(ctx, brokers, decisionfeed.TopicDecisions,
		decisionfeed.PartitionsDecisions, broker.CompactConfigs())
	if err != nil {
		t.Fatalf("create topic %s: %v", decisionfeed.TopicDecisions, err)
	}

	r := randomSuffix(t, 8)
	v4 := netip.AddrFrom4([4]byte{203, 0, 113, r[0]}).String()
	v6 := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: r[1], 15: r[2]}).String()
	rng := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, r[3] &^ 0x0f}), 28).String()
	cap4 := netip.AddrFrom4([4]byte{192, 0, 2, r[4]}).String()

	ds := []published{
		{op: decisionfeed.OpAdd, typ: decisionfeed.TypeBan, scope: decisionfeed.ScopeIP, value: v4, duration: "4h0m0s"},
		{op: decisionfeed.OpAdd, typ: decisionfeed.TypeBan, scope: decisionfeed.ScopeIP, value: v6, duration: "1h0m0s"},
		{op: decisionfeed.OpAdd, typ: decisionfeed.TypeBan, scope: decisionfeed.ScopeRange, value: rng, duration: "24h0m0s"},
		{op: decisionfeed.OpAdd, typ: decisionfeed.TypeCaptcha, scope: decisionfeed.ScopeIP, value: cap4, duration: "30m0s"},
	}
	ds[0].id = portcullis(t, brokers, "add", "--ip", v4, "--duration", "4h", "--reason", "interop v4")
	ds[1].id = portcullis(t, brokers, "add", "--ip", v6, "--duration", "1h", "--scenario", "crowdsecurity/ssh-bf")
	ds[2].id = portcullis(t, brokers, "add", "--range", rng, "--duration", "24h")
	ds[3].id = portcullis(t, brokers, "add", "--ip", cap4, "--duration", "30m", "--type", "captcha")
	return ds
}

// publishDelete publishes, with the portcullis CLI, the delete of d's key.
func publishDelete(t *testing.T, brokers []string, d published) published {
	t.Helper()
	flag := "--ip"
	if d.scope == decisionfeed.ScopeRange {
		flag = "--range"
	}
	// A delete carries duration "0s" so that op-unaware consumers, which read
	// decision['duration'] of every message, can read past it.
	del := published{op: decisionfeed.OpDelete, typ: decisionfeed.TypeBan, scope: d.scope, value: d.value, duration: "0s"}
	del.id = portcullis(t, brokers, "delete", flag, d.value)
	return del
}

// seedLine is one line the seed consumer prints per message.
type seedLine struct {
	ID       string `json:"id"`
	Action   string `json:"action"`
	IP       string `json:"ip"`
	Value    string `json:"value"`
	Duration string `json:"duration"`
}

// runSeedConsumer runs testdata/seed_consumer.py in a group of its own until
// it has seen every decision of ds, and returns its lines by decision id.
func runSeedConsumer(t *testing.T, brokers []string, ds []published) map[string]seedLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	group := "interop-seed-" + hex.EncodeToString(randomSuffix(t, 6))
	args := []string{"testdata/seed_consumer.py", strings.Join(brokers, ","), decisionfeed.TopicDecisions, group}
	for _, d := range ds {
		args = append(args, d.id)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "python3", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("seed consumer: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	got := map[string]seedLine{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var l seedLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("seed consumer printed %q: %v", sc.Text(), err)
		}
		got[l.ID] = l
	}
	return got
}

// TestSeedPythonConsumer runs the seed's kafka-python consumer on the
// decisions topic and checks that it applies exactly the bans that
// `portcullis decisions add` published, with their values and durations, and
// skips the captcha decision.
func TestSeedPythonConsumer(t *testing.T) {
	requireTool(t, "python3", "-c", "import kafka")
	brokers := feedtest.Brokers(t)
	ds := publishMix(t, brokers)

	got := runSeedConsumer(t, brokers, ds)
	for _, d := range ds {
		want := seedLine{ID: d.id, Action: "ban", IP: d.value, Duration: d.duration}
		if d.typ != decisionfeed.TypeBan {
			want = seedLine{ID: d.id, Action: "skip", Value: d.value}
		}
		if got[d.id] != want {
			t.Errorf("seed consumer on %s %s: got %+v, want %+v", d.typ, d.value, got[d.id], want)
		}
	}
}

// TestSeedPythonConsumerSurvivesDelete publishes a ban and then its delete
// with `portcullis decisions delete`, and checks that the seed's consumer,
// which knows nothing of op, reads past the delete: DESIGN.md says it must
// work unchanged on this topic, and it reads decision['type'],
// decision['value'] and decision['duration'] of every message.
func TestSeedPythonConsumerSurvivesDelete(t *testing.T) {
	requireTool(t, "python3", "-c", "import kafka")
	brokers := feedtest.Brokers(t)
	ds := publishMix(t, brokers)
	del := publishDelete(t, brokers, ds[0])
	got := runSeedConsumer(t, brokers, append(ds, del))
	// The seed's consumer ignores op: a delete of type ban is, to it, a ban
	// of no duration — it runs its iptables -A again, a duplicate rule it
	// never removes (it removes none). What matters is that it reads on.
	want := seedLine{ID: del.id, Action: "ban", IP: del.value, Duration: "0s"}
	if l := got[del.id]; l != want {
		t.Errorf("seed consumer on the delete of %s: got %+v, want %+v", del.value, l, want)
	}
	for _, d := range ds {
		if _, ok := got[d.id]; !ok {
			t.Errorf("seed consumer: no line for %s %s", d.typ, d.value)
		}
	}
}

// TestKcatReadsDecisions reads the decisions topic with kcat and checks that
// every decision `portcullis decisions add` and `delete` published is there,
// under its scope:value@origin key, as schema v1 JSON that decisionfeed accepts.
func TestKcatReadsDecisions(t *testing.T) {
	requireTool(t, "kcat", "-V")
	brokers := feedtest.Brokers(t)
	ds := publishMix(t, brokers)
	ds = append(ds, publishDelete(t, brokers, ds[0]))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "kcat", "-C", "-b", strings.Join(brokers, ","),
		"-t", decisionfeed.TopicDecisions, "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat: %v\nstderr: %s", err, stderr.String())
	}

	got := map[string]decisionfeed.Decision{}
	keys := map[string]string{}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			t.Fatalf("kcat line %q: no key/value separator", sc.Text())
		}
		d, err := decisionfeed.Decode([]byte(value), decisionfeed.DefaultLimits())
		if err != nil {
			t.Errorf("kcat line %q: %v", sc.Text(), err)
			continue
		}
		got[d.ID], keys[d.ID] = d, key
	}
	var ids []string
	for _, want := range ds {
		ids = append(ids, want.id)
		d, ok := got[want.id]
		if !ok {
			t.Errorf("kcat: decision %s (%s %s) not on the topic", want.id, want.typ, want.value)
			continue
		}
		if d.Op != want.op || d.Type != want.typ || d.Scope != want.scope || d.Value != want.value ||
			d.Duration != want.duration || d.Origin != "cli" {
			t.Errorf("kcat: decision %s = %+v, want op %s type %s scope %s value %s duration %s origin cli",
				want.id, d, want.op, want.typ, want.scope, want.value, want.duration)
		}
		if wantKey := string(want.scope) + ":" + want.value + "@cli"; keys[want.id] != wantKey {
			t.Errorf("kcat: decision %s has key %q, want %q", want.id, keys[want.id], wantKey)
		}
	}
	if !feedtest.External() && len(got) != len(ds) {
		// A fresh embedded broker holds only this test's messages.
		var extra []string
		for id := range got {
			if !slices.Contains(ids, id) {
				extra = append(extra, id)
			}
		}
		t.Errorf("kcat: %d messages, want %d; unexpected ids %v", len(got), len(ds), extra)
	}
}

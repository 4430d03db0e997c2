package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/internal/syncbuf"
)

// crowdsecRoot is where scripts/deps.sh unpacks Debian's crowdsec package
// (PORTCULLIS_CROWDSEC_ROOT overrides it).
func crowdsecRoot(t *testing.T) string {
	t.Helper()
	root := os.Getenv("PORTCULLIS_CROWDSEC_ROOT")
	if root == "" {
		root = "/opt/portcullis/crowdsec"
	}
	if _, err := os.Stat(filepath.Join(root, "usr/bin/crowdsec")); err != nil {
		missing(t, "Debian's crowdsec unpacked in "+root)
	}
	return root
}

// offlineCrowdSec is a real CrowdSec 1.4.6 LAPI on loopback with sqlite,
// its Central API left out of the configuration so it contacts nobody.
type offlineCrowdSec struct {
	root, dir, cfg, url string
	out                 syncbuf.Buffer
}

func startOfflineCrowdSec(t *testing.T) *offlineCrowdSec {
	t.Helper()
	cs := &offlineCrowdSec{root: crowdsecRoot(t), dir: t.TempDir()}
	cs.url = "http://" + freeAddr(t)
	for _, d := range []string{"data", "hub", "notifications"} {
		if err := os.MkdirAll(filepath.Join(cs.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(cs.root, "etc/crowdsec")
	cs.cfg = filepath.Join(cs.dir, "config.yaml")
	// No api.server.online_client: CrowdSec then says "Communication with
	// CrowdSec Central API disabled" and never dials out.
	cfg := fmt.Sprintf(`common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: .
config_paths:
  config_dir: %[2]s/
  data_dir: %[1]s/data/
  simulation_path: %[2]s/simulation.yaml
  hub_dir: %[1]s/hub/
  index_path: %[1]s/hub/.index.json
  notification_dir: %[1]s/notifications/
  plugin_dir: %[3]s/usr/lib/crowdsec/plugins/
crowdsec_service:
  acquisition_path: %[2]s/acquis.yaml
  parser_routines: 1
cscli:
  output: json
db_config:
  log_level: info
  type: sqlite
  use_wal: false
  db_path: %[1]s/data/crowdsec.db
api:
  client:
    insecure_skip_verify: false
    credentials_path: %[1]s/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: %[4]s
    profiles_path: %[2]s/profiles.yaml
    console_path: %[1]s/console.yaml
    trusted_ips:
      - 127.0.0.1
prometheus:
  enabled: false
  level: full
  listen_addr: 127.0.0.1
  listen_port: 6060
`, cs.dir, etc, cs.root, strings.TrimPrefix(cs.url, "http://"))
	if err := os.WriteFile(cs.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cs.dir, "console.yaml"), []byte("share_manual_decisions: false\nshare_custom: false\nshare_tainted: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cs.cscli(t, "machines", "add", "portcullis-test", "--auto", "-f", filepath.Join(cs.dir, "local_api_credentials.yaml"))
	cmd := exec.Command(filepath.Join(cs.root, "usr/bin/crowdsec"), "-c", cs.cfg, "-no-cs")
	cmd.Stdout, cmd.Stderr = &cs.out, &cs.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // killed: its exit status says so
	})
	waitUntil(t, 30*time.Second, "CrowdSec's LAPI", func() bool {
		resp, err := http.Get(cs.url + "/v1/decisions/stream") // 403 without a key: it answers
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return true
	}, cs.out.String)
	return cs
}

// cscli runs CrowdSec's cscli against the test's configuration.
func (cs *offlineCrowdSec) cscli(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(cs.root, "usr/bin/cscli"), append([]string{"-c", cs.cfg}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("cscli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCrowdsecPullAgainstCrowdSec: with Debian's CrowdSec 1.4.6 offline, a
// CLI ban on X survives crowdsec-pull (re)starts although CrowdSec lists X
// under "deleted"; CrowdSec's own decision W arrives with origin
// crowdsec:cscli and goes when cscli deletes it; CrowdSec does not complain
// about the puller's User-Agent.
func TestCrowdsecPullAgainstCrowdSec(t *testing.T) {
	cs := startOfflineCrowdSec(t)
	key := strings.TrimSpace(cs.cscli(t, "bouncers", "add", "portcullis-pull", "-o", "raw"))
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	const x, w = "192.0.2.77", "198.51.100.40"
	portcullis(t, brokers, "add", "--ip", x, "--duration", "24h", "--topic", topic)
	cs.cscli(t, "decisions", "add", "--ip", x, "--duration", "1h")
	cs.cscli(t, "decisions", "delete", "--ip", x)
	cs.cscli(t, "decisions", "add", "--ip", w, "--duration", "1h", "--reason", "interop")

	pull := func(args ...string) *exec.Cmd {
		cmd := exec.Command(portcullisBin, append([]string{"crowdsec-pull", "--lapi-url", cs.url,
			"--brokers", strings.Join(brokers, ","), "--topic", topic, "--log-level", "warn"}, args...)...)
		cmd.Env = append(os.Environ(), "PORTCULLIS_LAPI_KEY="+key)
		return cmd
	}
	for range 2 { // a start and a restart: each begins with a startup poll
		if out, err := pull("--once").CombinedOutput(); err != nil {
			t.Fatalf("crowdsec-pull --once: %v\n%s", err, out)
		}
	}
	live := func() map[string]string {
		out, err := exec.Command(portcullisBin, "decisions", "list", "-o", "json", "--brokers", strings.Join(brokers, ","), "--topic", topic).Output()
		if err != nil {
			t.Fatalf("decisions list: %v", err)
		}
		var ds []decisionfeed.Decision
		if err := json.Unmarshal(out, &ds); err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, d := range ds {
			m[d.Value] = d.Origin
		}
		return m
	}
	if got := live(); got[x] != "cli" || got[w] != "crowdsec:cscli" || len(got) != 2 {
		t.Fatalf("after two crowdsec-pull starts: %v, want %s by cli and %s by crowdsec:cscli", got, x, w)
	}

	// Following: CrowdSec's deletion of its own decision comes through.
	follow := pull("--interval", "300ms")
	var fout syncbuf.Buffer
	follow.Stdout, follow.Stderr = &fout, &fout
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = follow.Process.Kill()
		_ = follow.Wait() // killed: its exit status says so
	})
	time.Sleep(time.Second) // its startup poll is done
	cs.cscli(t, "decisions", "delete", "--ip", w)
	waitUntil(t, 30*time.Second, "W withdrawn", func() bool { _, ok := live()[w]; return !ok }, fout.String)
	if got := live(); got[x] != "cli" || len(got) != 1 {
		t.Fatalf("after CrowdSec deleted W: %v, want only %s by cli", got, x)
	}
	if strings.Contains(strings.ToLower(cs.out.String()), "bad user agent") {
		t.Fatalf("CrowdSec complained about the User-Agent:\n%s", cs.out.String())
	}
}

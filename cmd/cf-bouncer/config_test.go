package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/internal/bouncertest"
)

func TestConfigFileThenFlags(t *testing.T) {
	p := bouncertest.WriteFile(t, "cf.yaml", `account_id: acc1
zone_ids: [z1, z2]
item_limit: 500
scenario_priority:
  crowdsecurity/http-cve: 10
brokers: ["k1:9092"]
debounce: 5s
max_delay: 1m
`)
	cfg, o, err := parseArgs([]string{"--config", p, "--zone-id", "z3", "--zone-id", "z4,z5", "--once"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cloudflare.AccountID != "acc1" || !slices.Equal(cfg.Cloudflare.ZoneIDs, []string{"z3", "z4", "z5"}) ||
		cfg.Cloudflare.ItemLimit != 500 || cfg.Cloudflare.ScenarioPriority["crowdsecurity/http-cve"] != 10 ||
		!slices.Equal(cfg.Brokers, []string{"k1:9092"}) || cfg.Debounce != 5*time.Second || !o.once {
		t.Fatalf("cfg = %+v", cfg)
	}
	if cfg.Cloudflare.APIBase != "https://api.cloudflare.com/client/v4" || cfg.Cloudflare.BanList != "portcullis_ban" {
		t.Fatalf("defaults lost: %+v", cfg.Cloudflare)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		file string
		args []string
		want string
	}{
		{"account_id: a\nzone_id: z\n", nil, "line 2: field zone_id not found in type main.Config"},
		{"account_id: a\nitem_limit: lots\n", nil, "line 2: cannot unmarshal !!str `lots` into int"},
		{"account_id: a\n---\naccount_id: b\n", nil, "line 2: a second YAML document; one per file"},
		{"zone_ids: [z]\n", nil, "config: account_id: empty"},
		{"account_id: a\n", []string{"--api-base", "api.cloudflare.com"}, `config: api_base: "api.cloudflare.com" is not an http(s) URL`},
		{"account_id: a\n", []string{"--zone-id", "z", "--zone-id", "z"}, `config: zone_ids[1]: "z" given twice`},
		{"account_id: a\ndebounce: 1m\nmax_delay: 10s\n", nil, "config: max_delay: 10s is shorter than debounce 1m0s"},
		{"account_id: a\n", []string{"--mode", "rules"}, `config: mode: "rules" is neither lists nor access_rules`},
	}
	for _, tc := range cases {
		p := bouncertest.WriteFile(t, "cf.yaml", tc.file)
		_, _, err := parseArgs(append([]string{"--config", p}, tc.args...), io.Discard)
		if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
			t.Errorf("%q %v: err = %v, want ...%s", tc.file, tc.args, err, tc.want)
		}
	}
}

func TestReadToken(t *testing.T) {
	t.Setenv("CLOUDFLARE_API_TOKEN", "  env-token \n")
	if got, err := readToken(""); err != nil || got != "env-token" {
		t.Fatalf("env: %q %v", got, err)
	}
	p := bouncertest.WriteFile(t, "cf-token", "file-token\n")
	if got, err := readToken(p); err != nil || got != "file-token" {
		t.Fatalf("file: %q %v", got, err)
	}
	p = bouncertest.WriteFile(t, "cf-token", "two words\n")
	if _, err := readToken(p); err == nil || err.Error() != "token file "+p+": more than one word" {
		t.Fatalf("two words: %v", err)
	}
	t.Setenv("CLOUDFLARE_API_TOKEN", "")
	if _, err := readToken(""); err == nil || err.Error() != "no API token: set CLOUDFLARE_API_TOKEN or --token-file" {
		t.Fatalf("none: %v", err)
	}
}

// TestShippedConfig: config/cf-bouncer.yaml decodes and validates.
func TestShippedConfig(t *testing.T) {
	cfg, _, err := parseArgs([]string{"--config", "../../config/cf-bouncer.yaml"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Policy.Origins) != 2 || len(cfg.Policy.Types) != 1 || cfg.HeartbeatInterval != 30*time.Second {
		t.Fatalf("policy = %+v", cfg.Policy)
	}
}

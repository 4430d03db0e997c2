package scenario_test

import (
	"testing"

	"github.com/portcullis-ips/portcullis/config/scenarios"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

// The shipped scenarios load, and every filter runs natively (no subtree
// left to the expr VM), which the throughput target depends on.
func TestShippedScenarios(t *testing.T) {
	scs, err := scenario.LoadFS(scenarios.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"crowdsecurity/CVE-2017-9841",
		"crowdsecurity/apache_log4j2_cve-2021-44228",
		"crowdsecurity/http-cve-2021-41773",
		"crowdsecurity/http-cve-2021-42013",
		"crowdsecurity/http-bad-user-agent",
		"crowdsecurity/http-sensitive-files",
		"crowdsecurity/http-bf-wordpress_bf",
		"crowdsecurity/http-bf-wordpress_bf_xmlrpc",
		"crowdsecurity/http-generic-bf",
		"crowdsecurity/http-backdoors-attempts",
		"crowdsecurity/http-path-traversal-probing",
		"crowdsecurity/http-sqli-probing",
		"portcullis/suricata-alerts",
		"crowdsecurity/ssh-bf",
		"crowdsecurity/ssh-slow-bf",
		"portcullis/ssh-time-based-bf",
		"portcullis/http-l7-flood",
		"portcullis/http-admin-interface-probing",
		"crowdsecurity/http-crawl-non_statics",
		"crowdsecurity/http-probing",
	}
	if len(scs) != len(want) {
		t.Fatalf("loaded %d scenarios, want %d", len(scs), len(want))
	}
	for i, s := range scs {
		if s.Name != want[i] {
			t.Errorf("scenario %d = %s, want %s", i, s.Name, want[i])
		}
		if n := scenario.VMNodes(s); n != 0 {
			t.Errorf("%s: %d filter subtrees run by the expr VM, want 0", s.Name, n)
		}
	}
}

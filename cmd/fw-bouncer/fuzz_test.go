package main

import (
	"strings"
	"testing"

	"github.com/portcullis-ips/portcullis/internal/config"
)

// FuzzDecodeConfig feeds arbitrary YAML to the strict decoder: it must
// never panic, and every error must name the file.
func FuzzDecodeConfig(f *testing.F) {
	for _, s := range []string{
		"mode: xdp\nxdp:\n  interfaces: [eth0]\n",
		"whitelist: [192.0.2.1, 198.51.100.0/24, 2001:db8::/32]\n",
		"whitelist:\n  - {a: 1}\n",
		"coalesce: 5ms\nsweep_interval: 1m\n",
		"nftables:\n  table: portcullis\n  ingress: [eth0]\niptables:\n  hooks: [INPUT, FORWARD]\n",
		"mode: xdp\n---\nmode: nftables\n",
		"brokers: 7\n",
		"unknown: true\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		c := DefaultConfig()
		err := config.Decode("fuzz.yaml", []byte(body), &c)
		if err != nil && !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
			t.Fatalf("error does not name the file: %v", err)
		}
		if err == nil {
			for _, p := range c.Policy.Whitelist {
				if !p.IsValid() || p.Masked() != p {
					t.Fatalf("whitelist holds %v, not a valid masked prefix", p)
				}
			}
		}
	})
}

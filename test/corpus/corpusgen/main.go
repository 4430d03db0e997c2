// Command corpusgen writes a detection corpus (see package corpus): an nginx
// access.log and an auth.log with known attackers, decoys and benign
// traffic, manifest.json with the exact expected alerts, and profiles.yaml.
//
//	go run ./test/corpus/corpusgen -out /tmp/corpus -nginx-lines 1000000 -auth-lines 200000
//	portcullis replay --type nginx --profiles /tmp/corpus/profiles.yaml /tmp/corpus/access.log
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/portcullis-ips/portcullis/test/corpus"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "corpusgen:", err)
		os.Exit(1)
	}
}

func run() error {
	def := corpus.DefaultOptions()
	out := flag.String("out", "", "directory to write the corpus into (created)")
	seed := flag.Uint64("seed", def.Seed, "random seed; the same seed writes the same files")
	start := flag.String("start", def.Start.Format(time.RFC3339), "time of the first line (RFC 3339)")
	nginx := flag.Int("nginx-lines", def.NginxLines, "approximate number of access.log lines")
	auth := flag.Int("auth-lines", def.AuthLines, "approximate number of auth.log lines")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		flag.Usage()
		return fmt.Errorf("usage: -out DIR is required and takes no arguments")
	}
	t, err := time.Parse(time.RFC3339, *start)
	if err != nil {
		return fmt.Errorf("-start %q: %w", *start, err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", *out, err)
	}
	m, err := corpus.Write(*out, corpus.Options{Seed: *seed, Start: t, NginxLines: *nginx, AuthLines: *auth})
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s: access.log %d lines, auth.log %d lines, %d expected alerts, %d decoys\n",
		*out, m.NginxLines, m.AuthLines, len(m.Expected), len(m.Decoys))
	return nil
}

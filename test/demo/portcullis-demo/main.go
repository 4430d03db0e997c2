//go:build linux

// Command portcullis-demo runs the single-host Portcullis demo (see package
// demo): `make demo` builds it with portcullis and fw-bouncer and runs it
// as root. It exits 1 when the attacker was not blocked, the bystander
// was hurt, or anything could not be set up or cleaned up.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/portcullis-ips/portcullis/internal/cli"
	"github.com/portcullis-ips/portcullis/test/demo"
)

const usage = `NAME
    portcullis-demo - the single-host Portcullis demo (make demo)

SYNOPSIS
    portcullis-demo [--bin DIR] [--timeout D] [--result FILE]

DESCRIPTION
    Creates three network namespaces (server, attacker, bystander), runs
    the embedded broker, nginx, the engine and fw-bouncer (XDP) in the
    server one, attacks from the attacker one while the bystander browses,
    prints what happens and removes everything. fw-bouncer runs with only
    the capabilities of its systemd unit. Needs root, ip(8), nsenter(1),
    setpriv(1) and nginx (scripts/deps.sh demo installs them).

EXAMPLES
    make demo
    sudo bin/portcullis-demo --bin bin --result /tmp/demo.json

OPTIONS
`

func main() {
	if len(os.Args) > 2 && os.Args[1] == "role" {
		// A role process, started by the demo inside a namespace.
		if err := demo.RunRole(context.Background(), os.Args[2], os.Args[3:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "portcullis-demo:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := cli.SignalContext()
	err := run(ctx)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "portcullis-demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	fs := flag.NewFlagSet("portcullis-demo", flag.ContinueOnError)
	fs.Usage = func() { _, _ = fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own path: %w", err)
	}
	binDir := fs.String("bin", filepath.Dir(self), "directory holding portcullis and fw-bouncer")
	timeout := fs.Duration("timeout", 100*time.Second, "bound on the whole run")
	resultFile := fs.String("result", "", "write the observed result as JSON to this file")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("command line: unexpected argument %q", fs.Arg(0))
	}
	res, err := demo.Run(ctx, demo.Config{BinDir: *binDir, Self: self, Out: os.Stdout, Timeout: *timeout})
	if res != nil && *resultFile != "" {
		b, jerr := json.MarshalIndent(res, "", "  ")
		if jerr == nil {
			jerr = os.WriteFile(*resultFile, b, 0o644)
		}
		if jerr != nil {
			err = errors.Join(err, fmt.Errorf("write %s: %w", *resultFile, jerr))
		}
	}
	if err != nil {
		return err
	}
	if cerr := res.Check(); cerr != nil {
		return fmt.Errorf("the demo did not show what it must:\n%w", cerr)
	}
	fmt.Println("\nportcullis-demo: attacker blocked, bystander served, everything removed")
	return nil
}

// Command portcullis is the Portcullis suite's main binary: the detection
// engine, the embedded broker and the operator commands. Each subcommand
// lives in its own file and has one row in the commands table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/portcullis-ips/portcullis/internal/cli"
)

// command is one subcommand: its name, a one-line summary for the command
// list, and the function that parses its arguments and runs it.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

// commands is the subcommand table; a new subcommand is a file and a row here.
var commands = []command{
	{"alerts", "list the engine's alerts from the alerts topic", runAlerts},
	{"blocklist", "import an IP blocklist as decisions (adds and deletes against its last import)", runBlocklist},
	{"bouncers", "list the bouncers from their heartbeats", runBouncers},
	{"broker", "run the embedded Kafka-protocol broker (one host, tests)", runBroker},
	{"console", "serve the web console: alerts, decisions, bouncers, live", runConsole},
	{"crowdsec-pull", "republish a CrowdSec LAPI decision stream onto the decision feed", runCrowdsecPull},
	{"decisions", "list, add or delete ban decisions on the decision feed", runDecisions},
	{"engine", "run the detection engine live over the sources of an acquis.yaml", runEngine},
	{"lapi", "serve the CrowdSec Local API bouncer endpoints from the decision feed", runLAPI},
	{"metrics", "show engine counters per parser and scenario, and topic and consumer-lag health", runMetrics},
	{"notify", "send the engine's alerts to webhooks, Slack and email", runNotify},
	{"replay", "run detection over log files offline and print the alerts", runReplay},
	{"scenarios", "list the loaded scenarios, or inspect one: file, thresholds, remedy, duration", runScenarios},
}

// errUsage marks an error in the command line; main exits with status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := cli.SignalContext()
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "portcullis:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "portcullis:", err)
		os.Exit(1)
	}
}

// run dispatches to the subcommand named by args[0].
func run(ctx context.Context, args []string, stdout io.Writer) error {
	// usage on stderr goes with an error, which is what the caller reports;
	// a failed write of it has nowhere better to go.
	if len(args) == 0 {
		_ = usage(os.Stderr)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return usage(stdout)
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout)
		}
	}
	_ = usage(os.Stderr)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

func usage(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`NAME
    portcullis - intrusion prevention: detection engine, decision feed, operator tools

SYNOPSIS
    portcullis COMMAND [OPTIONS]

COMMANDS
`)
	for _, c := range commands {
		fmt.Fprintf(&b, "    %-14s %s\n", c.name, c.summary)
	}
	b.WriteString(`
    Run "portcullis COMMAND --help" for the options and examples of a command.

EXAMPLES
    portcullis broker --data-dir /var/lib/portcullis/broker
    portcullis decisions add --ip 203.0.113.7 --duration 4h --reason "manual ban"
    portcullis decisions list
`)
	_, err := io.WriteString(w, b.String())
	return err
}

// helpOut receives the manual pages that --help prints.
var helpOut io.Writer = os.Stdout

// newFlagSet returns a flag set for a subcommand whose --help prints a
// manual page to stdout: name, synopsis, description, options and examples.
// Parse errors print nothing; parse returns them.
func newFlagSet(name, synopsis, description, examples string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		var b strings.Builder
		fmt.Fprintf(&b, "NAME\n    portcullis %s\n\nSYNOPSIS\n    %s\n\nDESCRIPTION\n%s\nOPTIONS\n", name, synopsis, indent(description))
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		fmt.Fprintf(&b, "\nEXAMPLES\n%s", indent(examples))
		// flag.FlagSet.Usage has no error to return, and the flag package
		// ignores its own output errors the same way.
		_, _ = io.WriteString(helpOut, b.String())
	}
	return fs
}

// checkOutput checks an -o value against the formats a command prints.
func checkOutput(output string, formats ...string) error {
	if !slices.Contains(formats, output) {
		return fmt.Errorf("%w: -o %q: want %s", errUsage, output, strings.Join(formats, " or "))
	}
	return nil
}

// parse parses args into fs; a parse error is a usage error, --help prints
// the manual page and returns flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string) error {
	manual := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = manual
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			manual()
			return err
		}
		return fmt.Errorf("%w: %s: %w (see --help)", errUsage, fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if l == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

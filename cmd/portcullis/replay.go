package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
	logparse "github.com/portcullis-ips/portcullis/engine/parse"
	"github.com/portcullis-ips/portcullis/engine/profile"
)

const replayDescription = `Runs the detection engine over log files, offline, and prints the alerts.
Buckets run on the time written in the lines, not the clock, so a replay is
deterministic and finds what the live engine would have found. No decision
is published.

--type names the format of every FILE: nginx (access or error log; Apache
logs too), sshd or syslog (auth.log, journal or RFC 5424 lines). Syslog
lines carry no year: it is inferred relative to each file's modification
time, or to --reference-time.

Scenarios and profiles default to the shipped ones (config/scenarios,
config/profiles.yaml). --scenarios also loads CrowdSec hub-format scenario
files unchanged (their data: files from --data-dir). The profiles'
whitelist always holds this host's addresses and, unless the profiles say
whitelist_private: false, loopback, RFC 1918, link-local and unique-local
addresses. Malformed lines are reported on stderr as FILE:LINE: reason
(the first 20, then a count) and skipped.
`

const replayExamples = `portcullis replay --type nginx /var/log/nginx/access.log
portcullis replay --type sshd /var/log/auth.log --json | jq .
portcullis replay --type nginx --scenarios ./scenarios --profiles ./profiles.yaml access.log.1 access.log
portcullis replay --type nginx --scenarios /etc/crowdsec/scenarios --data-dir /var/lib/crowdsec/data access.log
`

// maxReportedErrors is how many malformed lines replay prints before counting silently.
const maxReportedErrors = 20

func runReplay(ctx context.Context, args []string, stdout io.Writer) (err error) {
	fs := newFlagSet("replay", "portcullis replay --type nginx|sshd|syslog [--json] [--scenarios DIR] [--data-dir DIR] [--profiles FILE] FILE...",
		replayDescription, replayExamples)
	typ := fs.String("type", "", "log format of the files: nginx, apache, sshd or syslog (required)")
	asJSON := fs.Bool("json", false, "print one alert JSON object per line instead of the operator view")
	var sf scenarioFlags
	sf.register(fs)
	refTime := fs.String("reference-time", "", "RFC 3339 time syslog years are inferred against (default: each file's modification time)")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch *typ {
	case "nginx", "apache", "sshd", "syslog":
	case "":
		return fmt.Errorf("%w: replay: --type is required", errUsage)
	default:
		return fmt.Errorf("%w: replay: --type %q is not nginx, apache, sshd or syslog", errUsage, *typ)
	}
	if len(files) == 0 {
		return fmt.Errorf("%w: replay: no FILE given", errUsage)
	}
	var ref time.Time
	if *refTime != "" {
		if ref, err = time.Parse(time.RFC3339, *refTime); err != nil {
			return fmt.Errorf("%w: replay: --reference-time %q is not RFC 3339", errUsage, *refTime)
		}
	}
	scs, pcfg, err := sf.load(os.Stderr)
	if err != nil {
		return err
	}
	prof, err := profile.New(pcfg)
	if err != nil {
		return fmt.Errorf("profiles: %w", err)
	}
	defer func() {
		if cerr := prof.Close(); err == nil {
			err = cerr
		}
	}()

	out := bufio.NewWriter(stdout)
	sink := &replaySink{w: out, json: *asJSON}
	eng, err := engine.New(engine.Config{Scenarios: scs, Profiles: prof, Sink: sink})
	if err != nil {
		return err
	}
	// Writes to out are buffered; their first error is returned by Flush.
	if !*asJSON {
		_, _ = fmt.Fprintln(out, "=== Alerts ===")
	}
	var lines, malformed, reported uint64
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := replayFile(f, *typ, ref, eng, &reported)
		lines += st.Lines
		malformed += st.Malformed
		if err != nil {
			return err
		}
	}
	if malformed > maxReportedErrors {
		fmt.Fprintf(os.Stderr, "portcullis replay: %d more malformed lines not shown\n", malformed-maxReportedErrors)
	}
	if !*asJSON {
		es := eng.Stats()
		_, _ = fmt.Fprintf(out, "\n=== Summary ===\n lines: %d (malformed %d) | events: %d (whitelisted %d) | alerts: %d | decisions: %d\n",
			lines, malformed, es.Events, es.Whitelisted, es.Alerts, es.Decisions)
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write alerts: %w", err)
	}
	return sink.err
}

// replayFile runs one file through the engine; reported counts the
// malformed lines printed so far, across files.
func replayFile(path, typ string, ref time.Time, eng *engine.Engine, reported *uint64) (engine.FeedStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return engine.FeedStats{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer func() { _ = f.Close() }() // opened read-only: a close error loses nothing
	if ref.IsZero() {
		fi, err := f.Stat()
		if err != nil {
			return engine.FeedStats{}, fmt.Errorf("stat %s: %w", path, err)
		}
		ref = fi.ModTime()
	}
	p := &engine.Pipeline{Parser: logparse.New(logparse.Config{Reference: ref}), Engine: eng}
	return engine.Feed(f, typ, path, p, func(line uint64, err error) {
		*reported++
		if *reported <= maxReportedErrors {
			var pe *logparse.Error
			if errors.As(err, &pe) {
				fmt.Fprintf(os.Stderr, "%s:%d: %s: %s\n", path, line, pe.Format, pe.Reason)
			} else {
				fmt.Fprintf(os.Stderr, "%s:%d: %v\n", path, line, err)
			}
		}
	})
}

// replaySink prints alerts as they come.
type replaySink struct {
	w    *bufio.Writer
	json bool
	err  error
}

func (s *replaySink) Alert(a engine.Alert) {
	if s.err != nil {
		return
	}
	if s.json {
		b, err := json.Marshal(a)
		if err != nil {
			s.err = fmt.Errorf("encode alert: %w", err)
			return
		}
		b = append(b, '\n')
		_, s.err = s.w.Write(b)
		return
	}
	_, s.err = io.WriteString(s.w, formatAlert(a))
}

func (s *replaySink) Decision(decisionfeed.Decision) {}

// formatAlert renders an alert the way the seed's operator view does:
//
//	[ban 4h] 185.220.101.5 (RU)
//	Scenario: crowdsecurity/ssh-bf | Time: 2026-11-25 10:00:05
func formatAlert(a engine.Alert) string {
	var tag string
	if a.Decision == nil {
		tag = "alert"
	} else {
		d, err := time.ParseDuration(a.Decision.Duration)
		dur := a.Decision.Duration
		if err == nil {
			dur = engine.ShortDuration(d)
		}
		tag = string(a.Decision.Type) + " " + dur
		if a.Simulated {
			tag = "simulated " + tag
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, " [%s] %s", tag, a.IP)
	if a.Country != "" {
		fmt.Fprintf(&b, " (%s)", a.Country)
	}
	fmt.Fprintf(&b, "\n Scenario: %s | Time: %s | Events: %d\n", a.Scenario, a.LastSeen.UTC().Format(time.DateTime), a.Events)
	return b.String()
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, which it returns.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %w", errUsage, fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

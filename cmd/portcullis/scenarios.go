package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/portcullis-ips/portcullis/config/scenarios"
	"github.com/portcullis-ips/portcullis/engine"
	"github.com/portcullis-ips/portcullis/engine/profile"
	"github.com/portcullis-ips/portcullis/engine/scenario"
)

const scenariosDescription = `Shows the scenarios the engine would load: for each its name, type, the
file it comes from, and the remedy and base duration the profiles give it
("alert" when its labels ask for no remediation).

"list" prints one line per scenario; "inspect NAME" prints one scenario in
full (thresholds, filter, groupby, distinct, labels) as YAML-like text, or
as JSON with -o json.

--scenarios takes a directory of scenario files, in this repository's
format or CrowdSec's hub format (as cscli installs them; several
documents per file allowed). --data-dir is where hub scenarios' data:
files are read (default CrowdSec's /var/lib/crowdsec/data).
`

const scenariosExamples = `portcullis scenarios list
portcullis scenarios list --scenarios /etc/crowdsec/scenarios --data-dir /var/lib/crowdsec/data
portcullis scenarios inspect crowdsecurity/ssh-bf --profiles /etc/portcullis/profiles.yaml
`

// scenarioFlags are the flags every command loading scenarios shares.
type scenarioFlags struct {
	dir, dataDir, profiles string
	skipBad                bool
}

func (f *scenarioFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "scenarios", "", "directory of scenario files, this repository's or CrowdSec's hub format (default: the shipped scenarios)")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory of the hub scenarios' data: files (default "+scenario.DefaultDataDir+")")
	fs.StringVar(&f.profiles, "profiles", "", "profiles YAML file (default: the shipped profiles)")
	fs.BoolVar(&f.skipBad, "skip-bad-scenarios", false, "skip scenarios that fail to load (each reported on stderr) instead of failing")
}

// load reads the scenarios and the profiles' configuration.
func (f *scenarioFlags) load(stderr io.Writer) ([]*scenario.Scenario, profile.Config, error) {
	opt := scenario.LoadOptions{DataDir: f.dataDir, SkipBad: f.skipBad, OnSkip: func(err error) {
		fmt.Fprintf(stderr, "portcullis: skipped: %v\n", err)
	}}
	var scs []*scenario.Scenario
	var err error
	if f.dir != "" {
		opt.Root = f.dir
		scs, err = scenario.LoadFSWith(os.DirFS(f.dir), ".", opt)
	} else {
		scs, err = scenario.LoadFSWith(scenarios.FS, ".", opt)
	}
	if err != nil {
		return nil, profile.Config{}, fmt.Errorf("load scenarios: %w", err)
	}
	pcfg := profile.DefaultConfig()
	if f.profiles != "" {
		if pcfg, err = profile.Load(f.profiles); err != nil {
			return nil, profile.Config{}, fmt.Errorf("load profiles: %w", err)
		}
	}
	return scs, pcfg, nil
}

// scenarioView is what list and inspect show of one scenario.
type scenarioView struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Format      string   `json:"format"`
	File        string   `json:"file"`
	Remedy      string   `json:"remedy"`
	Duration    string   `json:"duration,omitempty"`
	Description string   `json:"description,omitempty"`
	Threshold   string   `json:"threshold"`
	Filter      string   `json:"filter"`
	GroupBy     string   `json:"groupby,omitempty"`
	Distinct    string   `json:"distinct,omitempty"`
	CancelOn    string   `json:"cancel_on,omitempty"`
	Condition   string   `json:"condition,omitempty"`
	Blackhole   string   `json:"blackhole,omitempty"`
	Reprocess   bool     `json:"reprocess,omitempty"`
	IPv6Prefix  int      `json:"ipv6_prefix,omitempty"`
	Labels      []string `json:"labels,omitempty"`
}

func viewOf(s *scenario.Scenario, pcfg profile.Config) scenarioView {
	v := scenarioView{Name: s.Name, Type: string(s.Type), File: s.File, Description: s.Description,
		Filter: s.Filter, GroupBy: s.GroupBy, Distinct: s.Distinct, CancelOn: s.CancelOn,
		Condition: s.Condition, Reprocess: s.Reprocess, IPv6Prefix: s.IPv6Prefix, Format: "portcullis"}
	if s.Hub {
		v.Format = "crowdsec-hub"
	}
	rem := pcfg.RemedyFor(s.Name)
	switch {
	case !s.Labels.Remediation:
		v.Remedy = "alert"
	case rem.Simulated != nil && *rem.Simulated:
		v.Remedy = "simulated " + string(rem.Type)
		v.Duration = engine.ShortDuration(rem.Duration)
	default:
		v.Remedy = string(rem.Type)
		v.Duration = engine.ShortDuration(rem.Duration)
	}
	switch s.Type {
	case scenario.Leaky:
		v.Threshold = fmt.Sprintf("capacity %d, leakspeed %s", s.Capacity, s.LeakSpeed)
	case scenario.Window:
		v.Threshold = fmt.Sprintf("%d in %s", s.Count, s.Window)
	case scenario.Trigger:
		v.Threshold = "first event"
	case scenario.Counter:
		v.Threshold = fmt.Sprintf("count over %s", s.Duration)
	case scenario.Conditional:
		v.Threshold = fmt.Sprintf("condition, leakspeed %s", s.LeakSpeed)
	}
	if s.Blackhole > 0 {
		v.Blackhole = s.Blackhole.String()
	}
	l := s.Labels
	for _, kv := range [][2]string{{"service", l.Service}, {"behavior", l.Behavior}, {"label", l.Label}, {"cve", l.CVE},
		{"classification", strings.Join(l.Classification, ",")}} {
		if kv[1] != "" {
			v.Labels = append(v.Labels, kv[0]+"="+kv[1])
		}
	}
	return v
}

func runScenarios(_ context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("scenarios", "portcullis scenarios list|inspect NAME [--scenarios DIR] [--data-dir DIR] [--profiles FILE] [-o table|json]",
		scenariosDescription, scenariosExamples)
	var sf scenarioFlags
	sf.register(fs)
	format := fs.String("o", "table", "output format: table or json")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *format != "table" && *format != "json" {
		return fmt.Errorf("%w: scenarios: -o %q is not table or json", errUsage, *format)
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: scenarios: list or inspect NAME", errUsage)
	}
	verb := pos[0]
	switch {
	case verb == "list" && len(pos) == 1:
	case verb == "inspect" && len(pos) == 2:
	default:
		return fmt.Errorf("%w: scenarios: want list, or inspect NAME", errUsage)
	}
	scs, pcfg, err := sf.load(os.Stderr)
	if err != nil {
		return err
	}
	if verb == "inspect" {
		for _, s := range scs {
			if s.Name == pos[1] {
				return printScenario(stdout, viewOf(s, pcfg), *format == "json")
			}
		}
		return fmt.Errorf("scenarios inspect: no scenario %q loaded", pos[1])
	}
	views := make([]scenarioView, len(scs))
	for i, s := range scs {
		views[i] = viewOf(s, pcfg)
	}
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		for _, v := range views {
			if err := enc.Encode(v); err != nil {
				return fmt.Errorf("write scenarios: %w", err)
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tTHRESHOLD\tREMEDY\tDURATION\tFILE")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Type, v.Threshold, v.Remedy, orDash(v.Duration), v.File)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write scenarios: %w", err)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printScenario(w io.Writer, v scenarioView, asJSON bool) error {
	if asJSON {
		if err := json.NewEncoder(w).Encode(v); err != nil {
			return fmt.Errorf("write scenario: %w", err)
		}
		return nil
	}
	var b strings.Builder
	row := func(k, val string) {
		if val != "" {
			fmt.Fprintf(&b, "%-12s %s\n", k+":", val)
		}
	}
	row("name", v.Name)
	row("type", v.Type)
	row("format", v.Format)
	row("file", v.File)
	row("remedy", v.Remedy)
	row("duration", v.Duration)
	row("threshold", v.Threshold)
	row("blackhole", v.Blackhole)
	row("description", v.Description)
	row("filter", v.Filter)
	row("groupby", v.GroupBy)
	row("distinct", v.Distinct)
	row("cancel_on", v.CancelOn)
	row("condition", v.Condition)
	if v.Reprocess {
		row("reprocess", "true")
	}
	if v.IPv6Prefix > 0 {
		row("ipv6_prefix", fmt.Sprint(v.IPv6Prefix))
	}
	row("labels", strings.Join(v.Labels, " "))
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write scenario: %w", err)
	}
	return nil
}

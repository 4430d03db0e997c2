package policy

import (
	"flag"
	"fmt"
	"strings"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// Flags are the policy's command-line flags, the same in every bouncer:
// --whitelist (repeatable, added to the config's), --types, --origins and
// --scenarios (comma-separated, replacing the config's).
type Flags struct {
	fs        *flag.FlagSet
	whitelist repeated
	types     *string
	origins   *string
	scenarios *string
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string { return strings.Join(*r, ",") }

func (r *repeated) Set(s string) error {
	*r = append(*r, s)
	return nil
}

// RegisterFlags defines the policy flags on fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.Var(&f.whitelist, "whitelist", "address or CIDR range never to ban (repeatable, or comma-separated), added to the config's whitelist")
	f.types = fs.String("types", "", "comma-separated decision types to enforce: ban, captcha, throttle (default: every type this bouncer enforces)")
	f.origins = fs.String("origins", "", "comma-separated origins whose decisions are enforced: "+strings.Join(KnownOrigins, ", ")+" (default: all)")
	f.scenarios = fs.String("scenarios", "", "comma-separated scenarios whose decisions are enforced; NAME* matches a prefix (default: all)")
	return f
}

// Apply writes the flags given on the command line over cfg. Call it after
// fs.Parse; errors name the flag.
func (f *Flags) Apply(cfg *Config) error {
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for _, w := range f.whitelist {
		ps, err := ParsePrefixes(w)
		if err != nil {
			return fmt.Errorf("--whitelist: %w", err)
		}
		cfg.Whitelist = append(cfg.Whitelist, ps...)
	}
	if set["types"] {
		cfg.Types = nil
		for _, t := range splitList(*f.types) {
			cfg.Types = append(cfg.Types, decisionfeed.Type(t))
		}
	}
	if set["origins"] {
		cfg.Origins = splitList(*f.origins)
	}
	if set["scenarios"] {
		cfg.Scenarios = splitList(*f.scenarios)
	}
	return nil
}

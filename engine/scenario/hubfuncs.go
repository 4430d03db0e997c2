package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
)

var reflectString = reflect.String

// dataFile is one `data:` file, by its dest_file name.
type dataFile struct {
	lines []string
	res   []*regexp.Regexp
}

// loadData reads the data files a scenario names from dir.
func loadData(entries []hubData, dir string) (map[string]*dataFile, error) {
	files := map[string]*dataFile{}
	if dir == "" {
		dir = DefaultDataDir
	}
	for _, e := range entries {
		if e.DestFile == "" {
			return nil, fmt.Errorf("an entry without dest_file")
		}
		if strings.Contains(e.DestFile, "/") || e.DestFile == ".." {
			return nil, fmt.Errorf("dest_file %q must be a file name", e.DestFile)
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.DestFile))
		if err != nil {
			return nil, fmt.Errorf("read data file: %w", err)
		}
		f := &dataFile{}
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if line == "" {
				continue
			}
			f.lines = append(f.lines, line)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read data file %s: %w", e.DestFile, err)
		}
		switch e.Type {
		case "regexp", "regex":
			for i, l := range f.lines {
				re, err := regexp.Compile(l)
				if err != nil {
					return nil, fmt.Errorf("%s line %d: %w", e.DestFile, i+1, err)
				}
				f.res = append(f.res, re)
			}
		case "string", "":
		default:
			return nil, fmt.Errorf("%s: type %q is not string or regexp", e.DestFile, e.Type)
		}
		files[e.DestFile] = f
	}
	return files, nil
}

// hubFunctions returns CrowdSec's helpers (HubHelpers), File and
// RegexpInFile bound to one scenario's data files.
func hubFunctions(files map[string]*dataFile) []expr.Option {
	str := func(p []any, i int) string { s, _ := p[i].(string); return s }
	return []expr.Option{
		expr.Function("File", func(p ...any) (any, error) {
			f, ok := files[str(p, 0)]
			if !ok {
				return []string{}, nil
			}
			return f.lines, nil
		}, new(func(string) []string)),
		expr.Function("RegexpInFile", func(p ...any) (any, error) {
			f, ok := files[str(p, 1)]
			if !ok {
				return false, nil
			}
			s := str(p, 0)
			for _, re := range f.res {
				if re.MatchString(s) {
					return true, nil
				}
			}
			return false, nil
		}, new(func(string, string) bool)),
		expr.Function("Upper", func(p ...any) (any, error) { return strings.ToUpper(str(p, 0)), nil }, new(func(string) string)),
		expr.Function("Lower", func(p ...any) (any, error) { return strings.ToLower(str(p, 0)), nil }, new(func(string) string)),
		expr.Function("PathUnescape", func(p ...any) (any, error) {
			s := str(p, 0)
			if u, err := url.PathUnescape(s); err == nil {
				return u, nil
			}
			return s, nil
		}, new(func(string) string)),
		expr.Function("QueryUnescape", func(p ...any) (any, error) {
			s := str(p, 0)
			if u, err := url.QueryUnescape(s); err == nil {
				return u, nil
			}
			return s, nil
		}, new(func(string) string)),
		expr.Function("PathEscape", func(p ...any) (any, error) { return url.PathEscape(str(p, 0)), nil }, new(func(string) string)),
		expr.Function("QueryEscape", func(p ...any) (any, error) { return url.QueryEscape(str(p, 0)), nil }, new(func(string) string)),
		expr.Function("IpInRange", func(p ...any) (any, error) {
			a, err1 := netip.ParseAddr(str(p, 0))
			pr, err2 := netip.ParsePrefix(str(p, 1))
			return err1 == nil && err2 == nil && pr.Contains(a.Unmap()), nil
		}, new(func(string, string) bool)),
		expr.Function("IsIPV4", func(p ...any) (any, error) {
			a, err := netip.ParseAddr(str(p, 0))
			return err == nil && a.Is4(), nil
		}, new(func(string) bool)),
		expr.Function("IsIPV6", func(p ...any) (any, error) {
			a, err := netip.ParseAddr(str(p, 0))
			return err == nil && a.Is6() && !a.Is4In6(), nil
		}, new(func(string) bool)),
		expr.Function("IsIP", func(p ...any) (any, error) {
			_, err := netip.ParseAddr(str(p, 0))
			return err == nil, nil
		}, new(func(string) bool)),
		expr.Function("Atof", func(p ...any) (any, error) {
			f, err := strconv.ParseFloat(str(p, 0), 64)
			if err != nil {
				return 0.0, nil
			}
			return f, nil
		}, new(func(string) float64)),
		expr.Function("MedianInterval", func(p ...any) (any, error) {
			q, _ := p[0].(*HubQueue)
			return medianInterval(q), nil
		}, new(func(*HubQueue) time.Duration)),
		expr.Function("Contains", func(p ...any) (any, error) { return strings.Contains(str(p, 0), str(p, 1)), nil }, new(func(string, string) bool)),
		expr.Function("HasPrefix", func(p ...any) (any, error) { return strings.HasPrefix(str(p, 0), str(p, 1)), nil }, new(func(string, string) bool)),
		expr.Function("HasSuffix", func(p ...any) (any, error) { return strings.HasSuffix(str(p, 0), str(p, 1)), nil }, new(func(string, string) bool)),
		expr.Function("Split", func(p ...any) (any, error) { return strings.Split(str(p, 0), str(p, 1)), nil }, new(func(string, string) []string)),
		expr.Function("TrimSpace", func(p ...any) (any, error) { return strings.TrimSpace(str(p, 0)), nil }, new(func(string) string)),
	}
}

// medianInterval is the median time between consecutive events of a
// queue; 0 with fewer than two events.
func medianInterval(q *HubQueue) time.Duration {
	if q == nil || len(q.Queue) < 2 {
		return 0
	}
	gaps := make([]time.Duration, 0, len(q.Queue)-1)
	for i := 1; i < len(q.Queue); i++ {
		gaps = append(gaps, q.Queue[i].Time.Sub(q.Queue[i-1].Time))
	}
	slices.Sort(gaps)
	n := len(gaps)
	if n%2 == 1 {
		return gaps[n/2]
	}
	return (gaps[n/2-1] + gaps[n/2]) / 2
}

package health

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// maxScrapeBytes bounds an engine scrape (a few KB in practice).
const maxScrapeBytes = 16 << 20

// Metric names read from the engine's endpoint (engine/daemon).
const (
	metricParse     = "portcullis_engine_parse_lines_total"
	metricAlerts    = "portcullis_engine_alerts_total"
	metricDecisions = "portcullis_engine_decisions_total"
)

// ParserStats are one log format's parser counters.
type ParserStats struct {
	Format    string `json:"format"`
	Lines     uint64 `json:"lines"`
	Events    uint64 `json:"events"`
	NoEvent   uint64 `json:"no_event"`
	Malformed uint64 `json:"malformed"`
}

// ScenarioStats are one scenario's counters.
type ScenarioStats struct {
	Scenario  string `json:"scenario"`
	Alerts    uint64 `json:"alerts"`
	Decisions uint64 `json:"decisions"`
}

// Engine holds the engine's counters per parser and scenario, sorted by name.
type Engine struct {
	Parsers   []ParserStats   `json:"parsers"`
	Scenarios []ScenarioStats `json:"scenarios"`
}

// ScrapeEngine fetches url (the engine's /metrics) and reads its counters.
func ScrapeEngine(ctx context.Context, c *http.Client, url string) (Engine, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Engine{}, fmt.Errorf("engine metrics %s: %w", url, err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return Engine{}, fmt.Errorf("engine metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }() // read-only body: nothing to lose
	if resp.StatusCode != http.StatusOK {
		return Engine{}, fmt.Errorf("engine metrics %s: status %s", url, resp.Status)
	}
	e, err := ParseEngine(io.LimitReader(resp.Body, maxScrapeBytes))
	if err != nil {
		return Engine{}, fmt.Errorf("engine metrics %s: %w", url, err)
	}
	return e, nil
}

// ParseEngine reads the engine counters from the Prometheus text format.
// Other metrics are ignored; a sample missing its label is an error.
func ParseEngine(r io.Reader) (Engine, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Engine{}, fmt.Errorf("parse: %w", err)
	}
	parsers := map[string]*ParserStats{}
	scenarios := map[string]*ScenarioStats{}
	if f := fams[metricParse]; f != nil {
		for _, m := range f.GetMetric() {
			format, result := label(m, "format"), label(m, "result")
			if format == "" || result == "" {
				return Engine{}, fmt.Errorf("%s: sample without format or result label", metricParse)
			}
			ps := parsers[format]
			if ps == nil {
				ps = &ParserStats{Format: format}
				parsers[format] = ps
			}
			v := counter(m)
			ps.Lines += v
			switch result {
			case "event":
				ps.Events += v
			case "no_event":
				ps.NoEvent += v
			case "malformed":
				ps.Malformed += v
			}
		}
	}
	for _, name := range []string{metricAlerts, metricDecisions} {
		f := fams[name]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			sc := label(m, "scenario")
			if sc == "" {
				return Engine{}, fmt.Errorf("%s: sample without scenario label", name)
			}
			ss := scenarios[sc]
			if ss == nil {
				ss = &ScenarioStats{Scenario: sc}
				scenarios[sc] = ss
			}
			if name == metricAlerts {
				ss.Alerts += counter(m)
			} else {
				ss.Decisions += counter(m)
			}
		}
	}
	e := Engine{Parsers: []ParserStats{}, Scenarios: []ScenarioStats{}}
	for _, ps := range parsers {
		e.Parsers = append(e.Parsers, *ps)
	}
	for _, ss := range scenarios {
		e.Scenarios = append(e.Scenarios, *ss)
	}
	slices.SortFunc(e.Parsers, func(a, b ParserStats) int { return strings.Compare(a.Format, b.Format) })
	slices.SortFunc(e.Scenarios, func(a, b ScenarioStats) int { return strings.Compare(a.Scenario, b.Scenario) })
	return e, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// counter returns a counter (or untyped) sample as a count; negative or
// fractional values of a broken exporter are clamped and truncated.
func counter(m *dto.Metric) uint64 {
	v := m.GetCounter().GetValue()
	if m.GetCounter() == nil {
		v = m.GetUntyped().GetValue()
	}
	if v <= 0 || v != v {
		return 0
	}
	if v >= 1<<63 {
		return 1 << 63
	}
	return uint64(v)
}

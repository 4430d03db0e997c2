package health

import (
	"strings"
	"testing"
)

func TestParseEngine(t *testing.T) {
	e, err := ParseEngine(strings.NewReader(`# HELP portcullis_engine_parse_lines_total Lines.
# TYPE portcullis_engine_parse_lines_total counter
portcullis_engine_parse_lines_total{format="sshd",result="event"} 4
portcullis_engine_parse_lines_total{format="nginx",result="event"} 10
portcullis_engine_parse_lines_total{format="nginx",result="malformed"} 2
portcullis_engine_alerts_total{scenario="b"} 3
portcullis_engine_decisions_total{scenario="a"} 1
portcullis_acquire_lines_total{source="x",type="nginx"} 99
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Parsers) != 2 || e.Parsers[0] != (ParserStats{Format: "nginx", Lines: 12, Events: 10, Malformed: 2}) ||
		e.Parsers[1] != (ParserStats{Format: "sshd", Lines: 4, Events: 4}) {
		t.Errorf("parsers: %+v", e.Parsers)
	}
	if len(e.Scenarios) != 2 || e.Scenarios[0] != (ScenarioStats{Scenario: "a", Decisions: 1}) || e.Scenarios[1] != (ScenarioStats{Scenario: "b", Alerts: 3}) {
		t.Errorf("scenarios: %+v", e.Scenarios)
	}
	for _, bad := range []string{
		`portcullis_engine_alerts_total 3`,
		`portcullis_engine_parse_lines_total{format="x"} 3`,
		`portcullis_engine_alerts_total{scenario="a" 3`,
	} {
		if _, err := ParseEngine(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	e, err = ParseEngine(strings.NewReader(""))
	if err != nil || e.Parsers == nil || e.Scenarios == nil || len(e.Parsers)+len(e.Scenarios) != 0 {
		t.Errorf("empty scrape: %+v %v", e, err)
	}
}

// FuzzParseEngine: any scrape body is either an error or counters, never a panic.
func FuzzParseEngine(f *testing.F) {
	f.Add("portcullis_engine_parse_lines_total{format=\"nginx\",result=\"event\"} 10\n")
	f.Add("portcullis_engine_alerts_total{scenario=\"a\"} -1e309\nportcullis_engine_decisions_total{scenario=\"a\"} NaN\n")
	f.Add("# TYPE portcullis_engine_alerts_total gauge\nportcullis_engine_alerts_total{scenario=\"a\"} 1e30\n")
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEngine(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range e.Parsers {
			if p.Events+p.NoEvent+p.Malformed > p.Lines {
				t.Fatalf("%q: %+v", s, p)
			}
		}
	})
}

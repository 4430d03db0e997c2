package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Truncate(time.Second).String()
	},
	"left": func(now, until time.Time) string {
		if until.IsZero() {
			return "-"
		}
		return until.Sub(now).Truncate(time.Second).String()
	},
	"ts":     func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"spark":  sparkline,
	"enc":    func(v map[string][]string, k string) string { return strings.Join(v[k], "") },
	"stale":  func(now time.Time, b interface{ Stale(time.Time) bool }) bool { return b.Stale(now) },
	"shortN": func(n uint64) string { return fmt.Sprint(n) },
}

// chart is a server-rendered bar chart (SVG in the page; no script).
type chart struct {
	Bars          []bar
	Width, Height int
	Max           int
	From, To      string
}

type bar struct {
	X, Y, W, H int
	Count      int
	Label      string
}

// barChart draws alerts per bucket over the last day, newest right.
func barChart(series []int, now time.Time) chart {
	const width, height = 720, 120
	c := chart{Width: width, Height: height, From: now.Add(-24 * time.Hour).UTC().Format("Jan 2 15:04"), To: now.UTC().Format("15:04 UTC")}
	for _, v := range series {
		c.Max = max(c.Max, v)
	}
	if len(series) == 0 {
		return c
	}
	w := width / len(series)
	step := 24 * time.Hour / time.Duration(len(series))
	for i, v := range series {
		h := 0
		if c.Max > 0 {
			h = v * (height - 4) / c.Max
		}
		if v > 0 && h == 0 {
			h = 1
		}
		start := now.Add(-24*time.Hour + time.Duration(i)*step).UTC().Format("15:04")
		c.Bars = append(c.Bars, bar{X: i * w, Y: height - h, W: max(w-1, 1), H: h, Count: v, Label: start})
	}
	return c
}

// sparkline is a scenario's alerts per hour as block characters.
func sparkline(hours [24]int) string {
	const blocks = "▁▂▃▄▅▆▇█"
	runes := []rune(blocks)
	m := 0
	for _, v := range hours {
		m = max(m, v)
	}
	var b strings.Builder
	for _, v := range hours {
		if m == 0 || v == 0 {
			b.WriteRune(' ')
			continue
		}
		b.WriteRune(runes[(v*(len(runes)-1)+m-1)/m])
	}
	return b.String()
}

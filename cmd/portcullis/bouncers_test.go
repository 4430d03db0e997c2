package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/heartbeat"
)

func TestBouncersList(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := "heartbeats-" + strconv.FormatInt(time.Now().UnixNano(), 36) // unique; the publisher creates it
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	var extra heartbeat.Stats // origins and problem of the next beat
	beat := func(name, host, mode string, decisions int, lag, refused int64, at time.Time) {
		t.Helper()
		st := extra
		st.Decisions, st.Lag, st.Refused = decisions, lag, refused
		extra = heartbeat.Stats{}
		p, err := heartbeat.New(heartbeat.Config{
			Brokers: brokers, Topic: topic, Name: name, Host: host, Mode: mode, Interval: 10 * time.Second,
			Stats: func() heartbeat.Stats { return st },
			Now:   func() time.Time { return at },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = p.Close() }()
		if err := p.Beat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	common := []string{"--brokers", strings.Join(brokers, ","), "--topic", topic}
	out, err := portcullis(t, append([]string{"bouncers", "list"}, common...)...)
	if err != nil || out != "NAME  HOST  MODE  DECISIONS  REFUSED  LAST SEEN  LAG  BY ORIGIN (bans/dropped packets)  STATUS\n(no bouncer heartbeats on "+topic+")\n" {
		t.Fatalf("no heartbeats yet: %v\n%q", err, out)
	}
	beat("fw-bouncer", "edge-1", "xdp", 10, 0, 0, now.Add(-time.Hour))
	extra = heartbeat.Stats{Problem: "restore after table_removed failed:\nno such table"}
	beat("nginx-bouncer", "web-1", "auth_request", 7, 2, 0, now.Add(-5*time.Second))
	extra = heartbeat.Stats{Origins: []heartbeat.OriginStat{{Origin: "cli", Active: 2}, {Origin: "engine", Active: 10, Packets: 340, Bytes: 20400}}}
	beat("fw-bouncer", "edge-1", "xdp", 12, 1, 3, now.Add(-20*time.Second)) // newer beat of the same bouncer
	beat("fw-bouncer", "edge-2", "nftables", 12, 0, 0, now.Add(-31*time.Second))

	out, err = portcullis(t, append([]string{"bouncers", "list", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	var rows []bouncerRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got []string
	for _, r := range rows {
		got = append(got, strings.Join([]string{r.Key(), r.Mode, strconv.Itoa(r.Decisions), strconv.FormatInt(r.Lag, 10), map[bool]string{true: "stale", false: "ok"}[r.Stale]}, " "))
	}
	want := "fw-bouncer@edge-1 xdp 12 1 ok\nfw-bouncer@edge-2 nftables 12 0 stale\nnginx-bouncer@web-1 auth_request 7 2 ok"
	if strings.Join(got, "\n") != want {
		t.Fatalf("bouncers list -o json:\n%s\nwant\n%s", strings.Join(got, "\n"), want)
	}
	out, err = portcullis(t, append([]string{"bouncers", "list"}, common...)...)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// The beat was 20 s before the test's clock; the command reads its own
	// clock a moment later, so allow the age to have rounded up by a second or two.
	edge1 := regexp.MustCompile(`^fw-bouncer +edge-1 +xdp +12 +3 +2[012]s ago +1 +engine 10/340 cli 2/0 +ok$`)
	if len(lines) != 4 || !edge1.MatchString(lines[1]) ||
		!strings.HasSuffix(lines[2], "stale") ||
		!strings.HasSuffix(lines[3], " 2    -                                 unhealthy: restore after table_removed failed: no such table") {
		t.Fatalf("bouncers list:\n%s", out)
	}
}

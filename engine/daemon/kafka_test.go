package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/portcullis-ips/portcullis/engine/acquire"
	"github.com/portcullis-ips/portcullis/engine/parse"
)

// serverLogsMessages turns the corpus into server-logs messages in the
// three forms the Kafka source reads, in turn: raw lines, Filebeat events
// and the seed producer's events, in time order across both files.
// auth.log lines go as Filebeat events whose log_type says syslog (the
// source's label says nginx).
func serverLogsMessages(t *testing.T, c corpus) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	now := time.Now().UTC()
	for i, tl := range c.all {
		l := tl.line
		switch {
		case tl.typ == "syslog":
			out = append(out, kafka.Message{Value: marshal(map[string]any{
				"@timestamp": now.Format(time.RFC3339Nano), "message": l,
				"fields": map[string]string{"log_type": "syslog"}, "host": map[string]string{"name": "bastion"},
			})})
		case i%3 == 0:
			out = append(out, kafka.Message{Value: []byte(l + "\n")})
		case i%3 == 1:
			out = append(out, kafka.Message{Value: marshal(map[string]any{
				"@timestamp": now.Format(time.RFC3339Nano), "message": l,
				"fields": map[string]string{"log_type": "nginx"}, "host": map[string]string{"name": "web-1"},
				"log": map[string]any{"file": map[string]string{"path": "/var/log/nginx/access.log"}},
			})})
		default:
			out = append(out, kafka.Message{Value: marshal(map[string]any{
				"message": l, "source": "web-2", "timestamp": float64(now.UnixMilli()) / 1000,
			})})
		}
	}
	return out
}

// produce writes msgs round-robin over the topic's partitions, chunk at a
// time with a pause between chunks, the way shippers send lines as they
// are written (chunk 0: all at once).
func produce(t *testing.T, brokers []string, topic string, msgs []kafka.Message, chunk int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.RoundRobin{}, BatchTimeout: time.Millisecond, BatchSize: 200}
	defer func() { _ = w.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if chunk <= 0 {
		chunk = len(msgs)
	}
	for len(msgs) > 0 {
		n := min(chunk, len(msgs))
		// A topic Kafka has just created may refuse writes for a moment.
		for err := w.WriteMessages(ctx, msgs[:n]...); err != nil; err = w.WriteMessages(ctx, msgs[:n]...) {
			if ctx.Err() != nil || !errors.Is(err, kafka.UnknownTopicOrPartition) {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		msgs = msgs[n:]
		if len(msgs) > 0 {
			time.Sleep(15 * time.Millisecond)
		}
	}
}

func kafkaAcquis(brokers []string, topic, group string) string {
	return fmt.Sprintf("source: kafka\ntopic: %s\nbrokers: [%q]\ngroup_id: %s\nfrom_beginning: true\nlabels: {type: nginx}\n", topic, brokers[0], group)
}

// One partition keeps the order of the lines, so the alerts are exactly the
// replay's, counts and times included.
func TestKafkaSourceMatchesReplay(t *testing.T) {
	c := genCorpus(time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute))
	want := replay(t, map[string][]string{"nginx": c.nginx, "syslog": c.auth})
	cfg, brokers := testTopics(t)
	logs := feedtest.Topic(t, 1)
	msgs := serverLogsMessages(t, c)
	msgs = append(msgs, kafka.Message{Value: []byte(`{"message": "not closed`)})
	produce(t, brokers, logs, msgs, 0)
	in := startDaemon(t, cfg, kafkaAcquis(brokers, logs, "engine-"+logs))
	waitMetric(t, []*instance{in}, "portcullis_acquire_lines_total", float64(len(msgs)-1), 30*time.Second)
	waitMetric(t, []*instance{in}, "portcullis_acquire_skipped_total", 1, 5*time.Second)
	got := decodeAlerts(t, readTopic(t, brokers, cfg.Topics.Alerts, len(want.alerts), time.Second))
	if g, w := alertsText(sortAlerts(got)), alertsText(sortAlerts(want.alerts)); g != w {
		t.Fatalf("kafka alerts\n%s\nreplay alerts\n%s", g, w)
	}
	ds := decodeDecisions(t, readTopic(t, brokers, cfg.Topics.Decisions, len(want.decisions), 500*time.Millisecond))
	checkVerdicts(t, "kafka", verdictsOf(ds), c)
}

// Three engines sharing the server-logs group, re-keying through the
// events topic, ban exactly whom one engine bans, each address once,
// although every attacker's lines are spread round-robin over six
// partitions.
func TestThreeInstancesMatchOne(t *testing.T) {
	c := genCorpus(time.Now().UTC().Truncate(time.Second).Add(-10 * time.Minute))
	want := replay(t, map[string][]string{"nginx": c.nginx, "syslog": c.auth})
	checkVerdicts(t, "replay", want.verdicts(), c)
	brokers := feedtest.Brokers(t)
	logs := feedtest.Topic(t, 6)

	one, _ := testTopics(t)
	single := startDaemon(t, one, kafkaAcquis(brokers, logs, "single-"+logs))

	three, _ := testTopics(t)
	three.Rekey = true
	three.Topics.Events = "events-" + logs
	three.RekeyGroup = "detect-" + logs
	var fleet []*instance
	for i := range 3 {
		cfg := three
		cfg.Host = fmt.Sprintf("engine-%d", i)
		fleet = append(fleet, startDaemon(t, cfg, kafkaAcquis(brokers, logs, "fleet-"+logs)))
	}
	// Produce once every group has settled its assignment, so no
	// partition moves (and no bucket is split) while the lines flow.
	waitGroup(t, brokers, "single-"+logs, 1, 6)
	waitGroup(t, brokers, "fleet-"+logs, 3, 6)
	waitGroup(t, brokers, three.RekeyGroup, 3, DefaultEventsPartitions)

	// Buckets run on event time, and a scenario's buckets share one clock:
	// lines of all partitions must reach an engine roughly in the order
	// they were written, as they do when shippers send lines as they come
	// (here one line per partition every 15 ms, about 2.5 s of log time).
	// (A backlog read all at once is consumed partition by partition
	// instead, and buckets of one address can then be collected as drained
	// before its later lines arrive.)
	msgs := serverLogsMessages(t, c)
	produce(t, brokers, logs, msgs, 6)
	waitMetric(t, []*instance{single}, "portcullis_acquire_lines_total", float64(len(msgs)), 30*time.Second)
	waitMetric(t, fleet, "portcullis_acquire_lines_total", float64(len(msgs)), 30*time.Second)
	// Every line carrying a client address became an event, was re-keyed and consumed once.
	events := countEvents(t, c)
	waitMetric(t, fleet, "portcullis_engine_rekey_events_published_total", events, 30*time.Second)
	waitMetric(t, fleet, "portcullis_engine_rekey_events_consumed_total", events, 30*time.Second)
	for _, in := range fleet {
		if in.metric(t, "portcullis_acquire_lines_total") == 0 || in.metric(t, "portcullis_engine_rekey_events_consumed_total") == 0 {
			t.Errorf("%s read no server-logs or no events partition", in.d.host)
		}
	}

	oneDs := decodeDecisions(t, readTopic(t, brokers, one.Topics.Decisions, len(c.attackers), time.Second))
	threeDs := decodeDecisions(t, readTopic(t, brokers, three.Topics.Decisions, len(c.attackers), time.Second))
	checkVerdicts(t, "one engine", verdictsOf(oneDs), c)
	checkVerdicts(t, "three engines", verdictsOf(threeDs), c)
	hosts := map[string]bool{}
	for _, d := range threeDs {
		hosts[d.Host] = true
	}
	t.Logf("decisions of the fleet came from %d engines", len(hosts))
}

// countEvents counts the corpus lines that parse into an event with a source address.
func countEvents(t *testing.T, c corpus) float64 {
	t.Helper()
	p := parse.New(parse.Config{})
	n := 0.0
	for typ, lines := range map[string][]string{"nginx": c.nginx, "syslog": c.auth} {
		for _, l := range lines {
			if ev, err := p.Line(acquire.Line{Text: l, Type: typ}); err == nil && ev.Source.IsValid() {
				n++
			}
		}
	}
	return n
}

// waitGroup waits until a consumer group is stable with members members
// that hold partitions partitions between them.
func waitGroup(t *testing.T, brokers []string, group string, members, partitions int) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: &kafka.Transport{}}
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		cancel()
		if err == nil && len(res.Groups) == 1 {
			g := res.Groups[0]
			held := 0
			for _, m := range g.Members {
				for _, tp := range m.MemberAssignments.Topics {
					held += len(tp.Partitions)
				}
			}
			last = fmt.Sprintf("state %s, %d members, %d partitions", g.GroupState, len(g.Members), held)
			if g.GroupState == "Stable" && len(g.Members) == members && held == partitions {
				return
			}
		} else {
			last = fmt.Sprint(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("group %s not settled: %s", group, last)
}

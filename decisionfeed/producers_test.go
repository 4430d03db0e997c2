package decisionfeed_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
	"github.com/segmentio/kafka-go"
)

// enforced renders a recorder's live set as sorted "target type origin".
func (r *recorder) enforced() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k, d := range r.live {
		out = append(out, fmt.Sprintf("%s %s %s", k, d.Type, d.Origin))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// TestProducersCoexist publishes decisions of independent producers on the
// same addresses and checks that a producer's delete withdraws its own
// decision only, both for a bouncer that follows the feed and for one that
// starts after (the snapshot). The three cases are those that lost a ban
// under the one-key-per-address scheme: a CrowdSec pull deleting what an
// operator banned, a blocklist re-import dropping an address the engine
// banned, and the engine's delete lifting an operator's ban.
func TestProducersCoexist(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	sub, follower, _ := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-"})
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	now := time.Now()
	mk := func(op decisionfeed.Op, value, origin string, dur time.Duration) decisionfeed.Decision {
		return decisionfeed.NewDecision(op, decisionfeed.TypeBan, netip.MustParsePrefix(value), dur, origin, now)
	}
	ctx := context.Background()
	for _, step := range [][]decisionfeed.Decision{
		{
			mk(decisionfeed.OpAdd, "192.0.2.77/32", "cli", 24*time.Hour),                    // operator ban
			mk(decisionfeed.OpAdd, "198.51.100.0/24", "lists:firehol_level1", 24*time.Hour), // blocklist
			mk(decisionfeed.OpAdd, "198.51.100.0/24", "engine", 4*time.Hour),                // engine, same range
			mk(decisionfeed.OpAdd, "2001:db8::1/128", "cli", time.Hour),                     // operator ban
			mk(decisionfeed.OpAdd, "2001:db8::1/128", "engine", 4*time.Hour),                // engine, same address
		},
		{
			mk(decisionfeed.OpDelete, "192.0.2.77/32", "crowdsec", 0),               // CrowdSec deleted something of its own
			mk(decisionfeed.OpDelete, "198.51.100.0/24", "lists:firehol_level1", 0), // re-import without the range
			mk(decisionfeed.OpDelete, "2001:db8::1/128", "engine", 0),               // engine lifts its own ban
		},
	} {
		if err := pub.Publish(ctx, step...); err != nil {
			t.Fatal(err)
		}
	}
	const want = "ip:192.0.2.77 ban cli, ip:2001:db8::1 ban cli, range:198.51.100.0/24 ban engine"
	waitFor(t, 20*time.Second, "the follower's live set", func() bool {
		return sub.Stats().Lag == 0 && follower.enforced() == want
	})
	_, fresh, _ := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-"})
	if got := fresh.enforced(); got != want {
		t.Fatalf("a fresh bouncer's snapshot: %s\nwant %s", got, want)
	}
	if st := sub.Stats(); st.NoopDeletes != 1 || st.Live != 3 || st.Standing != 3 {
		t.Fatalf("stats %+v: want 1 no-op delete (crowdsec's), 3 addresses, 3 keys", st)
	}

	// The operator withdraws every origin's decision on an address.
	var dels []decisionfeed.Decision
	for _, s := range sub.Standing(time.Now()) {
		if s.Value == "198.51.100.0/24" {
			p, _ := s.Prefix()
			d := decisionfeed.NewDecision(decisionfeed.OpDelete, s.Type, p, 0, s.Origin, time.Now())
			d.Legacy = s.Legacy
			dels = append(dels, d)
		}
	}
	if len(dels) != 1 {
		t.Fatalf("standing on 198.51.100.0/24: %d decisions, want 1 (the engine's)", len(dels))
	}
	if err := pub.Publish(ctx, dels...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the range lifted", func() bool {
		return follower.enforced() == "ip:192.0.2.77 ban cli, ip:2001:db8::1 ban cli"
	})
}

// TestLegacyKeysStillRead writes schema v1 records under the key without
// origin, as the seed's producers did, beside new-format ones for the same
// address: both stand, the union is enforced, and a tombstone of the
// legacy key lifts only what stood under it.
func TestLegacyKeysStillRead(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	now := time.Now()
	old := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, netip.MustParsePrefix("203.0.113.7/32"), 8*time.Hour, "engine", now)
	cur := decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeCaptcha, netip.MustParsePrefix("203.0.113.7/32"), time.Hour, "engine", now)
	w := rawWriter(t, brokers, topic)
	if err := w.WriteMessages(context.Background(),
		kafka.Message{Key: []byte("ip:203.0.113.7"), Value: encode(t, old)},
		kafka.Message{Key: []byte(cur.Key()), Value: encode(t, cur)},
	); err != nil {
		t.Fatal(err)
	}
	sub, rec, _ := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-"})
	rec.mu.Lock()
	got := rec.live["ip:203.0.113.7"]
	rec.mu.Unlock()
	if got.Type != decisionfeed.TypeBan || !got.Until.Equal(old.Until) || got.ID != old.ID || !got.Legacy {
		t.Fatalf("enforced %+v, want the legacy ban", got)
	}
	if st := sub.Stats(); st.Standing != 2 || st.Live != 1 || st.LegacyKeys != 1 {
		t.Fatalf("stats %+v: want 2 keys on 1 address, 1 legacy record", st)
	}
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte("ip:203.0.113.7")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the captcha enforced", func() bool {
		return rec.enforced() == "ip:203.0.113.7 captcha engine"
	})
}

// TestAcceptBeforeUnion runs a bouncer that enforces only the engine's and
// the CLI's bans: a blocklist's longer ban on the same address does not
// count, so the engine's ban is what it enforces, and the blocklist's ban
// alone is not enforced at all.
func TestAcceptBeforeUnion(t *testing.T) {
	brokers := feedtest.Brokers(t)
	topic := feedtest.CompactedTopic(t, 3)
	accept := func(d *decisionfeed.Decision) bool {
		return d.Type == decisionfeed.TypeBan && (d.Origin == "engine" || d.Origin == "cli")
	}
	sub, rec, _ := subscribe(t, decisionfeed.SubscriberConfig{Brokers: brokers, Topic: topic, Group: "-", DLQTopic: "-", Accept: accept})
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: topic})
	now := time.Now()
	mk := func(value, origin string, typ decisionfeed.Type, dur time.Duration) decisionfeed.Decision {
		return decisionfeed.NewDecision(decisionfeed.OpAdd, typ, netip.MustParsePrefix(value), dur, origin, now)
	}
	if err := pub.Publish(context.Background(),
		mk("192.0.2.1/32", "lists:x", decisionfeed.TypeBan, 48*time.Hour), mk("192.0.2.1/32", "engine", decisionfeed.TypeBan, time.Hour),
		mk("192.0.2.2/32", "lists:x", decisionfeed.TypeBan, 48*time.Hour), mk("192.0.2.3/32", "cli", decisionfeed.TypeCaptcha, time.Hour),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the feed read", func() bool { return sub.Stats().Messages == 4 && rec.enforced() != "" })
	rec.mu.Lock()
	got := rec.live["ip:192.0.2.1"]
	rec.mu.Unlock()
	if s := rec.enforced(); s != "ip:192.0.2.1 ban engine" || !got.Until.Equal(now.UTC().Truncate(time.Millisecond).Add(time.Hour)) {
		t.Fatalf("enforced %s until %s, want only the engine's ban for an hour", s, got.Until)
	}
}

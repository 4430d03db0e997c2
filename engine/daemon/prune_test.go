package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/decisionfeed/feedtest"
)

// A running engine tombstones the expired and deleted keys of the
// decisions topic by itself, and leaves the live ones.
func TestEnginePrunesDecisions(t *testing.T) {
	cfg, brokers := testTopics(t)
	cfg.PruneInterval = 100 * time.Millisecond
	pub := feedtest.Publisher(t, decisionfeed.PublisherConfig{Brokers: brokers, Topic: cfg.Topics.Decisions})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	addr := func(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/32", i)) }
	var ds []decisionfeed.Decision
	for i := 1; i <= 5; i++ { // expired an hour ago
		ds = append(ds, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, addr(i), time.Hour, "engine", now.Add(-2*time.Hour)))
	}
	for i := 10; i <= 12; i++ { // live
		ds = append(ds, decisionfeed.NewDecision(decisionfeed.OpAdd, decisionfeed.TypeBan, addr(i), time.Hour, "engine", now))
	}
	ds = append(ds, decisionfeed.NewDecision(decisionfeed.OpDelete, decisionfeed.TypeBan, addr(12), 0, "engine", now))
	if err := pub.Publish(ctx, ds...); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(log, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	in := startDaemon(t, cfg, fmt.Sprintf("filenames: [%q]\nlabels: {type: nginx}\n", log))
	waitMetric(t, []*instance{in}, "portcullis_engine_pruned_total", 6, 30*time.Second)

	// A dry run over the topic now finds nothing left to prune.
	pr, err := decisionfeed.NewPruner(decisionfeed.PrunerConfig{Brokers: brokers, Topic: cfg.Topics.Decisions, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	st, err := pr.Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Live != 2 || st.Expired != 0 || st.Deleted != 0 {
		t.Fatalf("after the engine pruned: %+v, want 2 live and nothing to prune", st)
	}
}

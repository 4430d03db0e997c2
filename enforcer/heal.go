package enforcer

import (
	"context"
	"time"
)

// Healer is implemented by kernel backends whose objects someone else can
// remove while the bouncer runs (`nft flush ruleset`, `iptables -F`,
// `ipset destroy`, a detached XDP link, a re-created interface, a deleted
// map entry). The runner runs Watch for the life of the daemon and answers
// every drift it reports with Restore of the exact live set.
type Healer interface {
	// Watch blocks until ctx ends, calling w.Drift each time it finds that
	// what the backend installed was changed by someone else. It ignores
	// the backend's own changes. It returns nil when ctx ends, or an error
	// when it cannot watch at all.
	Watch(ctx context.Context, w WatchHooks) error
	// Restore reinstalls whatever is missing (tables, chains, sets, rules,
	// attachments) and makes the backend hold exactly entries, trusting
	// nothing it remembers of the kernel.
	Restore(ctx context.Context, entries []Entry) error
}

// WatchHooks is what a Healer's Watch gets from the runner.
type WatchHooks struct {
	// Drift reports a change made by someone else; cause is a short
	// snake_case word for the restores_total metric (table_removed,
	// link_detached, …).
	Drift func(cause string)
	// Expect calls check with the number of bans the backend must hold
	// that are still live at the given instant, while no change of the
	// runner's is in flight, so that a count read inside check is
	// comparable with it. Backends that cannot tell a missing entry from
	// events use it for a periodic count.
	Expect func(check func(live int, at time.Time) error) error
}

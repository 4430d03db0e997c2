package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/portcullis-ips/portcullis/enforcer"
)

// dryRunShown is how many prefixes of a batch a dry run logs at info
// level; the rest are logged at debug level.
const dryRunShown = 20

// dryRun is the enforcer of --dry-run: it logs what the chosen backend
// would be asked to do and touches nothing.
type dryRun struct {
	mode string
	log  *slog.Logger
}

// Apply implements enforcer.Enforcer.
func (d *dryRun) Apply(_ context.Context, b enforcer.Batch) error {
	for i, e := range b.Add {
		d.logf(i, "dry run: would add", "prefix", e.Prefix, "until", e.Until.UTC().Format(time.RFC3339), "reason", e.Reason, "origin", e.Origin)
	}
	for i, p := range b.Delete {
		d.logf(i, "dry run: would delete", "prefix", p)
	}
	return nil
}

// Reconcile implements enforcer.Enforcer.
func (d *dryRun) Reconcile(_ context.Context, entries []enforcer.Entry) error {
	d.log.Info("dry run: would reconcile", "mode", d.mode, "bans", len(entries))
	for i, e := range entries {
		d.logf(i, "dry run: would hold", "prefix", e.Prefix, "until", e.Until.UTC().Format(time.RFC3339), "reason", e.Reason, "origin", e.Origin)
	}
	return nil
}

// Close implements enforcer.Enforcer.
func (d *dryRun) Close() error { return nil }

func (d *dryRun) logf(i int, msg string, args ...any) {
	lvl := slog.LevelInfo
	if i >= dryRunShown {
		lvl = slog.LevelDebug
	}
	d.log.Log(context.Background(), lvl, msg, append([]any{"mode", d.mode}, args...)...)
}

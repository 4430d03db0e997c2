package main

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer/runner"
)

// feedHandler passes the decision feed to the runner, the one
// decision→enforcer path every bouncer shares (policy, batching, expiry),
// and marks the bouncer ready once the first snapshot is enforced.
type feedHandler struct {
	r      *runner.Runner
	ready  *atomic.Bool
	logger *slog.Logger
}

var _ decisionfeed.Handler = (*feedHandler)(nil)

// Snapshot implements decisionfeed.Handler.
func (h *feedHandler) Snapshot(ctx context.Context, live []decisionfeed.Decision) error {
	if err := h.r.Snapshot(ctx, live); err != nil {
		return err
	}
	if !h.ready.Swap(true) {
		h.logger.Info("decision snapshot loaded; answering from it", "live", len(live), "enforced", h.r.Len())
	}
	return nil
}

// Changes implements decisionfeed.Handler.
func (h *feedHandler) Changes(ctx context.Context, changes []decisionfeed.Decision) error {
	return h.r.Changes(ctx, changes)
}

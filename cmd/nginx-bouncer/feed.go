package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/banfile"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// feedHandler loads the decision feed into the prefix set. It implements
// decisionfeed.Handler. Ban and captcha decisions are enforced; a throttle
// decision, which nginx-bouncer cannot enforce, still supersedes its key's
// earlier ban or captcha.
type feedHandler struct {
	set *prefixset.Set
	// file is the ban file of the in-nginx check; nil without --ban-file.
	file   *banfile.File
	ready  *atomic.Bool
	logger *slog.Logger
}

var _ decisionfeed.Handler = (*feedHandler)(nil)

// Snapshot replaces the set with the live decisions and marks the bouncer ready.
func (h *feedHandler) Snapshot(ctx context.Context, live []decisionfeed.Decision) error {
	entries := make([]prefixset.Entry, 0, len(live))
	for i := range live {
		d := &live[i]
		e, enforce, err := toEntry(d)
		if err != nil {
			return err
		}
		if enforce {
			entries = append(entries, e)
		}
	}
	if err := h.set.ReconcileRemedies(ctx, entries); err != nil {
		return fmt.Errorf("load snapshot: %w", err)
	}
	if h.file != nil {
		if err := h.file.ReconcileRemedies(ctx, entries); err != nil {
			return fmt.Errorf("load snapshot into the ban file: %w", err)
		}
	}
	if !h.ready.Swap(true) {
		h.logger.Info("decision snapshot loaded; answering from it", "live", len(live), "enforced", len(entries))
	}
	return nil
}

// Changes applies adds and deletes. Only the last change of each key
// counts, since the set applies a batch's deletes before its adds.
func (h *feedHandler) Changes(ctx context.Context, changes []decisionfeed.Decision) error {
	last := make(map[netip.Prefix]int, len(changes))
	order := make([]netip.Prefix, 0, len(changes))
	for i := range changes {
		p, err := changes[i].Prefix()
		if err != nil {
			return fmt.Errorf("decision %s: %w", changes[i].Key(), err)
		}
		if _, seen := last[p]; !seen {
			order = append(order, p)
		}
		last[p] = i
	}
	var b prefixset.Batch
	for _, p := range order {
		d := &changes[last[p]]
		if d.Op == decisionfeed.OpDelete {
			b.Delete = append(b.Delete, p)
			continue
		}
		e, enforce, err := toEntry(d)
		if err != nil {
			return err
		}
		if enforce {
			b.Add = append(b.Add, e)
		} else {
			b.Delete = append(b.Delete, p)
		}
	}
	if err := h.set.ApplyRemedies(ctx, b); err != nil {
		return fmt.Errorf("apply %d changes: %w", len(changes), err)
	}
	if h.file != nil {
		if err := h.file.ApplyRemedies(ctx, b); err != nil {
			return fmt.Errorf("apply %d changes to the ban file: %w", len(changes), err)
		}
	}
	return nil
}

// toEntry converts an add decision; enforce is false for types the bouncer
// does not enforce.
func toEntry(d *decisionfeed.Decision) (e prefixset.Entry, enforce bool, err error) {
	var r prefixset.Remedy
	switch d.Type {
	case decisionfeed.TypeBan:
		r = prefixset.RemedyBan
	case decisionfeed.TypeCaptcha:
		r = prefixset.RemedyCaptcha
	default:
		return prefixset.Entry{}, false, nil
	}
	base, err := enforcer.FromDecision(d)
	if err != nil {
		return prefixset.Entry{}, false, err
	}
	return prefixset.Entry{Entry: base, Remedy: r}, true, nil
}

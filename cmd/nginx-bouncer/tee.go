package main

import (
	"context"
	"errors"

	"github.com/portcullis-ips/portcullis/enforcer"
	"github.com/portcullis-ips/portcullis/enforcer/banfile"
	"github.com/portcullis-ips/portcullis/enforcer/prefixset"
)

// tee is the runner's backend with --ban-file: the prefix set that /check
// and /ban read, and the ban file nginx's Lua check maps, kept equal.
type tee struct {
	set  *prefixset.Set
	file *banfile.File
}

var _ enforcer.Enforcer = tee{}

// Apply applies the batch to both; the ban file is written even when the
// set failed, so that one does not hold back the other.
func (t tee) Apply(ctx context.Context, b enforcer.Batch) error {
	return errors.Join(t.set.Apply(ctx, b), t.file.Apply(ctx, b))
}

// Reconcile reconciles both.
func (t tee) Reconcile(ctx context.Context, entries []enforcer.Entry) error {
	return errors.Join(t.set.Reconcile(ctx, entries), t.file.Reconcile(ctx, entries))
}

// Close closes the ban file; the set is closed by its owner.
func (t tee) Close() error { return t.file.Close() }

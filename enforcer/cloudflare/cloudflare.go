// Package cloudflare keeps Cloudflare's edge in step with the live
// decisions: an account-level IP list per action (portcullis_ban,
// portcullis_captcha) holds exactly the wanted addresses, and every
// configured zone has one WAF custom rule per list in its
// http_request_firewall_custom phase, found again by its ref.
//
// A sync reads what Cloudflare holds (the list items once, then only
// when something suggests a change), computes the difference and sends
// it as bulk operations, one pending operation per account at a time,
// waiting for each to finish. It stays inside the account's item limit,
// keeping the most valuable items and counting what it left out, and
// inside a client-side request budget below Cloudflare's 1,200 requests
// per 5 minutes. The operator's own rules are never rewritten: rules are
// added, edited and removed one by one through the rules endpoints.
//
// Only the SDK's rules, rulesets and option packages are imported; the
// SDK root imports every service and takes minutes to build.
package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/firewall"
	"github.com/cloudflare/cloudflare-go/v7/option"
	"github.com/cloudflare/cloudflare-go/v7/rules"
	"github.com/cloudflare/cloudflare-go/v7/rulesets"
)

// Phase is the ruleset phase that holds the custom rules.
const Phase = rulesets.PhaseHTTPRequestFirewallCustom

// Client syncs one Cloudflare account. Its methods are safe for
// concurrent use; syncs run one at a time.
type Client struct {
	cfg    Config
	tr     *transport
	lists  *rules.ListService
	items  *rules.ListItemService
	ops    *rules.ListBulkOperationService
	phases *rulesets.PhaseService
	rules  *rulesets.RuleService
	access *firewall.AccessRuleService
	now    func() time.Time

	mu      sync.Mutex
	remote  map[string]*remoteList // by list name
	rulesAt time.Time              // when the zone rules were last found right
	// acc is what the client knows of its IP Access Rules (access mode);
	// nil until read.
	acc       *accessRules
	accReadAt time.Time
}

// remoteList is what the client knows of one of its lists at Cloudflare.
type remoteList struct {
	id string
	// items maps a canonical ip string to its item id; the id is "" for
	// items this client added and has not read back yet.
	items map[string]string
	// strays are ids of items that duplicate another after normalisation.
	strays []string
	// modified is the list's modified_on when the client last knew its
	// content for sure.
	modified string
	readAt   time.Time
	// doubt forces a re-read at the next sync.
	doubt bool
}

// New returns a client for the account in cfg, authenticating with token
// (a Cloudflare API token allowed to edit account filter lists and zone
// WAF rules). It does no I/O.
func New(cfg Config, token string) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return nil, errors.New("api token: empty")
	}
	tr := newTransport(&cfg)
	opts := []option.RequestOption{
		option.WithBaseURL(cfg.APIBase),
		option.WithAPIToken(token),
		// Retries happen in the middleware, inside the request budget.
		option.WithMaxRetries(0),
		option.WithMiddleware(tr.middleware),
		option.WithHTTPClient(&http.Client{Timeout: cfg.RequestTimeout}),
	}
	return &Client{
		cfg:    cfg,
		tr:     tr,
		lists:  rules.NewListService(opts...),
		items:  rules.NewListItemService(opts...),
		ops:    rules.NewListBulkOperationService(opts...),
		phases: rulesets.NewPhaseService(opts...),
		rules:  rulesets.NewRuleService(opts...),
		access: firewall.NewAccessRuleService(opts...),
		now:    time.Now,
		remote: map[string]*remoteList{},
	}, nil
}

// Stats returns the client's HTTP counters.
func (c *Client) Stats() Stats { return c.tr.stats() }

// Plan is what a sync would change.
type Plan struct {
	// Lists has one entry per list the enforcer uses.
	Lists []ListPlan
	// Rules are the zone rule changes.
	Rules []RuleChange
	// Access is the change to the IP Access Rules in access mode (nil in
	// lists mode).
	Access *AccessPlan
	// Budget is the number of items the enforcer may hold: the item
	// limit less the items of the account's other lists.
	Budget int
	// LeftOut counts wanted items dropped to stay within Budget;
	// Refused those Cloudflare does not accept (e.g. an IPv4 /4);
	// Unsupported the captcha items when no captcha list is configured.
	LeftOut, Refused, Unsupported int
	// RefusedExample is one refusal reason.
	RefusedExample string
	// rulesChecked says the zone rules were read for this plan.
	rulesChecked bool
}

// ListPlan is the change to one list.
type ListPlan struct {
	// Name is the list's name; Action what its rule does.
	Name   string
	Action Action
	// Create says the list does not exist yet.
	Create bool
	// Add are the items to add; Delete the item ids to remove and
	// DeleteIPs their addresses (duplicates come last, without one).
	Add       []Addition
	Delete    []string
	DeleteIPs []string
	// Items is the number of items after the change.
	Items int
}

// Addition is an item to add to a list.
type Addition struct {
	// IP is the address or prefix as Cloudflare stores it.
	IP string
	// Comment says who added it, why, and what normalisation changed.
	Comment string
}

// String is "ip (comment)".
func (a Addition) String() string { return a.IP + " (" + a.Comment + ")" }

// RuleChange is a change to one zone's custom rules.
type RuleChange struct {
	// Zone is the zone id.
	Zone string
	// Kind is "create-entrypoint", "create" or "update".
	Kind string
	// Ref names the rule; RuleID and RulesetID are set for an update.
	Ref       string
	RulesetID string
	RuleID    string
	Action    Action
	// Lists are the lists a create-entrypoint change installs rules for.
	Lists []ListPlan
}

// Summary is the outcome of a sync.
type Summary struct {
	// Items is the number of items in the enforcer's lists afterwards.
	Items int
	// ByList is Items per list name.
	ByList map[string]int
	// Adds and Deletes count the items written.
	Adds, Deletes int
	// LeftOut, Refused and Unsupported are as in Plan.
	LeftOut, Refused, Unsupported int
	// RefusedExample is one refusal reason.
	RefusedExample string
	// RuleChanges counts the zone rule writes.
	RuleChanges int
	// Calls and Writes count the HTTP requests of this sync.
	Calls, Writes uint64
}

// String is the one-line summary printed by cf-bouncer --once.
func (s Summary) String() string {
	return fmt.Sprintf("items=%d adds=%d deletes=%d left_out=%d refused=%d unsupported=%d rule_changes=%d api_calls=%d api_writes=%d",
		s.Items, s.Adds, s.Deletes, s.LeftOut, s.Refused, s.Unsupported, s.RuleChanges, s.Calls, s.Writes)
}

// DryRun reads what Cloudflare holds and returns what Sync would change,
// writing nothing.
func (c *Client) DryRun(ctx context.Context, items []Item) (Plan, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.Mode == ModeAccessRules {
		return c.planAccess(ctx, items)
	}
	return c.plan(ctx, items)
}

// Sync makes Cloudflare hold exactly items (as far as the budget allows)
// and every configured zone carry the rules for the lists.
func (c *Client) Sync(ctx context.Context, items []Item) (sum Summary, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	before := c.tr.stats()
	defer func() {
		after := c.tr.stats()
		sum.Calls, sum.Writes = after.Calls-before.Calls, after.Writes-before.Writes
	}()
	if c.cfg.Mode == ModeAccessRules {
		return c.syncAccess(ctx, items)
	}
	p, err := c.plan(ctx, items)
	if err != nil {
		return sum, err
	}
	sum.LeftOut, sum.Refused, sum.Unsupported, sum.RefusedExample = p.LeftOut, p.Refused, p.Unsupported, p.RefusedExample
	for _, lp := range p.Lists {
		if lp.Create {
			if err := c.createList(ctx, lp.Name, lp.Action); err != nil {
				return sum, err
			}
		}
	}
	for _, rc := range p.Rules {
		if err := c.applyRule(ctx, rc); err != nil {
			c.rulesAt = time.Time{}
			return sum, err
		}
		sum.RuleChanges++
	}
	if p.rulesChecked {
		c.rulesAt = c.now()
	}
	// Deletes first: they make room under the item limit.
	for _, lp := range p.Lists {
		n, err := c.deleteItems(ctx, lp)
		sum.Deletes += n
		if err != nil {
			return sum, err
		}
	}
	for _, lp := range p.Lists {
		n, err := c.addItems(ctx, lp)
		sum.Adds += n
		if err != nil {
			return sum, err
		}
	}
	if sum.Adds+sum.Deletes > 0 {
		// Learn the lists' new modification times, so that the next sync
		// notices an edit by someone else even when it keeps the count.
		existing, _, err := c.readLists(ctx)
		if err != nil {
			return sum, err
		}
		for name, r := range c.remote {
			l, ok := existing[name]
			if !ok || l.ID != r.id || int(l.NumItems) != len(r.items)+len(r.strays) {
				r.doubt = true
				continue
			}
			r.modified = l.ModifiedOn
		}
	}
	sum.ByList = map[string]int{}
	for _, lp := range p.Lists {
		if r := c.remote[lp.Name]; r != nil {
			sum.ByList[lp.Name] = len(r.items)
			sum.Items += len(r.items)
		}
	}
	return sum, nil
}

// owned returns the names and actions of the lists the enforcer uses.
func (c *Client) owned() []ListPlan {
	out := []ListPlan{{Name: c.cfg.BanList, Action: Block}}
	if c.cfg.CaptchaList != "" {
		out = append(out, ListPlan{Name: c.cfg.CaptchaList, Action: Challenge})
	}
	return out
}

func (c *Client) plan(ctx context.Context, items []Item) (Plan, error) {
	var p Plan
	now := c.now()
	existing, others, err := c.readLists(ctx)
	if err != nil {
		return p, err
	}
	for _, lp := range c.owned() {
		l, ok := existing[lp.Name]
		if !ok {
			delete(c.remote, lp.Name)
			continue
		}
		r := c.remote[lp.Name]
		if r == nil || r.id != l.ID || r.doubt || r.modified != l.ModifiedOn || len(r.items)+len(r.strays) != int(l.NumItems) || now.Sub(r.readAt) >= c.cfg.ResyncInterval {
			if err := c.readItems(ctx, lp.Name, l.ID, l.ModifiedOn); err != nil {
				return p, err
			}
		}
	}
	p.Budget = max(c.cfg.ItemLimit-others, 0)
	sel := selectItems(items, now, p.Budget, c.cfg.ScenarioPriority, c.cfg.CaptchaList != "", normalize)
	p.LeftOut, p.Refused, p.Unsupported, p.RefusedExample = sel.leftOut, sel.refused, sel.unsupported, sel.refusedExample
	for _, lp := range c.owned() {
		want := sel.byAction[lp.Action]
		r := c.remote[lp.Name]
		if r == nil {
			// The ban list is always made; the captcha list only once
			// there is something to challenge, as free plans have few lists.
			if lp.Action == Challenge && len(want) == 0 {
				continue
			}
			lp.Create = true
			lp.Add = sortedItems(want)
			lp.Items = len(want)
			p.Lists = append(p.Lists, lp)
			continue
		}
		lp = diff(lp, r, want)
		if slices.Contains(lp.Delete, "") {
			// Items added by an earlier sync have no known id yet.
			if err := c.readItems(ctx, lp.Name, r.id, r.modified); err != nil {
				return p, err
			}
			lp = diff(ListPlan{Name: lp.Name, Action: lp.Action}, c.remote[lp.Name], want)
		}
		p.Lists = append(p.Lists, lp)
	}
	if c.rulesAt.IsZero() || now.Sub(c.rulesAt) >= c.cfg.ResyncInterval || anyCreate(p.Lists) {
		rc, err := c.planRules(ctx, p.Lists)
		if err != nil {
			return p, err
		}
		p.Rules, p.rulesChecked = rc, true
	}
	return p, nil
}

func anyCreate(ls []ListPlan) bool {
	return slices.ContainsFunc(ls, func(l ListPlan) bool { return l.Create })
}

// diff fills lp with the changes that turn r into want.
func diff(lp ListPlan, r *remoteList, want map[string]listItem) ListPlan {
	for _, ip := range slices.Sorted(maps.Keys(r.items)) {
		if _, ok := want[ip]; !ok {
			lp.Delete = append(lp.Delete, r.items[ip])
			lp.DeleteIPs = append(lp.DeleteIPs, ip)
		}
	}
	lp.Delete = append(lp.Delete, r.strays...)
	for _, li := range sortedItems(want) {
		if _, ok := r.items[li.IP]; !ok {
			lp.Add = append(lp.Add, li)
		}
	}
	lp.Items = len(want)
	return lp
}

func sortedItems(m map[string]listItem) []Addition {
	out := make([]Addition, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, Addition{IP: k, Comment: m[k].comment})
	}
	return out
}

// readLists returns the account's lists by name and the number of items
// in the lists the enforcer does not own.
func (c *Client) readLists(ctx context.Context) (map[string]rules.ListsList, int, error) {
	var q rules.ListListParams
	q.AccountID.Value, q.AccountID.Present = c.cfg.AccountID, true
	page, err := c.lists.List(ctx, q)
	if err != nil {
		return nil, 0, apiError("read lists of account "+c.cfg.AccountID, err)
	}
	byName := map[string]rules.ListsList{}
	others := 0
	for _, l := range page.Result {
		if l.NumItems < 0 || l.NumItems > 1e9 {
			return nil, 0, fmt.Errorf("read lists of account %s: list %q: num_items %v out of range", c.cfg.AccountID, l.Name, l.NumItems)
		}
		if l.Name == c.cfg.BanList || (c.cfg.CaptchaList != "" && l.Name == c.cfg.CaptchaList) {
			if l.Kind != rules.ListsListKindIP {
				return nil, 0, fmt.Errorf("list %s (%s): kind %q, not ip; rename it or choose another list name", l.Name, l.ID, l.Kind)
			}
			byName[l.Name] = l
			continue
		}
		others += int(l.NumItems)
	}
	return byName, others, nil
}

// readItems reads all items of a list (cursor pagination) into the cache.
// modified is the list's modified_on as read before.
func (c *Client) readItems(ctx context.Context, name, id, modified string) error {
	var q rules.ListItemListParams
	q.AccountID.Value, q.AccountID.Present = c.cfg.AccountID, true
	q.PerPage.Value, q.PerPage.Present = int64(c.cfg.PageSize), true
	r := &remoteList{id: id, items: map[string]string{}, readAt: c.now(), modified: modified}
	// An answer that never ends is refused rather than followed.
	maxItems := 10*c.cfg.ItemLimit + c.cfg.PageSize
	page, err := c.items.List(ctx, id, q)
	n := 0
	for ; err == nil && page != nil; page, err = page.GetNextPage() {
		for _, it := range page.Result {
			n++
			if n > maxItems {
				return fmt.Errorf("read items of list %s: more than %d items; the answer does not end", name, maxItems)
			}
			key := it.IP
			if p, perr := parsePrefix(it.IP); perr == nil {
				if ip, _, nerr := normalize(p); nerr == nil {
					key = ip
				}
			}
			if it.ID == "" {
				return fmt.Errorf("read items of list %s: item %q without an id", name, it.IP)
			}
			if _, dup := r.items[key]; dup {
				r.strays = append(r.strays, it.ID)
				continue
			}
			r.items[key] = it.ID
		}
	}
	if err != nil {
		return apiError("read items of list "+name, err)
	}
	c.remote[name] = r
	return nil
}

// parsePrefix reads an address or a prefix.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (c *Client) createList(ctx context.Context, name string, a Action) error {
	var p rules.ListNewParams
	p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
	p.Kind.Value, p.Kind.Present = rules.ListNewParamsKindIP, true
	p.Name.Value, p.Name.Present = name, true
	p.Description.Value, p.Description.Present = fmt.Sprintf("Portcullis decisions (%s); managed by cf-bouncer, edits are undone", a), true
	res, err := c.lists.New(ctx, p)
	if err != nil {
		return apiError("create list "+name, err)
	}
	if res.ID == "" {
		return fmt.Errorf("create list %s: the answer has no list id", name)
	}
	c.remote[name] = &remoteList{id: res.ID, items: map[string]string{}, readAt: c.now(), modified: res.ModifiedOn}
	return nil
}

// deleteItems sends the plan's deletes and returns how many were made.
func (c *Client) deleteItems(ctx context.Context, lp ListPlan) (int, error) {
	r := c.remote[lp.Name]
	if len(lp.Delete) == 0 || r == nil {
		return 0, nil
	}
	what := func(n int) string { return fmt.Sprintf("delete %d items from list %s", n, lp.Name) }
	return inChunks(ctx, c, r, lp.Delete, what, func(chunk []string) (string, error) {
		var p rules.ListItemDeleteParams
		p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
		body := make([]rules.ListItemDeleteParamsItem, len(chunk))
		for i, id := range chunk {
			body[i].ID.Value, body[i].ID.Present = id, true
		}
		p.Items.Value, p.Items.Present = body, true
		res, err := c.items.Delete(ctx, r.id, p)
		if err != nil {
			return "", err
		}
		return res.OperationID, nil
	}, func(chunk []string) {
		gone := map[string]bool{}
		for _, id := range chunk {
			gone[id] = true
		}
		maps.DeleteFunc(r.items, func(_, id string) bool { return gone[id] })
		r.strays = slices.DeleteFunc(r.strays, func(id string) bool { return gone[id] })
	})
}

// addItems sends the plan's adds and returns how many were made.
func (c *Client) addItems(ctx context.Context, lp ListPlan) (int, error) {
	r := c.remote[lp.Name]
	if len(lp.Add) == 0 {
		return 0, nil
	}
	if r == nil {
		return 0, fmt.Errorf("add items to list %s: the list does not exist", lp.Name)
	}
	what := func(n int) string { return fmt.Sprintf("add %d items to list %s", n, lp.Name) }
	return inChunks(ctx, c, r, lp.Add, what, func(chunk []Addition) (string, error) {
		var p rules.ListItemNewParams
		p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
		p.Body = make([]rules.ListItemNewParamsBodyUnion, len(chunk))
		for i, li := range chunk {
			var b rules.ListItemNewParamsBodyListsListItemIPComment
			b.IP.Value, b.IP.Present = li.IP, true
			b.Comment.Value, b.Comment.Present = li.Comment, true
			p.Body[i] = b
		}
		res, err := c.items.New(ctx, r.id, p)
		if err != nil {
			return "", err
		}
		return res.OperationID, nil
	}, func(chunk []Addition) {
		for _, li := range chunk {
			r.items[li.IP] = "" // the id is learnt at the next read
		}
	})
}

// inChunks sends items to r in bulk operations of at most BulkChunk items
// each: submit sends a chunk and returns its operation id, sent records a
// chunk whose operation completed. It returns how many items were sent.
func inChunks[T any](ctx context.Context, c *Client, r *remoteList, items []T, what func(n int) string, submit func([]T) (string, error), sent func([]T)) (int, error) {
	done := 0
	for chunk := range slices.Chunk(items, c.cfg.BulkChunk) {
		if err := c.bulk(ctx, what(len(chunk)), r, func() (string, error) { return submit(chunk) }); err != nil {
			return done, err
		}
		done += len(chunk)
		sent(chunk)
	}
	return done, nil
}

// bulk submits one bulk operation and waits for it to finish. An
// account has at most one pending bulk operation: a submission refused
// with a conflict (someone else's operation runs) is retried after a
// backoff. Any failure puts the list in doubt, so the next sync reads it.
func (c *Client) bulk(ctx context.Context, what string, r *remoteList, submit func() (string, error)) error {
	delay := c.cfg.PollMin
	for attempt := 0; ; attempt++ {
		id, err := submit()
		if err == nil {
			if id == "" {
				r.doubt = true
				return fmt.Errorf("%s: the answer has no operation_id", what)
			}
			if err := c.wait(ctx, what, id); err != nil {
				r.doubt = true
				return err
			}
			return nil
		}
		var ae *rules.Error
		if errors.As(err, &ae) && ae.StatusCode == http.StatusConflict && attempt < c.cfg.MaxRetries {
			if err := sleep(ctx, delay+jitter(delay)); err != nil {
				r.doubt = true
				return fmt.Errorf("%s: %w", what, err)
			}
			delay = min(2*delay, c.cfg.PollMax)
			continue
		}
		r.doubt = true
		return apiError(what, err)
	}
}

// wait polls a bulk operation until it completes or fails.
func (c *Client) wait(ctx context.Context, what, id string) error {
	var q rules.ListBulkOperationGetParams
	q.AccountID.Value, q.AccountID.Present = c.cfg.AccountID, true
	deadline := time.Now().Add(c.cfg.OpTimeout)
	delay := c.cfg.PollMin
	for {
		if err := sleep(ctx, delay); err != nil {
			return fmt.Errorf("%s: wait for bulk operation %s: %w", what, id, err)
		}
		res, err := c.ops.Get(ctx, id, q)
		if err != nil {
			return apiError(fmt.Sprintf("%s: poll bulk operation %s", what, id), err)
		}
		switch res.Status {
		case rules.ListBulkOperationGetResponseStatusCompleted:
			return nil
		case rules.ListBulkOperationGetResponseStatusFailed:
			return fmt.Errorf("%s: bulk operation %s failed: %s", what, id, oneLine(res.Error))
		case rules.ListBulkOperationGetResponseStatusPending, rules.ListBulkOperationGetResponseStatusRunning:
		default:
			return fmt.Errorf("%s: bulk operation %s: unknown status %q", what, id, oneLine(string(res.Status)))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: bulk operation %s still %s after %s", what, id, res.Status, c.cfg.OpTimeout)
		}
		delay = min(2*delay, c.cfg.PollMax)
	}
}

// ruleFor is the rule the enforcer keeps for a list.
func (c *Client) ruleFor(name string, a Action) (ref, expr, desc string) {
	return name, "ip.src in $" + name, fmt.Sprintf("Portcullis: %s addresses in $%s (managed by cf-bouncer)", a, name)
}

// planRules reads every zone's custom-rules entrypoint and returns the
// changes that give it a rule per list.
func (c *Client) planRules(ctx context.Context, lists []ListPlan) ([]RuleChange, error) {
	var out []RuleChange
	for _, z := range c.cfg.ZoneIDs {
		var q rulesets.PhaseGetParams
		q.ZoneID.Value, q.ZoneID.Present = z, true
		rs, err := c.phases.Get(ctx, Phase, q)
		if err != nil {
			var ae *rulesets.Error
			if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound && !hasCode(ae, 7003) {
				out = append(out, RuleChange{Zone: z, Kind: "create-entrypoint", Lists: lists})
				continue
			}
			return nil, apiError(fmt.Sprintf("read custom rules of zone %s", z), err)
		}
		for _, lp := range lists {
			ref, expr, _ := c.ruleFor(lp.Name, lp.Action)
			i := slices.IndexFunc(rs.Rules, func(r rulesets.PhaseGetResponseRule) bool { return r.Ref == ref })
			if i < 0 {
				out = append(out, RuleChange{Zone: z, Kind: "create", Ref: ref, RulesetID: rs.ID, Action: lp.Action})
				continue
			}
			r := rs.Rules[i]
			if r.Expression != expr || string(r.Action) != lp.Action.String() || !r.Enabled {
				out = append(out, RuleChange{Zone: z, Kind: "update", Ref: ref, RulesetID: rs.ID, RuleID: r.ID, Action: lp.Action})
			}
		}
	}
	return out, nil
}

func hasCode(e *rules.Error, code int64) bool {
	return slices.ContainsFunc(e.Errors, func(d sharedErrorData) bool { return d.Code == code })
}

// applyRule makes one rule change. New rules are appended at the end of
// the phase; the operator's rules are neither sent nor reordered.
func (c *Client) applyRule(ctx context.Context, rc RuleChange) error {
	switch rc.Kind {
	case "create-entrypoint":
		var p rulesets.PhaseUpdateParams
		p.ZoneID.Value, p.ZoneID.Present = rc.Zone, true
		p.Name.Value, p.Name.Present = "default", true
		var rs []rulesets.PhaseUpdateParamsRuleUnion
		for _, lp := range rc.Lists {
			ref, expr, desc := c.ruleFor(lp.Name, lp.Action)
			var r rulesets.PhaseUpdateParamsRule
			r.Action.Value, r.Action.Present = rulesets.PhaseUpdateParamsRulesAction(lp.Action.String()), true
			r.Expression.Value, r.Expression.Present = expr, true
			r.Description.Value, r.Description.Present = desc, true
			r.Enabled.Value, r.Enabled.Present = true, true
			r.Ref.Value, r.Ref.Present = ref, true
			rs = append(rs, r)
		}
		p.Rules.Value, p.Rules.Present = rs, true
		if _, err := c.phases.Update(ctx, Phase, p); err != nil {
			return apiError(fmt.Sprintf("create custom rules entrypoint of zone %s", rc.Zone), err)
		}
	case "create":
		ref, expr, desc := c.ruleFor(rc.Ref, rc.Action)
		var b rulesets.RuleNewParamsBody
		b.Action.Value, b.Action.Present = rulesets.RuleNewParamsBodyAction(rc.Action.String()), true
		b.Expression.Value, b.Expression.Present = expr, true
		b.Description.Value, b.Description.Present = desc, true
		b.Enabled.Value, b.Enabled.Present = true, true
		b.Ref.Value, b.Ref.Present = ref, true
		p := rulesets.RuleNewParams{Body: b}
		p.ZoneID.Value, p.ZoneID.Present = rc.Zone, true
		if _, err := c.rules.New(ctx, rc.RulesetID, p); err != nil {
			return apiError(fmt.Sprintf("add rule %s to zone %s", ref, rc.Zone), err)
		}
	case "update":
		ref, expr, desc := c.ruleFor(rc.Ref, rc.Action)
		var b rulesets.RuleEditParamsBody
		b.Action.Value, b.Action.Present = rulesets.RuleEditParamsBodyAction(rc.Action.String()), true
		b.Expression.Value, b.Expression.Present = expr, true
		b.Description.Value, b.Description.Present = desc, true
		b.Enabled.Value, b.Enabled.Present = true, true
		b.Ref.Value, b.Ref.Present = ref, true
		p := rulesets.RuleEditParams{Body: b}
		p.ZoneID.Value, p.ZoneID.Present = rc.Zone, true
		if _, err := c.rules.Edit(ctx, rc.RulesetID, rc.RuleID, p); err != nil {
			return apiError(fmt.Sprintf("update rule %s in zone %s", ref, rc.Zone), err)
		}
	default:
		return fmt.Errorf("rule change %q: unknown kind", rc.Kind)
	}
	return nil
}

// Removal counts what Remove deleted: zone rules and lists, or IP
// Access Rules in access mode.
type Removal struct {
	Rules, Lists, AccessRules int
}

// Remove deletes what the enforcer made: its rules (found by ref) in
// every configured zone, then its lists. The operator's rules and lists
// are not touched. A list still used by a rule in a zone that is not
// configured cannot be deleted; Cloudflare's refusal is returned.
func (c *Client) Remove(ctx context.Context) (Removal, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.Mode == ModeAccessRules {
		return c.removeAccess(ctx)
	}
	var out Removal
	refs := map[string]bool{}
	for _, lp := range c.owned() {
		refs[lp.Name] = true
	}
	for _, z := range c.cfg.ZoneIDs {
		var q rulesets.PhaseGetParams
		q.ZoneID.Value, q.ZoneID.Present = z, true
		rs, err := c.phases.Get(ctx, Phase, q)
		if err != nil {
			var ae *rulesets.Error
			if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound && !hasCode(ae, 7003) {
				continue // no entrypoint: nothing of ours
			}
			return out, apiError(fmt.Sprintf("read custom rules of zone %s", z), err)
		}
		for _, r := range rs.Rules {
			if !refs[r.Ref] {
				continue
			}
			var p rulesets.RuleDeleteParams
			p.ZoneID.Value, p.ZoneID.Present = z, true
			if _, err := c.rules.Delete(ctx, rs.ID, r.ID, p); err != nil {
				return out, apiError(fmt.Sprintf("delete rule %s from zone %s", r.Ref, z), err)
			}
			out.Rules++
		}
	}
	c.rulesAt = time.Time{}
	existing, _, err := c.readLists(ctx)
	if err != nil {
		return out, err
	}
	for _, name := range slices.Sorted(maps.Keys(existing)) {
		var p rules.ListDeleteParams
		p.AccountID.Value, p.AccountID.Present = c.cfg.AccountID, true
		if _, err := c.lists.Delete(ctx, existing[name].ID, p); err != nil {
			return out, apiError("delete list "+name, err)
		}
		delete(c.remote, name)
		out.Lists++
	}
	return out, nil
}

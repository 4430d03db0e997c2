package cloudflare

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cloudflare/cloudflare-go/v7/firewall"
)

// accessNotes starts the notes of every IP Access Rule the enforcer
// makes; only rules whose notes start with it are ever changed.
const accessNotes = "portcullis"

// accessRules is what the client knows of its IP Access Rules.
type accessRules struct {
	// byValue maps a canonical value to its rule.
	byValue map[string]accessRule
	// strays are ids of rules that duplicate another value.
	strays []string
	doubt  bool
}

type accessRule struct {
	id   string
	mode string
}

// AccessPlan is the change to the IP Access Rules in access mode.
type AccessPlan struct {
	// Add are the rules to create, by action.
	Add map[Action][]Addition
	// Delete are the ids of the rules to remove and DeleteValues their
	// values (duplicates come last, without one).
	Delete       []string
	DeleteValues []string
	// Rules is the number of rules after the change.
	Rules int
}

// readAccess reads the enforcer's access rules (notes starting with
// "portcullis"; the API filters by notes, the prefix is checked here).
func (c *Client) readAccess(ctx context.Context) error {
	var q firewall.AccessRuleListParams
	q.AccountID.Value, q.AccountID.Present = c.cfg.AccountID, true
	q.Notes.Value, q.Notes.Present = accessNotes, true
	q.PerPage.Value, q.PerPage.Present = float64(c.cfg.PageSize), true
	acc := &accessRules{byValue: map[string]accessRule{}}
	maxRules := 10*c.cfg.ItemLimit + c.cfg.PageSize
	n := 0
	page, err := c.access.List(ctx, q)
	for ; err == nil && page != nil; page, err = page.GetNextPage() {
		for _, r := range page.Result {
			if n++; n > maxRules {
				return fmt.Errorf("read IP access rules: more than %d rules; the answer does not end", maxRules)
			}
			if !strings.HasPrefix(r.Notes, accessNotes) {
				continue
			}
			if r.ID == "" {
				return fmt.Errorf("read IP access rules: rule for %q without an id", r.Configuration.Value)
			}
			key := r.Configuration.Value
			if p, perr := parsePrefix(key); perr == nil {
				if v, _, aerr := accessValue(p); aerr == nil {
					key = v
				}
			}
			if _, dup := acc.byValue[key]; dup {
				acc.strays = append(acc.strays, r.ID)
				continue
			}
			acc.byValue[key] = accessRule{id: r.ID, mode: string(r.Mode)}
		}
	}
	if err != nil {
		return apiError("read IP access rules of account "+c.cfg.AccountID, err)
	}
	c.acc = acc
	c.accReadAt = c.now()
	return nil
}

func (c *Client) planAccess(ctx context.Context, items []Item) (Plan, error) {
	now := c.now()
	if c.acc == nil || c.acc.doubt || now.Sub(c.accReadAt) >= c.cfg.ResyncInterval {
		if err := c.readAccess(ctx); err != nil {
			return Plan{}, err
		}
	}
	p := Plan{Budget: c.cfg.ItemLimit}
	sel := selectItems(items, now, p.Budget, c.cfg.ScenarioPriority, c.cfg.CaptchaList != "", accessValue)
	p.LeftOut, p.Refused, p.Unsupported, p.RefusedExample = sel.leftOut, sel.refused, sel.unsupported, sel.refusedExample
	want := map[string]listItem{}
	for _, m := range sel.byAction {
		maps.Copy(want, m)
	}
	ap := &AccessPlan{Add: map[Action][]Addition{}, Rules: len(want)}
	for _, v := range slices.Sorted(maps.Keys(c.acc.byValue)) {
		r := c.acc.byValue[v]
		if w, ok := want[v]; !ok || w.action.String() != r.mode {
			ap.Delete = append(ap.Delete, r.id)
			ap.DeleteValues = append(ap.DeleteValues, v)
		}
	}
	ap.Delete = append(ap.Delete, c.acc.strays...)
	for _, v := range slices.Sorted(maps.Keys(want)) {
		w := want[v]
		if r, ok := c.acc.byValue[v]; !ok || w.action.String() != r.mode {
			ap.Add[w.action] = append(ap.Add[w.action], Addition{IP: v, Comment: w.comment})
		}
	}
	p.Access = ap
	return p, nil
}

// syncAccess makes the IP Access Rules match items: one request per
// removed or added rule, deletes first.
func (c *Client) syncAccess(ctx context.Context, items []Item) (Summary, error) {
	var sum Summary
	p, err := c.planAccess(ctx, items)
	if err != nil {
		return sum, err
	}
	sum.LeftOut, sum.Refused, sum.Unsupported, sum.RefusedExample = p.LeftOut, p.Refused, p.Unsupported, p.RefusedExample
	gone := map[string]bool{}
	for _, id := range p.Access.Delete {
		if err := c.deleteAccess(ctx, id); err != nil {
			c.acc.doubt = true
			return sum, err
		}
		gone[id] = true
		sum.Deletes++
	}
	maps.DeleteFunc(c.acc.byValue, func(_ string, r accessRule) bool { return gone[r.id] })
	c.acc.strays = nil
	for _, a := range []Action{Block, Challenge} {
		for _, add := range p.Access.Add[a] {
			var q firewall.AccessRuleNewParams
			q.AccountID.Value, q.AccountID.Present = c.cfg.AccountID, true
			q.Mode.Value, q.Mode.Present = firewall.AccessRuleNewParamsMode(a.String()), true
			var conf firewall.AccessRuleNewParamsConfiguration
			conf.Target.Value, conf.Target.Present = firewall.AccessRuleNewParamsConfigurationTarget(accessTarget(add.IP)), true
			conf.Value.Value, conf.Value.Present = add.IP, true
			q.Configuration.Value, q.Configuration.Present = conf, true
			q.Notes.Value, q.Notes.Present = add.Comment, true
			res, err := c.access.New(ctx, q)
			if err != nil {
				c.acc.doubt = true
				return sum, apiError("add IP access rule for "+add.IP, err)
			}
			if res.ID == "" {
				c.acc.doubt = true
				return sum, fmt.Errorf("add IP access rule for %s: the answer has no rule id", add.IP)
			}
			c.acc.byValue[add.IP] = accessRule{id: res.ID, mode: a.String()}
			sum.Adds++
		}
	}
	sum.Items = len(c.acc.byValue)
	sum.ByList = map[string]int{"access_rules": sum.Items}
	return sum, nil
}

func (c *Client) deleteAccess(ctx context.Context, id string) error {
	var q firewall.AccessRuleDeleteParams
	q.AccountID.Value, q.AccountID.Present = c.cfg.AccountID, true
	if _, err := c.access.Delete(ctx, id, q); err != nil {
		var ae *firewall.Error
		if errors.As(err, &ae) && ae.StatusCode == 404 {
			return nil // already gone
		}
		return apiError("delete IP access rule "+id, err)
	}
	return nil
}

// removeAccess deletes every IP Access Rule the enforcer made.
func (c *Client) removeAccess(ctx context.Context) (Removal, error) {
	var out Removal
	if err := c.readAccess(ctx); err != nil {
		return out, err
	}
	ids := slices.Clone(c.acc.strays)
	for _, r := range c.acc.byValue {
		ids = append(ids, r.id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := c.deleteAccess(ctx, id); err != nil {
			c.acc.doubt = true
			return out, err
		}
		out.AccessRules++
	}
	c.acc = &accessRules{byValue: map[string]accessRule{}}
	c.accReadAt = c.now()
	return out, nil
}

// Package cffake is a local fake of the parts of Cloudflare's v4 API the
// Cloudflare enforcer uses, written from Cloudflare's documented request
// and response shapes: the envelope (success, errors, messages, result,
// result_info), account IP lists, list items with cursor pagination,
// asynchronous bulk operations with status polling and one pending
// operation per account, and zone ruleset phase entrypoints with their
// rules endpoints. It counts calls per method and route and injects
// faults: 429 with Retry-After, 5xx, slow operations, an item limit, a bad
// token, missing accounts and foreign edits.
package cffake

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is the fake API. Its URL is the API root (like
// https://api.cloudflare.com/client/v4).
type Server struct {
	// URL is the API root.
	URL string
	srv *httptest.Server

	mu       sync.Mutex
	token    string
	accounts map[string]*account
	zones    map[string]*zone
	calls    map[string]int
	faults   []*Fault
	latency  time.Duration
	opPolls  int
	nextID   int
}

type account struct {
	lists     map[string]*list // by id
	ops       map[string]*bulkOp
	pending   string // id of the pending operation
	itemLimit int
	access    []*accessRule
}

type accessRule struct {
	ID            string            `json:"id"`
	Mode          string            `json:"mode"`
	AllowedModes  []string          `json:"allowed_modes"`
	Configuration accessRuleConfig  `json:"configuration"`
	Notes         string            `json:"notes"`
	CreatedOn     string            `json:"created_on"`
	ModifiedOn    string            `json:"modified_on"`
	Scope         map[string]string `json:"scope"`
}

type accessRuleConfig struct {
	Target string `json:"target"`
	Value  string `json:"value"`
}

type list struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Description string `json:"description"`
	CreatedOn   string `json:"created_on"`
	ModifiedOn  string `json:"modified_on"`
	items       []*item
}

type item struct {
	ID         string `json:"id"`
	IP         string `json:"ip"`
	Comment    string `json:"comment,omitempty"`
	CreatedOn  string `json:"created_on"`
	ModifiedOn string `json:"modified_on"`
}

type bulkOp struct {
	id     string
	polls  int // polls left before it runs
	status string
	err    string
	apply  func() error
	done   string
}

type zone struct {
	account string
	ruleset *ruleset // nil: no entrypoint yet
}

type ruleset struct {
	id      string
	version int
	rules   []json.RawMessage // stored as received plus id, version, last_updated
}

// Fault is an error answer injected for the next Count matching requests.
type Fault struct {
	// Method and PathContains select requests; empty matches all.
	Method       string
	PathContains string
	// Status is the HTTP status; Code and Message the API error.
	Status     int
	Code       int
	Message    string
	RetryAfter string
	// Count is how many requests get the fault.
	Count int
}

// New starts a fake that accepts token and knows the given account and
// zones (which belong to it). Close it when done.
func New(token, accountID string, zoneIDs ...string) *Server {
	s := &Server{
		token:    token,
		accounts: map[string]*account{},
		zones:    map[string]*zone{},
		calls:    map[string]int{},
	}
	s.AddAccount(accountID, zoneIDs...)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL + "/client/v4"
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// AddAccount adds an account (item limit 10,000) with its zones.
func (s *Server) AddAccount(id string, zoneIDs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts[id] = &account{lists: map[string]*list{}, ops: map[string]*bulkOp{}, itemLimit: 10000}
	for _, z := range zoneIDs {
		s.zones[z] = &zone{account: id}
	}
}

// SetItemLimit sets the account's list-item limit.
func (s *Server) SetItemLimit(accountID string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts[accountID].itemLimit = n
}

// SetLatency delays every answer by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetOpPolls makes every bulk operation answer pending (then running) to
// its first n polls before it runs.
func (s *Server) SetOpPolls(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opPolls = n
}

// Inject queues a fault.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// Calls returns the number of requests per "METHOD route", e.g.
// "POST /accounts/{account_id}/rules/lists/{list_id}/items".
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// Writes returns the number of requests other than GET.
func (s *Server) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.calls {
		if !strings.HasPrefix(k, "GET ") {
			n += v
		}
	}
	return n
}

// ResetCalls zeroes the call counts.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.calls)
}

// AccessRules returns an account's IP Access Rules as "value mode notes"
// lines, sorted.
func (s *Server) AccessRules(accountID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.accounts[accountID].access {
		out = append(out, r.Configuration.Value+" "+r.Mode+" "+r.Notes)
	}
	slices.Sort(out)
	return out
}

// AddAccessRule adds an IP Access Rule directly, as the operator would.
func (s *Server) AddAccessRule(accountID, target, value, mode, notes string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[accountID]
	a.access = append(a.access, s.newAccessRule(target, value, mode, notes))
}

func (s *Server) newAccessRule(target, value, mode, notes string) *accessRule {
	return &accessRule{ID: s.id(), Mode: mode, Configuration: accessRuleConfig{Target: target, Value: value}, Notes: notes,
		AllowedModes: []string{"block", "challenge", "whitelist", "js_challenge", "managed_challenge"},
		CreatedOn:    stamp(), ModifiedOn: stamp(), Scope: map[string]string{"type": "account"}}
}

// Items returns the ip strings of the named list of an account, sorted;
// nil when there is no such list.
func (s *Server) Items(accountID, name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.listByName(accountID, name)
	if l == nil {
		return nil
	}
	out := make([]string, 0, len(l.items))
	for _, it := range l.items {
		out = append(out, it.IP)
	}
	slices.Sort(out)
	return out
}

// Comment returns the comment of an item of a named list.
func (s *Server) Comment(accountID, name, ip string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listByName(accountID, name); l != nil {
		for _, it := range l.items {
			if it.IP == ip {
				return it.Comment
			}
		}
	}
	return ""
}

// Edit changes a list as someone else would (the dashboard, another
// tool): it adds and removes ip strings directly.
func (s *Server) Edit(accountID, name string, add, remove []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.listByName(accountID, name)
	if l == nil {
		panic("cffake: Edit of missing list " + name)
	}
	l.items = slices.DeleteFunc(l.items, func(it *item) bool { return slices.Contains(remove, it.IP) })
	for _, ip := range add {
		l.items = append(l.items, &item{ID: s.id(), IP: ip, Comment: "edited by hand", CreatedOn: stamp(), ModifiedOn: stamp()})
	}
	l.ModifiedOn = stamp()
}

// CreateList creates a list directly, as the operator would.
func (s *Server) CreateList(accountID, name, kind string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &list{ID: s.id(), Name: name, Kind: kind, CreatedOn: stamp(), ModifiedOn: stamp()}
	for _, ip := range ips {
		l.items = append(l.items, &item{ID: s.id(), IP: ip, CreatedOn: stamp(), ModifiedOn: stamp()})
	}
	s.accounts[accountID].lists[l.ID] = l
}

// SetRules installs a zone's custom-rules entrypoint with the given
// rules (JSON objects), as the operator would. Each rule is stored byte
// for byte and answered that way.
func (s *Server) SetRules(zoneID string, rules ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := &ruleset{id: s.id(), version: 1}
	for _, r := range rules {
		rs.rules = append(rs.rules, json.RawMessage(r))
	}
	s.zones[zoneID].ruleset = rs
}

// Rules returns the stored rules of a zone's entrypoint (nil when there
// is none).
func (s *Server) Rules(zoneID string) []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.zones[zoneID].ruleset
	if rs == nil {
		return nil
	}
	return slices.Clone(rs.rules)
}

func (s *Server) listByName(accountID, name string) *list {
	a := s.accounts[accountID]
	if a == nil {
		return nil
	}
	for _, l := range a.lists {
		if l.Name == name {
			return l
		}
	}
	return nil
}

func (s *Server) id() string {
	s.nextID++
	return fmt.Sprintf("%032x", s.nextID)
}

func stamp() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// envelope is Cloudflare's response envelope.
type envelope struct {
	Success    bool        `json:"success"`
	Errors     []apiErr    `json:"errors"`
	Messages   []apiErr    `json:"messages"`
	Result     any         `json:"result"`
	ResultInfo *resultInfo `json:"result_info,omitempty"`
	// PageInfo is result_info for page-numbered lists.
	PageInfo *pageInfo `json:"-"`
}

// MarshalJSON writes PageInfo as result_info when it is set.
func (e envelope) MarshalJSON() ([]byte, error) {
	type plain envelope
	if e.PageInfo == nil {
		return json.Marshal(plain(e))
	}
	return json.Marshal(struct {
		plain
		ResultInfo *pageInfo `json:"result_info"`
	}{plain(e), e.PageInfo})
}

type apiErr struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type resultInfo struct {
	Cursors *cursors `json:"cursors,omitempty"`
	Count   int      `json:"count"`
	PerPage int      `json:"per_page,omitempty"`
}

type cursors struct {
	After  string `json:"after,omitempty"`
	Before string `json:"before,omitempty"`
}

// httpError is an error answer.
type httpError struct {
	status  int
	code    int
	message string
}

func (e *httpError) Error() string { return e.message }

func fail(status, code int, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

type route struct {
	method  string
	pattern *regexp.Regexp
	name    string
	handle  func(s *Server, m []string, r *http.Request, body []byte) (any, *resultInfo, *httpError)
}

const idRE = `([A-Za-z0-9_-]+)`

var routes = []route{
	{"GET", regexp.MustCompile(`^/accounts/` + idRE + `/rules/lists$`), "GET /accounts/{account_id}/rules/lists", (*Server).listLists},
	{"POST", regexp.MustCompile(`^/accounts/` + idRE + `/rules/lists$`), "POST /accounts/{account_id}/rules/lists", (*Server).createList},
	{"GET", regexp.MustCompile(`^/accounts/` + idRE + `/rules/lists/bulk_operations/` + idRE + `$`), "GET /accounts/{account_id}/rules/lists/bulk_operations/{operation_id}", (*Server).getOp},
	{"DELETE", regexp.MustCompile(`^/accounts/` + idRE + `/rules/lists/` + idRE + `$`), "DELETE /accounts/{account_id}/rules/lists/{list_id}", (*Server).deleteList},
	{"GET", regexp.MustCompile(`^/accounts/` + idRE + `/rules/lists/` + idRE + `/items$`), "GET /accounts/{account_id}/rules/lists/{list_id}/items", (*Server).listItems},
	{"POST", regexp.MustCompile(`^/accounts/` + idRE + `/rules/lists/` + idRE + `/items$`), "POST /accounts/{account_id}/rules/lists/{list_id}/items", (*Server).addItems},
	{"DELETE", regexp.MustCompile(`^/accounts/` + idRE + `/rules/lists/` + idRE + `/items$`), "DELETE /accounts/{account_id}/rules/lists/{list_id}/items", (*Server).deleteItems},
	{"GET", regexp.MustCompile(`^/accounts/` + idRE + `/firewall/access_rules/rules$`), "GET /accounts/{account_id}/firewall/access_rules/rules", (*Server).listAccess},
	{"POST", regexp.MustCompile(`^/accounts/` + idRE + `/firewall/access_rules/rules$`), "POST /accounts/{account_id}/firewall/access_rules/rules", (*Server).addAccess},
	{"DELETE", regexp.MustCompile(`^/accounts/` + idRE + `/firewall/access_rules/rules/` + idRE + `$`), "DELETE /accounts/{account_id}/firewall/access_rules/rules/{rule_id}", (*Server).deleteAccess},
	{"GET", regexp.MustCompile(`^/zones/` + idRE + `/rulesets/phases/` + idRE + `/entrypoint$`), "GET /zones/{zone_id}/rulesets/phases/{phase}/entrypoint", (*Server).getEntrypoint},
	{"PUT", regexp.MustCompile(`^/zones/` + idRE + `/rulesets/phases/` + idRE + `/entrypoint$`), "PUT /zones/{zone_id}/rulesets/phases/{phase}/entrypoint", (*Server).putEntrypoint},
	{"POST", regexp.MustCompile(`^/zones/` + idRE + `/rulesets/` + idRE + `/rules$`), "POST /zones/{zone_id}/rulesets/{ruleset_id}/rules", (*Server).addRule},
	{"PATCH", regexp.MustCompile(`^/zones/` + idRE + `/rulesets/` + idRE + `/rules/` + idRE + `$`), "PATCH /zones/{zone_id}/rulesets/{ruleset_id}/rules/{rule_id}", (*Server).editRule},
	{"DELETE", regexp.MustCompile(`^/zones/` + idRE + `/rulesets/` + idRE + `/rules/` + idRE + `$`), "DELETE /zones/{zone_id}/rulesets/{ruleset_id}/rules/{rule_id}", (*Server).deleteRule},
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		write(w, nil, nil, fail(http.StatusBadRequest, 6007, "malformed request body"))
		return
	}
	s.mu.Lock()
	latency := s.latency
	s.mu.Unlock()
	if latency > 0 {
		time.Sleep(latency)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	path := strings.TrimPrefix(r.URL.Path, "/client/v4")
	var rt *route
	var m []string
	for i := range routes {
		if routes[i].method == r.Method {
			if m = routes[i].pattern.FindStringSubmatch(path); m != nil {
				rt = &routes[i]
				break
			}
		}
	}
	name := r.Method + " " + path
	if rt != nil {
		name = rt.name
	}
	s.calls[name]++
	if f := s.takeFault(r.Method, path); f != nil {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		write(w, nil, nil, fail(f.Status, f.Code, "%s", f.Message))
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		write(w, nil, nil, fail(http.StatusForbidden, 10000, "Authentication error"))
		return
	}
	if rt == nil {
		write(w, nil, nil, fail(http.StatusNotFound, 7003, "Could not route to %s, perhaps your object identifier is invalid?", path))
		return
	}
	res, info, herr := rt.handle(s, m, r, body)
	write(w, res, info, herr)
}

func (s *Server) takeFault(method, path string) *Fault {
	for i, f := range s.faults {
		if (f.Method == "" || f.Method == method) && strings.Contains(path, f.PathContains) {
			f.Count--
			if f.Count <= 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
			return f
		}
	}
	return nil
}

func write(w http.ResponseWriter, res any, info *resultInfo, herr *httpError) {
	env := envelope{Success: herr == nil, Errors: []apiErr{}, Messages: []apiErr{}, Result: res, ResultInfo: info}
	if pr, ok := res.(pagedResult); ok {
		env.Result, env.PageInfo = pr.items, &pr.info
	}
	status := http.StatusOK
	if herr != nil {
		status = herr.status
		env.Errors = []apiErr{{Code: herr.code, Message: herr.message}}
		env.Result = nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(env)
}

func (s *Server) account(id string) (*account, *httpError) {
	a := s.accounts[id]
	if a == nil {
		return nil, fail(http.StatusNotFound, 7003, "Could not route to /accounts/%s/rules/lists, perhaps your object identifier is invalid?", id)
	}
	return a, nil
}

func (s *Server) list(accountID, listID string) (*account, *list, *httpError) {
	a, herr := s.account(accountID)
	if herr != nil {
		return nil, nil, herr
	}
	l := a.lists[listID]
	if l == nil {
		return nil, nil, fail(http.StatusNotFound, 10006, "filter list not found")
	}
	return a, l, nil
}

type listView struct {
	*list
	NumItems              int `json:"num_items"`
	NumReferencingFilters int `json:"num_referencing_filters"`
}

func (s *Server) listLists(m []string, _ *http.Request, _ []byte) (any, *resultInfo, *httpError) {
	a, herr := s.account(m[1])
	if herr != nil {
		return nil, nil, herr
	}
	out := []listView{}
	for _, id := range slices.Sorted(maps.Keys(a.lists)) {
		l := a.lists[id]
		out = append(out, listView{list: l, NumItems: len(l.items)})
	}
	return out, nil, nil
}

var listNameRE = regexp.MustCompile(`^[a-z0-9_]{1,50}$`)

func (s *Server) createList(m []string, _ *http.Request, body []byte) (any, *resultInfo, *httpError) {
	a, herr := s.account(m[1])
	if herr != nil {
		return nil, nil, herr
	}
	var req struct {
		Name        string `json:"name"`
		Kind        string `json:"kind"`
		Description string `json:"description"`
	}
	if err := strictJSON(body, &req); err != nil {
		return nil, nil, fail(http.StatusBadRequest, 10026, "filter list payload is invalid: %v", err)
	}
	if !listNameRE.MatchString(req.Name) {
		return nil, nil, fail(http.StatusBadRequest, 10014, "invalid list name %q", req.Name)
	}
	if !slices.Contains([]string{"ip", "redirect", "hostname", "asn"}, req.Kind) {
		return nil, nil, fail(http.StatusBadRequest, 10015, "invalid list kind %q", req.Kind)
	}
	for _, l := range a.lists {
		if l.Name == req.Name {
			return nil, nil, fail(http.StatusConflict, 10016, "a list named %q already exists", req.Name)
		}
	}
	l := &list{ID: s.id(), Name: req.Name, Kind: req.Kind, Description: req.Description, CreatedOn: stamp(), ModifiedOn: stamp()}
	a.lists[l.ID] = l
	return listView{list: l}, nil, nil
}

func (s *Server) deleteList(m []string, _ *http.Request, _ []byte) (any, *resultInfo, *httpError) {
	a, l, herr := s.list(m[1], m[2])
	if herr != nil {
		return nil, nil, herr
	}
	for zid, z := range s.zones {
		if z.account != m[1] || z.ruleset == nil {
			continue
		}
		for _, raw := range z.ruleset.rules {
			var rb ruleBody
			if json.Unmarshal(raw, &rb) == nil && slices.ContainsFunc(listRefRE.FindAllStringSubmatch(rb.Expression, -1), func(ref []string) bool { return ref[1] == l.Name }) {
				return nil, nil, fail(http.StatusConflict, 10017, "list %s is referenced by a rule in zone %s", l.Name, zid)
			}
		}
	}
	delete(a.lists, m[2])
	return map[string]string{"id": m[2]}, nil, nil
}

func (s *Server) listItems(m []string, r *http.Request, _ []byte) (any, *resultInfo, *httpError) {
	_, l, herr := s.list(m[1], m[2])
	if herr != nil {
		return nil, nil, herr
	}
	perPage := 25
	if v := r.URL.Query().Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return nil, nil, fail(http.StatusBadRequest, 10024, "per_page must be between 1 and 500")
		}
		perPage = n
	}
	start := 0
	if c := r.URL.Query().Get("cursor"); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		n, aerr := strconv.Atoi(string(b))
		if err != nil || aerr != nil || n < 0 || n > len(l.items) {
			return nil, nil, fail(http.StatusBadRequest, 10025, "invalid cursor")
		}
		start = n
	}
	end := min(start+perPage, len(l.items))
	page := slices.Clone(l.items[start:end])
	info := &resultInfo{Count: len(page), PerPage: perPage, Cursors: &cursors{}}
	if end < len(l.items) {
		info.Cursors.After = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(end)))
	}
	if start > 0 {
		info.Cursors.Before = base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(start)))
	}
	return page, info, nil
}

// validIP applies Cloudflare's list rules: IPv4 addresses and /8../32,
// IPv6 /12../64, canonical form.
func validIP(s string) error {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() || a.String() != s {
			return fmt.Errorf("%q is not an IPv4 address or a CIDR in canonical form", s)
		}
		return nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Masked() != p || p.String() != s {
		return fmt.Errorf("%q is not a canonical CIDR", s)
	}
	if p.Addr().Is4() && (p.Bits() < 8 || p.Bits() == 32) {
		return fmt.Errorf("%q: IPv4 CIDRs must be /8 to /31; give a /32 as an address", s)
	}
	if p.Addr().Is6() && (p.Bits() < 12 || p.Bits() > 64) {
		return fmt.Errorf("%q: IPv6 CIDRs must be /12 to /64", s)
	}
	return nil
}

func (s *Server) newOp(a *account, apply func() error) (any, *resultInfo, *httpError) {
	if a.pending != "" {
		return nil, nil, fail(http.StatusConflict, 10027, "there is a pending bulk operation (%s); wait for it to finish", a.pending)
	}
	op := &bulkOp{id: s.id(), polls: s.opPolls, status: "pending", apply: apply}
	a.ops[op.id] = op
	a.pending = op.id
	return map[string]string{"operation_id": op.id}, nil, nil
}

func (s *Server) addItems(m []string, _ *http.Request, body []byte) (any, *resultInfo, *httpError) {
	a, l, herr := s.list(m[1], m[2])
	if herr != nil {
		return nil, nil, herr
	}
	var req []struct {
		IP      string `json:"ip"`
		Comment string `json:"comment"`
	}
	if err := strictJSON(body, &req); err != nil {
		return nil, nil, fail(http.StatusBadRequest, 10026, "list items payload is invalid: %v", err)
	}
	for i, it := range req {
		if err := validIP(it.IP); err != nil {
			return nil, nil, fail(http.StatusBadRequest, 10021, "items[%d]: %v", i, err)
		}
		if len(it.Comment) > 500 {
			return nil, nil, fail(http.StatusBadRequest, 10021, "items[%d]: comment longer than 500", i)
		}
	}
	return s.newOp(a, func() error {
		have := map[string]*item{}
		for _, x := range l.items {
			have[x.IP] = x
		}
		var fresh []*item
		for _, it := range req {
			if x := have[it.IP]; x != nil {
				continue
			}
			x := &item{ID: s.id(), IP: it.IP, Comment: it.Comment, CreatedOn: stamp(), ModifiedOn: stamp()}
			have[it.IP] = x
			fresh = append(fresh, x)
		}
		total := 0
		for _, x := range a.lists {
			total += len(x.items)
		}
		if total+len(fresh) > a.itemLimit {
			return fmt.Errorf("adding %d items would exceed the account's limit of %d list items (%d in use)", len(fresh), a.itemLimit, total)
		}
		// An address already listed gets the new comment.
		for _, it := range req {
			if x := have[it.IP]; x.Comment != it.Comment {
				x.Comment, x.ModifiedOn = it.Comment, stamp()
			}
		}
		l.items = append(l.items, fresh...)
		l.ModifiedOn = stamp()
		return nil
	})
}

func (s *Server) deleteItems(m []string, _ *http.Request, body []byte) (any, *resultInfo, *httpError) {
	a, l, herr := s.list(m[1], m[2])
	if herr != nil {
		return nil, nil, herr
	}
	var req struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	if err := strictJSON(body, &req); err != nil {
		return nil, nil, fail(http.StatusBadRequest, 10026, "list items payload is invalid: %v", err)
	}
	if len(req.Items) == 0 {
		return nil, nil, fail(http.StatusBadRequest, 10026, "items: none given")
	}
	return s.newOp(a, func() error {
		gone := map[string]bool{}
		for _, it := range req.Items {
			gone[it.ID] = true
		}
		l.items = slices.DeleteFunc(l.items, func(x *item) bool { return gone[x.ID] })
		l.ModifiedOn = stamp()
		return nil
	})
}

func (s *Server) getOp(m []string, _ *http.Request, _ []byte) (any, *resultInfo, *httpError) {
	a, herr := s.account(m[1])
	if herr != nil {
		return nil, nil, herr
	}
	op := a.ops[m[2]]
	if op == nil {
		return nil, nil, fail(http.StatusNotFound, 10028, "bulk operation %s not found", m[2])
	}
	status := op.status
	if op.status == "pending" || op.status == "running" {
		if op.polls > 0 {
			// Answers pending to the first poll, running to the next.
			op.polls--
			op.status = "running"
		} else {
			if err := op.apply(); err != nil {
				op.status, op.err = "failed", err.Error()
			} else {
				op.status = "completed"
			}
			op.done = stamp()
			a.pending = ""
			status = op.status
		}
	}
	res := map[string]string{"id": op.id, "status": status}
	if op.done != "" {
		res["completed"] = op.done
	}
	if op.err != "" {
		res["error"] = op.err
	}
	return res, nil, nil
}

// pageInfo is the result_info of page-numbered lists.
type pageInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

func (s *Server) listAccess(m []string, r *http.Request, _ []byte) (any, *resultInfo, *httpError) {
	a, herr := s.account(m[1])
	if herr != nil {
		return nil, nil, herr
	}
	q := r.URL.Query()
	page, perPage := 1, 20
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, nil, fail(http.StatusBadRequest, 10001, "page must be a positive integer")
		}
		page = n
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 || n > 1000 {
			return nil, nil, fail(http.StatusBadRequest, 10001, "per_page must be between 5 and 1000")
		}
		perPage = n
	}
	var match []*accessRule
	for _, x := range a.access {
		if strings.Contains(x.Notes, q.Get("notes")) {
			match = append(match, x)
		}
	}
	start := min((page-1)*perPage, len(match))
	end := min(start+perPage, len(match))
	out := slices.Clone(match[start:end])
	if out == nil {
		out = []*accessRule{}
	}
	// The envelope's result_info has another shape here; it is carried
	// in the result's wrapper below.
	return pagedResult{items: out, info: pageInfo{Page: page, PerPage: perPage, Count: len(out), TotalCount: len(match), TotalPages: (len(match) + perPage - 1) / perPage}}, nil, nil
}

// pagedResult is a result with page-numbered result_info.
type pagedResult struct {
	items any
	info  pageInfo
}

var v4Ranges, v6Ranges = []int{16, 24}, []int{32, 48, 64}

func (s *Server) addAccess(m []string, _ *http.Request, body []byte) (any, *resultInfo, *httpError) {
	a, herr := s.account(m[1])
	if herr != nil {
		return nil, nil, herr
	}
	var req struct {
		Mode          string           `json:"mode"`
		Configuration accessRuleConfig `json:"configuration"`
		Notes         string           `json:"notes"`
	}
	if err := strictJSON(body, &req); err != nil {
		return nil, nil, fail(http.StatusBadRequest, 10001, "access rule payload is invalid: %v", err)
	}
	if !slices.Contains([]string{"block", "challenge", "whitelist", "js_challenge", "managed_challenge"}, req.Mode) {
		return nil, nil, fail(http.StatusBadRequest, 10001, "invalid mode %q", req.Mode)
	}
	v := req.Configuration.Value
	ok := false
	switch req.Configuration.Target {
	case "ip":
		ad, err := netip.ParseAddr(v)
		ok = err == nil && ad.Is4() && ad.String() == v
	case "ip6":
		ad, err := netip.ParseAddr(v)
		ok = err == nil && ad.Is6() && !ad.Is4In6() && ad.String() == v
	case "ip_range":
		p, err := netip.ParsePrefix(v)
		ok = err == nil && p.Masked() == p && p.String() == v &&
			((p.Addr().Is4() && slices.Contains(v4Ranges, p.Bits())) || (p.Addr().Is6() && slices.Contains(v6Ranges, p.Bits())))
	}
	if !ok {
		return nil, nil, fail(http.StatusBadRequest, 10001, "invalid %s configuration value %q", req.Configuration.Target, v)
	}
	for _, x := range a.access {
		if x.Configuration.Value == v {
			return nil, nil, fail(http.StatusBadRequest, 10009, "firewallaccessrules.api.duplicate_of_existing")
		}
	}
	x := s.newAccessRule(req.Configuration.Target, v, req.Mode, req.Notes)
	a.access = append(a.access, x)
	return x, nil, nil
}

func (s *Server) deleteAccess(m []string, _ *http.Request, _ []byte) (any, *resultInfo, *httpError) {
	a, herr := s.account(m[1])
	if herr != nil {
		return nil, nil, herr
	}
	i := slices.IndexFunc(a.access, func(x *accessRule) bool { return x.ID == m[2] })
	if i < 0 {
		return nil, nil, fail(http.StatusNotFound, 10001, "access rule %s not found", m[2])
	}
	a.access = slices.Delete(a.access, i, i+1)
	return map[string]string{"id": m[2]}, nil, nil
}

const phase = "http_request_firewall_custom"

func (s *Server) zone(id, ph string) (*zone, *httpError) {
	z := s.zones[id]
	if z == nil {
		return nil, fail(http.StatusNotFound, 7003, "Could not route to /zones/%s/rulesets, perhaps your object identifier is invalid?", id)
	}
	if ph != "" && ph != phase {
		return nil, fail(http.StatusBadRequest, 20001, "the fake only knows the %s phase", phase)
	}
	return z, nil
}

func (s *Server) rulesetView(rs *ruleset) any {
	return map[string]any{
		"id":           rs.id,
		"name":         "default",
		"kind":         "zone",
		"phase":        phase,
		"version":      strconv.Itoa(rs.version),
		"last_updated": stamp(),
		"rules":        rs.rules,
	}
}

func (s *Server) getEntrypoint(m []string, _ *http.Request, _ []byte) (any, *resultInfo, *httpError) {
	z, herr := s.zone(m[1], m[2])
	if herr != nil {
		return nil, nil, herr
	}
	if z.ruleset == nil {
		return nil, nil, fail(http.StatusNotFound, 10003, "could not find entrypoint ruleset in the %s phase", phase)
	}
	return s.rulesetView(z.ruleset), nil, nil
}

// ruleBody is what the fake checks in a rule it is sent.
type ruleBody struct {
	ID         string `json:"id"`
	Action     string `json:"action"`
	Expression string `json:"expression"`
	Ref        string `json:"ref"`
}

var listRefRE = regexp.MustCompile(`\$([a-z0-9_]+)`)

// checkRule refuses a rule without an action or an expression, or whose
// expression names a list the account does not have.
func (s *Server) checkRule(z *zone, raw json.RawMessage) (ruleBody, *httpError) {
	var rb ruleBody
	if err := json.Unmarshal(raw, &rb); err != nil {
		return rb, fail(http.StatusBadRequest, 20021, "rule is not a JSON object: %v", err)
	}
	if rb.Action == "" || rb.Expression == "" {
		return rb, fail(http.StatusBadRequest, 20021, "rule needs an action and an expression")
	}
	for _, ref := range listRefRE.FindAllStringSubmatch(rb.Expression, -1) {
		if s.listByName(z.account, ref[1]) == nil {
			return rb, fail(http.StatusBadRequest, 20120, "filter parsing error: unknown list $%s", ref[1])
		}
	}
	return rb, nil
}

// stored adds the server-side fields to a rule as sent.
func (s *Server) stored(raw json.RawMessage, id string, version int) json.RawMessage {
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	m["id"] = id
	m["version"] = strconv.Itoa(version)
	m["last_updated"] = stamp()
	if _, ok := m["ref"]; !ok {
		m["ref"] = id
	}
	if _, ok := m["enabled"]; !ok {
		m["enabled"] = true
	}
	out, _ := json.Marshal(m)
	return out
}

func (s *Server) putEntrypoint(m []string, _ *http.Request, body []byte) (any, *resultInfo, *httpError) {
	z, herr := s.zone(m[1], m[2])
	if herr != nil {
		return nil, nil, herr
	}
	var req struct {
		Name        string            `json:"name"`
		Description string            `json:"description"`
		Rules       []json.RawMessage `json:"rules"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, fail(http.StatusBadRequest, 20021, "ruleset payload is invalid: %v", err)
	}
	if z.ruleset == nil {
		z.ruleset = &ruleset{id: s.id()}
	}
	rs := z.ruleset
	rs.version++
	var out []json.RawMessage
	for _, raw := range req.Rules {
		rb, herr := s.checkRule(z, raw)
		if herr != nil {
			return nil, nil, herr
		}
		id := rb.ID
		if id == "" {
			id = s.id()
		}
		out = append(out, s.stored(raw, id, rs.version))
	}
	rs.rules = out
	return s.rulesetView(rs), nil, nil
}

func (s *Server) ruleset(m []string) (*zone, *ruleset, *httpError) {
	z, herr := s.zone(m[1], "")
	if herr != nil {
		return nil, nil, herr
	}
	if z.ruleset == nil || z.ruleset.id != m[2] {
		return nil, nil, fail(http.StatusNotFound, 10003, "ruleset %s not found", m[2])
	}
	return z, z.ruleset, nil
}

func (s *Server) addRule(m []string, _ *http.Request, body []byte) (any, *resultInfo, *httpError) {
	z, rs, herr := s.ruleset(m)
	if herr != nil {
		return nil, nil, herr
	}
	if _, herr := s.checkRule(z, body); herr != nil {
		return nil, nil, herr
	}
	var pos struct {
		Position json.RawMessage `json:"position"`
	}
	_ = json.Unmarshal(body, &pos)
	if len(pos.Position) > 0 && !bytes.Equal(pos.Position, []byte("null")) {
		return nil, nil, fail(http.StatusBadRequest, 20021, "the fake appends only; position is not supported")
	}
	rs.version++
	rs.rules = append(rs.rules, s.stored(body, s.id(), rs.version))
	return s.rulesetView(rs), nil, nil
}

func (s *Server) ruleIndex(rs *ruleset, id string) int {
	return slices.IndexFunc(rs.rules, func(raw json.RawMessage) bool {
		var rb ruleBody
		return json.Unmarshal(raw, &rb) == nil && rb.ID == id
	})
}

func (s *Server) editRule(m []string, _ *http.Request, body []byte) (any, *resultInfo, *httpError) {
	z, rs, herr := s.ruleset(m)
	if herr != nil {
		return nil, nil, herr
	}
	i := s.ruleIndex(rs, m[3])
	if i < 0 {
		return nil, nil, fail(http.StatusNotFound, 10003, "rule %s not found", m[3])
	}
	var old, patch map[string]any
	_ = json.Unmarshal(rs.rules[i], &old)
	if err := json.Unmarshal(body, &patch); err != nil {
		return nil, nil, fail(http.StatusBadRequest, 20021, "rule payload is invalid: %v", err)
	}
	maps.Copy(old, patch)
	merged, _ := json.Marshal(old)
	if _, herr := s.checkRule(z, merged); herr != nil {
		return nil, nil, herr
	}
	rs.version++
	rs.rules[i] = s.stored(merged, m[3], rs.version)
	return s.rulesetView(rs), nil, nil
}

func (s *Server) deleteRule(m []string, _ *http.Request, _ []byte) (any, *resultInfo, *httpError) {
	_, rs, herr := s.ruleset(m)
	if herr != nil {
		return nil, nil, herr
	}
	i := s.ruleIndex(rs, m[3])
	if i < 0 {
		return nil, nil, fail(http.StatusNotFound, 10003, "rule %s not found", m[3])
	}
	rs.version++
	rs.rules = slices.Delete(rs.rules, i, i+1)
	return s.rulesetView(rs), nil, nil
}

// strictJSON decodes body into v, refusing unknown fields and trailing data.
func strictJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data")
	}
	return nil
}

package cffake

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

const (
	tok = "t0k"
	acc = "acc1"
	zon = "zone1"
)

// call sends a request and decodes the envelope.
func call(t *testing.T, s *Server, method, path, body string) (int, map[string]json.RawMessage) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	var env map[string]json.RawMessage
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("%s %s: %s: %v", method, path, b, err)
	}
	for _, k := range []string{"success", "errors", "messages", "result"} {
		if _, ok := env[k]; !ok {
			t.Fatalf("%s %s: envelope lacks %s: %s", method, path, k, b)
		}
	}
	return resp.StatusCode, env
}

func field(t *testing.T, raw json.RawMessage, key string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	v, _ := m[key].(string)
	return v
}

func TestBulkOperationLifecycle(t *testing.T) {
	s := New(tok, acc, zon)
	defer s.Close()
	s.SetOpPolls(2)
	st, env := call(t, s, "POST", "/accounts/acc1/rules/lists", `{"name":"portcullis_ban","kind":"ip"}`)
	if st != 200 {
		t.Fatalf("create list: %d %s", st, env["errors"])
	}
	list := field(t, env["result"], "id")
	st, env = call(t, s, "POST", "/accounts/acc1/rules/lists/"+list+"/items", `[{"ip":"192.0.2.1"},{"ip":"2001:db8::/64"},{"ip":"198.51.100.0/24"}]`)
	if st != 200 {
		t.Fatalf("add: %d %s", st, env["errors"])
	}
	op := field(t, env["result"], "operation_id")
	// One pending operation per account.
	if st, env = call(t, s, "DELETE", "/accounts/acc1/rules/lists/"+list+"/items", `{"items":[{"id":"x"}]}`); st != 409 {
		t.Fatalf("second operation: %d %s", st, env["errors"])
	}
	for _, want := range []string{"pending", "running", "completed", "completed"} {
		_, env = call(t, s, "GET", "/accounts/acc1/rules/lists/bulk_operations/"+op, "")
		if got := field(t, env["result"], "status"); got != want {
			t.Fatalf("status %s, want %s", got, want)
		}
	}
	// Cursor pagination: 3 items, 2 per page.
	_, env = call(t, s, "GET", "/accounts/acc1/rules/lists/"+list+"/items?per_page=2", "")
	var info struct {
		Cursors struct{ After string } `json:"cursors"`
	}
	_ = json.Unmarshal(env["result_info"], &info)
	if info.Cursors.After == "" {
		t.Fatalf("no after cursor: %s", env["result_info"])
	}
	_, env = call(t, s, "GET", "/accounts/acc1/rules/lists/"+list+"/items?per_page=2&cursor="+info.Cursors.After, "")
	var page []map[string]any
	_ = json.Unmarshal(env["result"], &page)
	info.Cursors.After = ""
	_ = json.Unmarshal(env["result_info"], &info)
	if len(page) != 1 || info.Cursors.After != "" {
		t.Fatalf("last page %v, after %q", page, info.Cursors.After)
	}
}

func TestRefusals(t *testing.T) {
	s := New(tok, acc, zon)
	defer s.Close()
	s.CreateList(acc, "portcullis_ban", "ip")
	var list string
	_, env := call(t, s, "GET", "/accounts/acc1/rules/lists", "")
	var lists []map[string]any
	_ = json.Unmarshal(env["result"], &lists)
	list, _ = lists[0]["id"].(string)
	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/accounts/acc1/rules/lists/" + list + "/items", `[{"ip":"192.0.2.1/32"}]`, 400, "10021"},
		{"POST", "/accounts/acc1/rules/lists/" + list + "/items", `[{"ip":"2001:db8::1"}]`, 400, "10021"},
		{"POST", "/accounts/acc1/rules/lists/" + list + "/items", `[{"ip":"10.0.0.0/7"}]`, 400, "10021"},
		{"GET", "/accounts/nope/rules/lists", "", 404, "7003"},
		{"GET", "/zones/zone1/rulesets/phases/http_request_firewall_custom/entrypoint", "", 404, "10003"},
		{"PUT", "/zones/zone1/rulesets/phases/http_request_firewall_custom/entrypoint", `{"rules":[{"action":"block","expression":"ip.src in $nope"}]}`, 400, "20120"},
	}
	for _, tc := range cases {
		st, env := call(t, s, tc.method, tc.path, tc.body)
		if st != tc.status || !strings.Contains(string(env["errors"]), `"code":`+tc.code) || string(env["success"]) != "false" {
			t.Errorf("%s %s %s: %d %s", tc.method, tc.path, tc.body, st, env["errors"])
		}
	}
	req, _ := http.NewRequest("GET", s.URL+"/accounts/acc1/rules/lists", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), `"code":10000`) {
		t.Fatalf("bad token: %d %s", resp.StatusCode, b)
	}
	if got := s.Calls()["GET /accounts/{account_id}/rules/lists"]; got != 3 {
		t.Fatalf("list reads counted %d, want 3", got)
	}
}

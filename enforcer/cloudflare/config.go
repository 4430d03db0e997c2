package cloudflare

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// DefaultAPIBase is the root of Cloudflare's v4 API.
const DefaultAPIBase = "https://api.cloudflare.com/client/v4"

// The names of what the enforcer creates at Cloudflare; the portcullis
// prefix makes ownership detectable.
const (
	DefaultBanList     = "portcullis_ban"
	DefaultCaptchaList = "portcullis_captcha"
)

// The enforcement modes.
const (
	// ModeLists keeps account IP lists and one WAF custom rule per list
	// and zone (the default).
	ModeLists = "lists"
	// ModeAccessRules keeps account-level IP Access Rules, for accounts
	// that cannot use lists. It costs one request per added or removed
	// address, so large changes take the request budget's time.
	ModeAccessRules = "access_rules"
)

// Config configures a Client. Zero values are not defaults: start from
// DefaultConfig.
type Config struct {
	// APIBase is the API root, e.g. https://api.cloudflare.com/client/v4.
	APIBase string `yaml:"api_base"`
	// Mode is ModeLists or ModeAccessRules.
	Mode string `yaml:"mode"`
	// AccountID owns the IP lists.
	AccountID string `yaml:"account_id"`
	// ZoneIDs each get one WAF custom rule per list in their
	// http_request_firewall_custom phase.
	ZoneIDs []string `yaml:"zone_ids"`
	// BanList is the name of the list whose members are blocked.
	BanList string `yaml:"ban_list"`
	// CaptchaList is the name of the list whose members get a managed
	// challenge; empty turns captcha decisions off (they are left out).
	CaptchaList string `yaml:"captcha_list"`
	// ItemLimit is the account's list-item limit, shared by all its lists
	// (Cloudflare's default is 10,000). Items of lists the enforcer does
	// not own count against it too.
	ItemLimit int `yaml:"item_limit"`
	// ScenarioPriority ranks scenarios when the limit forces a choice:
	// after the longest remaining time, a higher priority is kept first.
	// Unlisted scenarios have priority 0.
	ScenarioPriority map[string]int `yaml:"scenario_priority"`
	// BulkChunk is the most items sent in one bulk operation.
	BulkChunk int `yaml:"bulk_chunk"`
	// PageSize is per_page when the list items are read.
	PageSize int `yaml:"page_size"`
	// RequestsPerWindow and Window are the client-side request budget;
	// Cloudflare allows 1,200 per 5 minutes per user, shared with the
	// dashboard and every other tool of the user.
	RequestsPerWindow int           `yaml:"requests_per_window"`
	Window            time.Duration `yaml:"window"`
	// Burst is how many requests may go out back to back.
	Burst int `yaml:"burst"`
	// RateLimitCodes are the API error codes treated like HTTP 429.
	RateLimitCodes []int `yaml:"rate_limit_codes"`
	// MaxRetries bounds the retries of one request on 429, 5xx,
	// rate-limit codes and network errors.
	MaxRetries int `yaml:"max_retries"`
	// RetryMin and RetryMax bound the jittered exponential backoff between
	// retries (a Retry-After header overrides it, capped at Window).
	RetryMin time.Duration `yaml:"retry_min"`
	RetryMax time.Duration `yaml:"retry_max"`
	// PollMin and PollMax bound the backoff while a bulk operation runs.
	PollMin time.Duration `yaml:"poll_min"`
	PollMax time.Duration `yaml:"poll_max"`
	// OpTimeout bounds the wait for one bulk operation.
	OpTimeout time.Duration `yaml:"op_timeout"`
	// ResyncInterval is how often the list items and the zone rules are
	// read again even when nothing suggests a change.
	ResyncInterval time.Duration `yaml:"resync_interval"`
	// RequestTimeout bounds one HTTP request.
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// DefaultConfig returns the defaults; AccountID and ZoneIDs must be set.
func DefaultConfig() Config {
	return Config{
		APIBase:           DefaultAPIBase,
		Mode:              ModeLists,
		BanList:           DefaultBanList,
		CaptchaList:       DefaultCaptchaList,
		ItemLimit:         10000,
		BulkChunk:         5000,
		PageSize:          500,
		RequestsPerWindow: 1000,
		Window:            5 * time.Minute,
		Burst:             50,
		// 971: "Please wait and consider throttling your request speed".
		RateLimitCodes: []int{971},
		MaxRetries:     6,
		RetryMin:       time.Second,
		RetryMax:       time.Minute,
		PollMin:        250 * time.Millisecond,
		PollMax:        5 * time.Second,
		OpTimeout:      5 * time.Minute,
		ResyncInterval: time.Hour,
		RequestTimeout: time.Minute,
	}
}

// Cloudflare list names: lower-case letters, digits and underscores, at
// most 50 characters.
var listName = regexp.MustCompile(`^[a-z0-9_]{1,50}$`)

// Cloudflare account and zone identifiers are 32 hex digits; the check is
// looser (any token of URL-safe characters) so other API servers work.
var identifier = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate checks the configuration without doing any I/O.
func (c *Config) Validate() error {
	u, err := url.Parse(c.APIBase)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("api_base: %q is not an http(s) URL", c.APIBase)
	}
	if c.Mode != ModeLists && c.Mode != ModeAccessRules {
		return fmt.Errorf("mode: %q is neither %s nor %s", c.Mode, ModeLists, ModeAccessRules)
	}
	if c.AccountID == "" {
		return errors.New("account_id: empty")
	}
	if !identifier.MatchString(c.AccountID) {
		return fmt.Errorf("account_id: %q is not an identifier", c.AccountID)
	}
	seen := map[string]bool{}
	for i, z := range c.ZoneIDs {
		if !identifier.MatchString(z) {
			return fmt.Errorf("zone_ids[%d]: %q is not an identifier", i, z)
		}
		if seen[z] {
			return fmt.Errorf("zone_ids[%d]: %q given twice", i, z)
		}
		seen[z] = true
	}
	if !listName.MatchString(c.BanList) {
		return fmt.Errorf("ban_list: %q is not a list name (a-z, 0-9, _; at most 50)", c.BanList)
	}
	if c.CaptchaList != "" && !listName.MatchString(c.CaptchaList) {
		return fmt.Errorf("captcha_list: %q is not a list name (a-z, 0-9, _; at most 50)", c.CaptchaList)
	}
	if c.CaptchaList == c.BanList {
		return fmt.Errorf("captcha_list: %q is also the ban list", c.CaptchaList)
	}
	switch {
	case c.ItemLimit < 1:
		return fmt.Errorf("item_limit: %d is not positive", c.ItemLimit)
	case c.BulkChunk < 1:
		return fmt.Errorf("bulk_chunk: %d is not positive", c.BulkChunk)
	case c.PageSize < 1 || c.PageSize > 500:
		return fmt.Errorf("page_size: %d is outside 1..500", c.PageSize)
	case c.RequestsPerWindow < 1:
		return fmt.Errorf("requests_per_window: %d is not positive", c.RequestsPerWindow)
	case c.Window <= 0:
		return fmt.Errorf("window: %s is not positive", c.Window)
	case c.Burst < 1 || c.Burst > c.RequestsPerWindow:
		return fmt.Errorf("burst: %d is outside 1..requests_per_window", c.Burst)
	case c.MaxRetries < 0:
		return fmt.Errorf("max_retries: %d is negative", c.MaxRetries)
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("retry_min/retry_max: %s/%s is not 0 < min <= max", c.RetryMin, c.RetryMax)
	case c.PollMin <= 0 || c.PollMax < c.PollMin:
		return fmt.Errorf("poll_min/poll_max: %s/%s is not 0 < min <= max", c.PollMin, c.PollMax)
	case c.OpTimeout <= 0:
		return fmt.Errorf("op_timeout: %s is not positive", c.OpTimeout)
	case c.ResyncInterval <= 0:
		return fmt.Errorf("resync_interval: %s is not positive", c.ResyncInterval)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("request_timeout: %s is not positive", c.RequestTimeout)
	}
	return nil
}

package cloudflare

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/cloudflare-go/v7/option"
)

// bucket is a token bucket: rate tokens per second, at most burst saved.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(perWindow int, window time.Duration, burst int) *bucket {
	return &bucket{
		rate:   float64(perWindow) / window.Seconds(),
		burst:  float64(burst),
		tokens: float64(burst),
		last:   time.Now(),
	}
}

// wait takes one token, sleeping until there is one or ctx ends.
func (b *bucket) wait(ctx context.Context) error {
	b.mu.Lock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens--
	var delay time.Duration
	if b.tokens < 0 {
		delay = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	b.mu.Unlock()
	if delay == 0 {
		return nil
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		b.tokens++ // the request is not sent: give the token back
		b.mu.Unlock()
		return ctx.Err()
	}
}

// Stats are the counters of a Client's HTTP traffic.
type Stats struct {
	// Calls counts the HTTP requests sent, retries included.
	Calls uint64
	// Writes counts the requests other than GET among them.
	Writes uint64
	// Retries counts the requests sent again after a 429, a 5xx, a
	// rate-limit error code or a network error.
	Retries uint64
	// RateLimited counts the answers that were 429 or carried a
	// rate-limit error code.
	RateLimited uint64
	// Errors counts the answers with a status of 400 or more and the
	// requests that got no answer.
	Errors uint64
}

// transport is the SDK middleware that spends the request budget, counts
// calls and retries what Cloudflare asks to be retried. The SDK's own
// retries are turned off so every retry passes through the budget.
type transport struct {
	bucket     *bucket
	codes      []int
	maxRetries int
	retryMin   time.Duration
	retryMax   time.Duration
	window     time.Duration

	calls, writes, retries, limited, errors atomic.Uint64
}

func newTransport(c *Config) *transport {
	return &transport{
		bucket:     newBucket(c.RequestsPerWindow, c.Window, c.Burst),
		codes:      slices.Clone(c.RateLimitCodes),
		maxRetries: c.MaxRetries,
		retryMin:   c.RetryMin,
		retryMax:   c.RetryMax,
		window:     c.Window,
	}
}

func (t *transport) stats() Stats {
	return Stats{
		Calls:       t.calls.Load(),
		Writes:      t.writes.Load(),
		Retries:     t.retries.Load(),
		RateLimited: t.limited.Load(),
		Errors:      t.errors.Load(),
	}
}

// middleware is an option.Middleware.
func (t *transport) middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		if err := t.bucket.wait(ctx); err != nil {
			return nil, fmt.Errorf("wait for the request budget: %w", err)
		}
		if attempt > 0 {
			t.retries.Add(1)
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					return nil, fmt.Errorf("rewind request body: %w", err)
				}
				req.Body = body
			}
		}
		t.calls.Add(1)
		if req.Method != http.MethodGet {
			t.writes.Add(1)
		}
		resp, err := next(req)
		if err != nil {
			t.errors.Add(1)
			if ctx.Err() != nil || attempt >= t.maxRetries || (req.Body != nil && req.GetBody == nil) {
				return nil, err
			}
			if err := sleep(ctx, t.backoff(attempt)); err != nil {
				return nil, err
			}
			continue
		}
		if resp.StatusCode >= 400 {
			t.errors.Add(1)
		}
		retry, delay := t.classify(resp, attempt)
		if !retry || attempt >= t.maxRetries || (req.Body != nil && req.GetBody == nil) {
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if err := sleep(ctx, delay); err != nil {
			return nil, err
		}
	}
}

// classify says whether resp asks for a retry, and after how long.
func (t *transport) classify(resp *http.Response, attempt int) (bool, time.Duration) {
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		t.limited.Add(1)
		if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
			return true, min(d, t.window) + jitter(t.retryMin)
		}
		return true, t.backoff(attempt)
	case resp.StatusCode >= 500:
		return true, t.backoff(attempt)
	case resp.StatusCode >= 400 && len(t.codes) > 0:
		// The body is read to find the error codes and put back for the SDK.
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if err != nil {
			return false, 0
		}
		var env struct {
			Errors []struct {
				Code int `json:"code"`
			} `json:"errors"`
		}
		if json.Unmarshal(body, &env) != nil {
			return false, 0
		}
		for _, e := range env.Errors {
			if slices.Contains(t.codes, e.Code) {
				t.limited.Add(1)
				if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
					return true, min(d, t.window) + jitter(t.retryMin)
				}
				return true, t.backoff(attempt)
			}
		}
	}
	return false, 0
}

// backoff is the exponential backoff for an attempt, with full jitter
// over its upper half.
func (t *transport) backoff(attempt int) time.Duration {
	d := t.retryMin << min(attempt, 20)
	if d > t.retryMax || d <= 0 {
		d = t.retryMax
	}
	return d/2 + jitter(d/2)
}

// jitter is a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// retryAfter parses a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

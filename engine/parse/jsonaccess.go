package parse

import (
	"encoding/json"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// Traefik's and Caddy's JSON access logs are decoded with encoding/json
// (a few allocations per line, unlike the hand-written text parsers).

// traefikLine holds the fields of a Traefik JSON access log line that an
// event uses (Traefik's documented access-log fields); others are ignored.
type traefikLine struct {
	ClientHost            string `json:"ClientHost"`
	ClientAddr            string `json:"ClientAddr"`
	RequestMethod         string `json:"RequestMethod"`
	RequestPath           string `json:"RequestPath"`
	RequestProtocol       string `json:"RequestProtocol"`
	DownstreamStatus      int    `json:"DownstreamStatus"`
	DownstreamContentSize int64  `json:"DownstreamContentSize"`
	StartUTC              string `json:"StartUTC"`
	UserAgent             string `json:"request_User-Agent"`
	Referer               string `json:"request_Referer"`
	RouterName            string `json:"RouterName"`
}

func traefik(s string, ev *event.Event) string {
	if !strings.HasPrefix(strings.TrimLeft(s, " \t"), "{") {
		return "traefik: not a JSON object"
	}
	var r traefikLine
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return "traefik: not a JSON object"
	}
	host := r.ClientHost
	if host == "" {
		if ap, err := netip.ParseAddrPort(r.ClientAddr); err == nil {
			host = ap.Addr().String()
		}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "traefik: ClientHost: not an IP address"
	}
	t, err := time.Parse(time.RFC3339Nano, r.StartUTC)
	if err != nil {
		return "traefik: StartUTC: not an RFC 3339 time"
	}
	if r.DownstreamStatus < 100 || r.DownstreamStatus > 599 {
		return "traefik: DownstreamStatus: not an HTTP status"
	}
	if r.RequestMethod == "" || r.RequestPath == "" {
		return "traefik: RequestMethod/RequestPath: missing"
	}
	*ev = event.Event{Time: t.UTC(), Source: a.Unmap(), Type: event.TypeHTTPAccess, Parser: "traefik",
		Method: r.RequestMethod, Path: r.RequestPath, Proto: r.RequestProtocol, Status: r.DownstreamStatus,
		Bytes: max(r.DownstreamContentSize, 0), UserAgent: dashless(r.UserAgent), Referer: dashless(r.Referer),
		Static: isStatic(r.RequestPath)}
	return ""
}

// caddyLine holds the fields of a Caddy JSON access log entry (logger
// http.log.access...) that an event uses.
type caddyLine struct {
	TS      *float64 `json:"ts"`
	Logger  string   `json:"logger"`
	Status  int      `json:"status"`
	Size    int64    `json:"size"`
	Request *struct {
		RemoteIP string              `json:"remote_ip"`
		ClientIP string              `json:"client_ip"`
		Proto    string              `json:"proto"`
		Method   string              `json:"method"`
		URI      string              `json:"uri"`
		Headers  map[string][]string `json:"headers"`
	} `json:"request"`
}

func caddy(s string, ev *event.Event) string {
	if !strings.HasPrefix(strings.TrimLeft(s, " \t"), "{") {
		return "caddy: not a JSON object"
	}
	var r caddyLine
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return "caddy: not a JSON object"
	}
	if r.Request == nil {
		if !strings.HasPrefix(r.Logger, "http.log.access") {
			return noEvent // Caddy's other logs share the stream
		}
		return "caddy: access entry without request"
	}
	host := r.Request.ClientIP
	if host == "" {
		host = r.Request.RemoteIP
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "caddy: client_ip: not an IP address"
	}
	if r.TS == nil || math.IsNaN(*r.TS) || *r.TS <= 0 || *r.TS > 1e11 {
		return "caddy: ts: not seconds since the epoch"
	}
	if r.Status < 100 || r.Status > 599 {
		return "caddy: status: not an HTTP status"
	}
	if r.Request.Method == "" || r.Request.URI == "" {
		return "caddy: method/uri: missing"
	}
	sec, frac := math.Modf(*r.TS)
	h := func(k string) string {
		if v := r.Request.Headers[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	*ev = event.Event{Time: time.Unix(int64(sec), int64(math.Round(frac*1e6))*1e3).UTC(), Source: a.Unmap(),
		Type: event.TypeHTTPAccess, Parser: "caddy", Method: r.Request.Method, Path: r.Request.URI, Proto: r.Request.Proto,
		Status: r.Status, Bytes: max(r.Size, 0), UserAgent: h("User-Agent"), Referer: h("Referer"), Static: isStatic(r.Request.URI)}
	return ""
}

func dashless(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxAlertBytes bounds one alert message; an alert is a few hundred bytes.
const MaxAlertBytes = 64 << 10

// DecodeAlert reads one alert message as the engine publishes it: schema
// AlertVersion, a valid source address and a scenario. It is the one
// decoder of the alerts topic, shared by `portcullis alerts` and
// `portcullis notify`.
func DecodeAlert(b []byte) (Alert, error) {
	var a Alert
	if len(b) > MaxAlertBytes {
		return a, fmt.Errorf("alert of %d bytes: above %d", len(b), MaxAlertBytes)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("alert: %w", err)
	}
	if a.V != AlertVersion {
		return a, fmt.Errorf("alert: version %d, want %d", a.V, AlertVersion)
	}
	if _, err := netip.ParseAddr(a.IP); err != nil {
		return a, fmt.Errorf("alert: ip %q: %w", a.IP, err)
	}
	if a.Scenario == "" {
		return a, errors.New("alert: no scenario")
	}
	for _, f := range [...]struct{ name, v string }{{"scenario", a.Scenario}, {"country", a.Country}, {"host", a.Host}} {
		if strings.ContainsFunc(f.v, isControl) {
			return a, fmt.Errorf("alert: %s holds control characters", f.name)
		}
	}
	return a, nil
}

// isControl reports C0 and C1 control characters and the bidirectional
// overrides, which would let alert text rewrite a terminal line, an email
// header or the direction of the text around it.
func isControl(r rune) bool {
	return r < 0x20 || r >= 0x7f && r < 0xa0 || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
}

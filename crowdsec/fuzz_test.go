package crowdsec

import (
	"encoding/json"
	"testing"

	"github.com/portcullis-ips/portcullis/decisionfeed"
)

// FuzzFromLAPI feeds arbitrary stream decisions to the converter: it must
// never panic, and whatever it accepts as an add must be a valid decision.
func FuzzFromLAPI(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"origin":"CAPI","type":"ban","scope":"Ip","value":"203.0.113.7","duration":"3h59m59.5s","scenario":"x"}`,
		`{"id":2,"origin":"crowdsec","type":"captcha","scope":"Range","value":"198.51.100.0/24","duration":"1h","scenario":"y"}`,
		`{"id":3,"type":"ban","scope":"Range","value":"0.0.0.0/0","duration":"1h"}`,
		`{"id":4,"type":"ban","scope":"Country","value":"FR","duration":"1h"}`,
		`{"id":5,"type":"BAN","scope":"ip","value":"::ffff:1.2.3.4","duration":"-5s"}`,
		`{"id":6,"type":"ban","scope":"Ip","value":"2001:db8::1","duration":"999999h"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Decision
		if json.Unmarshal(b, &c) != nil {
			return
		}
		d, err := FromLAPI(c, decisionfeed.OpAdd, t0)
		if err != nil {
			return
		}
		if !IsPullOrigin(d.Origin) || d.Until.Before(t0) {
			t.Fatalf("accepted %s as %+v", b, d)
		}
		_ = d.Validate(decisionfeed.DefaultLimits()) // may reject (limits); must not panic
	})
}

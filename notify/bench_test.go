package notify

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portcullis-ips/portcullis/decisionfeed"
	"github.com/portcullis-ips/portcullis/engine"
)

// BenchmarkDeliverBatch measures one batch of 50 alerts filtered, rendered
// and posted to a webhook on loopback (per-batch cost; alerts/s is 50
// times the batches/s).
func BenchmarkDeliverBatch(b *testing.B) {
	for _, typ := range []string{"webhook", "slack"} {
		b.Run(typ, func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
			}))
			defer srv.Close()
			cfg := testConfig(Destination{Name: "d", Type: typ, URL: srv.URL, Filter: Filter{Scenarios: []string{"crowdsecurity/*"}}})
			n, err := New(cfg, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			alerts := make([]engine.Alert, 50)
			for i := range alerts {
				alerts[i] = alert(fmt.Sprintf("198.51.100.%d", i+1), "crowdsecurity/http-crawl", decisionfeed.TypeBan)
			}
			d := n.dests[0]
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if !n.deliverOne(ctx, d, Batch{Alerts: d.selectAlerts(alerts), Destination: "d"}) {
					b.Fatal("not delivered")
				}
			}
			b.ReportMetric(float64(b.N*len(alerts))/b.Elapsed().Seconds(), "alerts/s")
		})
	}
}

package acquire

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// seedAcquis is the acquis.yaml of the seed architecture, as operators write it.
const seedAcquis = `---
filenames:
  - /var/log/nginx/access.log
  - /var/log/nginx/error.log
labels:
  type: nginx
---
filenames:
  - /var/log/auth.log
labels:
  type: syslog
---
source: kafka
topic: server-logs
brokers:
  - kafka-01:9092
  - kafka-02:9092
labels:
  type: nginx
group_id: crowdsec-consumer
`

func TestParseConfigSeed(t *testing.T) {
	got, err := ParseConfig("acquis.yaml", []byte(seedAcquis))
	if err != nil {
		t.Fatal(err)
	}
	want := []SourceConfig{
		{Kind: KindFile, Labels: map[string]string{"type": "nginx"}, MaxLineBytes: DefaultMaxLineBytes,
			Filenames: []string{"/var/log/nginx/access.log", "/var/log/nginx/error.log"}, File: "acquis.yaml", Line: 2},
		{Kind: KindFile, Labels: map[string]string{"type": "syslog"}, MaxLineBytes: DefaultMaxLineBytes,
			Filenames: []string{"/var/log/auth.log"}, File: "acquis.yaml", Line: 8},
		{Kind: KindKafka, Labels: map[string]string{"type": "nginx"}, MaxLineBytes: DefaultMaxLineBytes,
			Topic: "server-logs", Brokers: []string{"kafka-01:9092", "kafka-02:9092"}, GroupID: "crowdsec-consumer",
			File: "acquis.yaml", Line: 13},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseConfigFull(t *testing.T) {
	const doc = `source: kafka
topic: logs
brokers: ["k1:9093"]
group_id: engines
from_beginning: true
max_line_bytes: 4096
tls:
  ca_cert: /etc/ssl/ca.pem
  client_cert: /etc/ssl/c.pem
  client_key: /etc/ssl/c.key
  insecure_skip_verify: false
sasl:
  mechanism: SCRAM-SHA-512
  username: engine
  password: s3cret
labels:
  type: sshd
  env: prod
---
source: syslog
listen_addr: 0.0.0.0
listen_port: 5514
protocol: tcp
labels: {type: syslog}
---
source: syslog
listen_addr: "[::1]:514"
labels: {type: syslog}
---
filename: /var/log/a.log
from_beginning: true
labels: {type: nginx}
`
	got, err := ParseConfig("a.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d sources, want 4", len(got))
	}
	k := got[0]
	if k.Kind != KindKafka || !k.FromBeginning || k.MaxLineBytes != 4096 || k.Type() != "sshd" || k.Labels["env"] != "prod" {
		t.Errorf("kafka: %+v", k)
	}
	if !reflect.DeepEqual(k.TLS, &TLSConfig{CACert: "/etc/ssl/ca.pem", ClientCert: "/etc/ssl/c.pem", ClientKey: "/etc/ssl/c.key"}) {
		t.Errorf("tls: %+v", k.TLS)
	}
	if !reflect.DeepEqual(k.SASL, &SASLConfig{Mechanism: SASLSCRAMSHA512, Username: "engine", Password: "s3cret"}) {
		t.Errorf("sasl: %+v", k.SASL)
	}
	if s := got[1]; s.Kind != KindSyslog || s.ListenAddr != "0.0.0.0:5514" || s.Protocol != "tcp" {
		t.Errorf("syslog tcp: %+v", s)
	}
	if s := got[2]; s.ListenAddr != "[::1]:514" || s.Protocol != "udp" {
		t.Errorf("syslog udp: %+v", s)
	}
	if f := got[3]; f.Kind != KindFile || !reflect.DeepEqual(f.Filenames, []string{"/var/log/a.log"}) || !f.FromBeginning {
		t.Errorf("file: %+v", f)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown key", "filenames: [/a]\nfilname: /b\nlabels: {type: nginx}\n", `x.yaml:2: unknown key "filname"`},
		{"unknown type", "filenames: [/a]\nlabels:\n  type: nginxx\n", `x.yaml:3: labels: unknown type "nginxx" (want one of nginx, apache, apache2, httpd, syslog, sshd, auth, journal, suricata, haproxy, traefik, caddy)`},
		{"no type", "filenames: [/a]\nlabels:\n  env: x\n", `x.yaml:2: labels: type missing (one of nginx, apache, apache2, httpd, syslog, sshd, auth, journal, suricata, haproxy, traefik, caddy)`},
		{"no labels", "filenames: [/a]\n", `x.yaml:1: labels: missing (need at least type)`},
		{"filenames scalar", "filenames: /a\nlabels: {type: nginx}\n", `x.yaml:1: filenames: want a list, got a scalar`},
		{"bad bool", "filenames: [/a]\nfrom_beginning: yes please\nlabels: {type: nginx}\n", `x.yaml:2: from_beginning: want true or false, got "yes please"`},
		{"bad source", "source: docker\nlabels: {type: nginx}\n", `x.yaml:1: source: unknown source "docker" (want file, kafka or syslog)`},
		{"kafka no group", "source: kafka\ntopic: t\nbrokers: [a:1]\nlabels: {type: nginx}\n", `x.yaml:1: group_id: missing for a kafka source (several engines share it)`},
		{"bad broker", "source: kafka\ntopic: t\nbrokers:\n  - a:1\n  - kafka-02\ngroup_id: g\nlabels: {type: nginx}\n", `x.yaml:5: brokers: "kafka-02" is not host:port`},
		{"file option on kafka", "source: kafka\ntopic: t\nbrokers: [a:1]\ngroup_id: g\nfilenames: [/a]\nlabels: {type: nginx}\n", `x.yaml:5: filenames: not an option of a kafka source`},
		{"bad protocol", "source: syslog\nlisten_addr: 127.0.0.1:514\nprotocol: sctp\nlabels: {type: syslog}\n", `x.yaml:3: protocol: "sctp" is not udp or tcp`},
		{"bad port", "source: syslog\nlisten_addr: 127.0.0.1\nlisten_port: 70000\nlabels: {type: syslog}\n", `x.yaml:3: listen_port: "70000" is not a port number`},
		{"addr without port", "source: syslog\nlisten_addr: 127.0.0.1\nlabels: {type: syslog}\n", `x.yaml:2: listen_addr: "127.0.0.1" is not host:port (or set listen_port)`},
		{"bad sasl", "source: kafka\ntopic: t\nbrokers: [a:1]\ngroup_id: g\nsasl:\n  mechanism: gssapi\n  username: u\nlabels: {type: nginx}\n", `x.yaml:6: sasl: unknown mechanism "gssapi" (want plain, scram-sha-256 or scram-sha-512)`},
		{"tls half", "source: kafka\ntopic: t\nbrokers: [a:1]\ngroup_id: g\ntls:\n  client_cert: /c\nlabels: {type: nginx}\n", `x.yaml:6: tls: client_cert and client_key go together`},
		{"tls unknown", "source: kafka\ntopic: t\nbrokers: [a:1]\ngroup_id: g\ntls:\n  ca: /c\nlabels: {type: nginx}\n", `x.yaml:6: tls: unknown key "ca"`},
		{"duplicate", "filenames: [/a]\nfilenames: [/b]\nlabels: {type: nginx}\n", `x.yaml:2: source document: duplicate key "filenames"`},
		{"syntax", "filenames: [/a\nlabels: {type: nginx}\n", `x.yaml:1: did not find expected ',' or ']'`},
		{"bad glob", "filenames: ['/a/[']\nlabels: {type: nginx}\n", `x.yaml:1: filenames: bad pattern "/a/[": syntax error in pattern`},
		{"neither", "labels: {type: nginx}\n", `x.yaml:1: document has neither source nor filenames`},
		{"empty", "---\n---\n", `x.yaml: no source defined`},
		{"list doc", "- a\n", `x.yaml:1: source document: want a mapping, got a list`},
		{"max line", "filenames: [/a]\nmax_line_bytes: 10\nlabels: {type: nginx}\n", `x.yaml:2: max_line_bytes: "10" is not a byte count between 64 and 16777216`},
		{"second doc", "filenames: [/a]\nlabels: {type: nginx}\n---\nfilenames: [/b]\nlabels: {type: nginx}\nextra: 1\n", `x.yaml:6: unknown key "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("x.yaml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *ConfigError", err, err)
			}
			if err.Error() != tc.want {
				t.Fatalf("error\n %s\nwant\n %s", err, tc.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "acquis.yaml")
	if err := os.WriteFile(p, []byte(seedAcquis), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].File != p {
		t.Fatalf("got %+v", got)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file: no error")
	}
}

func FuzzAcquis(f *testing.F) {
	f.Add([]byte(seedAcquis))
	f.Add([]byte("source: syslog\nlisten_addr: 127.0.0.1\nlisten_port: 514\nprotocol: tcp\nlabels: {type: syslog}\n"))
	f.Add([]byte("source: kafka\ntopic: t\nbrokers: [a:1]\ngroup_id: g\ntls: {insecure_skip_verify: true}\nsasl: {mechanism: plain, username: u, password: p}\nlabels: {type: nginx}\n"))
	f.Add([]byte("filenames: [/a]\nfilenames: [/b]\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := ParseConfig("f.yaml", b)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *ConfigError: %v", err, err)
			}
			return
		}
		for _, c := range cs {
			if !contains(KnownTypes, c.Type()) {
				t.Fatalf("accepted type %q", c.Type())
			}
			switch c.Kind {
			case KindFile:
				if len(c.Filenames) == 0 {
					t.Fatal("file source without filenames")
				}
			case KindKafka:
				if c.Topic == "" || len(c.Brokers) == 0 || c.GroupID == "" {
					t.Fatalf("incomplete kafka source %+v", c)
				}
			case KindSyslog:
				if c.ListenAddr == "" || (c.Protocol != "udp" && c.Protocol != "tcp") {
					t.Fatalf("incomplete syslog source %+v", c)
				}
			default:
				t.Fatalf("kind %q", c.Kind)
			}
		}
	})
}

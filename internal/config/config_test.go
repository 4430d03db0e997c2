package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Name  string        `yaml:"name"`
	Every time.Duration `yaml:"every"`
	Count int           `yaml:"count"`
}

func TestDecode(t *testing.T) {
	c := testConfig{Name: "default", Count: 7}
	if err := Decode("c.yaml", []byte("every: 5s\ncount: 3\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c != (testConfig{Name: "default", Every: 5 * time.Second, Count: 3}) {
		t.Fatalf("decoded %+v: want the unset name kept", c)
	}
	for _, tc := range []struct{ src, want string }{
		{"", "c.yaml: empty document"},
		{"name: a\nnope: 1\n", "c.yaml: line 2: field nope not found in type config.testConfig"},
		{"count: x\nevery: y\n", "c.yaml: line 1: cannot unmarshal !!str `x` into int\nc.yaml: line 2: cannot unmarshal !!str `y` into time.Duration"},
		{"name: [a\n", "c.yaml: line 1:"},
		{"name: a\n---\nname: b\n", "c.yaml: line 2: a second YAML document; one per file"},
		{"name: a\n---\nname: [b\n", "c.yaml: line 2: did not find expected"}, // not "line 0: a second document"
	} {
		var c testConfig
		err := Decode("c.yaml", []byte(tc.src), &c)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Decode(%q) = %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("name: file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var c testConfig
	if err := Load(p, &c); err != nil || c.Name != "file" {
		t.Fatalf("Load: %v, %+v", err, c)
	}
	if err := Load(filepath.Join(t.TempDir(), "missing.yaml"), &c); err == nil || !strings.HasPrefix(err.Error(), "read config: ") {
		t.Fatalf("Load of a missing file: %v", err)
	}
}

func TestValidateFeed(t *testing.T) {
	for _, tc := range []struct {
		brokers              []string
		topic, group, listen string
		want                 string
	}{
		{[]string{"k:9092"}, "t", "g", "", ""},
		{[]string{"k:9092"}, "t", "g", "127.0.0.1:9101", ""},
		{nil, "t", "g", "", "brokers: none given"},
		{[]string{"k:9092", "k2"}, "t", "g", "", `brokers[1]: "k2" is not host:port`},
		{[]string{"k:9092"}, "", "g", "", "topic: empty"},
		{[]string{"k:9092"}, "t", "", "", "group: empty"},
		{[]string{"k:9092"}, "t", "g", "nowhere", `metrics_listen: "nowhere" is not host:port`},
	} {
		err := ValidateFeed(tc.brokers, tc.topic, tc.group, tc.listen)
		if (err == nil) != (tc.want == "") || (err != nil && err.Error() != tc.want) {
			t.Errorf("ValidateFeed(%v, %q, %q, %q) = %v, want %q", tc.brokers, tc.topic, tc.group, tc.listen, err, tc.want)
		}
	}
}

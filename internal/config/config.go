// Package config holds what the Portcullis bouncers share in their YAML
// configuration: the strict decoder (unknown keys, values of the wrong type
// and a second document are errors naming the file and line) and the checks
// of the decision-feed settings every bouncer has.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads the YAML file at path and decodes it over v (see Decode).
func Load(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Decode(path, data, v)
}

// Decode decodes one YAML document over v, which keeps what the document
// does not set. Unknown keys, values of the wrong type, an empty input and
// a second document are errors; every problem is one line of the error,
// "name: line N: ...".
func Decode(name string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: empty document", name)
		}
		return fileError(name, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		// The second document does not even parse: say so and where.
		return fileError(name, err)
	default:
		return fmt.Errorf("%s: line %d: a second YAML document; one per file", name, extra.Line)
	}
}

// fileError rewrites a yaml.v3 error, "yaml: line N: ..." or, for several
// problems, "yaml: unmarshal errors:\n  line N: ...", as one line per
// problem, each prefixed with the file name.
func fileError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, name+": "+l)
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

// ValidateFeed checks the decision-feed settings of a bouncer: at least
// one host:port broker, a topic, a lag-reporting group and, when set, a
// host:port metrics address. Errors name the YAML keys.
func ValidateFeed(brokers []string, topic, group, metricsListen string) error {
	if len(brokers) == 0 {
		return errors.New("brokers: none given")
	}
	for i, b := range brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("brokers[%d]: %q is not host:port", i, b)
		}
	}
	if topic == "" {
		return errors.New("topic: empty")
	}
	if group == "" {
		return errors.New("group: empty")
	}
	if metricsListen != "" {
		if _, _, err := net.SplitHostPort(metricsListen); err != nil {
			return fmt.Errorf("metrics_listen: %q is not host:port", metricsListen)
		}
	}
	return nil
}

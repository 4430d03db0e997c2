// Package strictyaml decodes the engine's YAML files strictly (unknown keys
// are errors) and words every error as "FILE:LINE: reason".
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// lineRE finds yaml.v3's "line N: " prefixes; it runs only on error paths.
var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Decode decodes one YAML document of data into v, rejecting unknown keys,
// and returns the document's node tree so callers can name the line of a
// value that fails their own validation. An empty document is an error.
func Decode(file string, data []byte, v any) (*yaml.Node, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Wrap(file, err)
	}
	if len(root.Content) == 0 {
		return nil, fmt.Errorf("%s: empty document", file)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty document", file)
		}
		return nil, Wrap(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s:%d: a second YAML document; one per file", file, extra.Line)
	}
	return root.Content[0], nil
}

// Wrap rewrites a yaml.v3 error into "FILE:LINE: reason" lines.
func Wrap(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			msgs = append(msgs, located(file, e))
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	return errors.New(located(file, err.Error()))
}

func located(file, msg string) string {
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		return file + ":" + m[1] + ": " + m[2]
	}
	return file + ": " + strings.TrimPrefix(msg, "yaml: ")
}

// Errorf returns "FILE:LINE: reason" for the value under the mapping key
// path in root (the key's own line when the value is missing).
func Errorf(file string, root *yaml.Node, path []string, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", file, Line(root, path...), fmt.Sprintf(format, args...))
}

// Line returns the line of the value at the mapping key path below n, or
// of the deepest node found on the way.
func Line(n *yaml.Node, path ...string) int {
	if n == nil {
		return 0
	}
	line := n.Line
	for _, k := range path {
		if n.Kind == yaml.SequenceNode {
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
			continue
		}
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				n = n.Content[i+1]
				line = n.Line
				found = true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

// Package scenarios holds the shipped detection scenarios, one YAML file
// each, embedded so the binaries run without a config tree. Operators copy
// the directory, tune it and pass it with --scenarios.
package scenarios

import "embed"

// FS holds the shipped scenario files at its root.
//
//go:embed *.yaml
var FS embed.FS

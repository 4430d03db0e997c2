//go:build !race

package main

// raceEnabled is true under -race, whose instrumentation allocates.
const raceEnabled = false

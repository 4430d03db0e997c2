// Package cputime reads the CPU time the process has used, so benchmarks on
// a shared machine can report throughput per CPU-second (per core) next to
// wall-clock figures that other tenants distort.
package cputime

import "syscall"

// Used returns the user plus system CPU time of the process in nanoseconds.
func Used() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// MaxRSS returns the process's peak resident set size in bytes.
func MaxRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024
}

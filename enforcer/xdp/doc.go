// Package xdp is the XDP eBPF enforcement backend: it loads the program of
// package bpf, attaches it to interfaces and keeps its ban maps in step with
// the decision feed.
//
// Maps and links are pinned under Config.PinPath, so a restarted or upgraded
// daemon re-opens the same maps and the attached program keeps dropping
// throughout; an older program build in a pinned link is replaced
// atomically. Close detaches nothing; Cleanup removes everything.
//
// Expiry is enforced by the program itself (a ban's expiry is stored in
// CLOCK_BOOTTIME nanoseconds), so bans end on time with no process running.
//
// A daemon calls New (in the network namespace of its interfaces), logs
// every Attachment whose Fallback is set, reconciles to the feed's live set
// with Reconcile, applies changes with Apply, calls GC now and then to free
// the room held by expired bans, and reads Counters for its metrics. One
// process at a time may use a pin path: it keeps the reason ids it assigns
// in memory as well as in the pinned table.
package xdp

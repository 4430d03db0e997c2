// Package crowdsecdiff proves that hub-format scenarios run by the engine
// raise the alerts CrowdSec raises: the same scenario files and the same log
// lines go through Debian's crowdsec 1.4.6 (offline, time-machine mode) and
// through engine/scenario, and the (address, scenario) alerts must agree.
package crowdsecdiff

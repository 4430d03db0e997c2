package scenario

import "regexp"

// VMNodes exposes how many filter subtrees run on the expr VM.
func VMNodes(s *Scenario) int { return s.vmNodes }

var regexpCompile = regexp.Compile

package scenario

// VMNodes exposes how many filter subtrees run on the expr VM.
func VMNodes(s *Scenario) int { return s.vmNodes }

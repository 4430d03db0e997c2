package runner

// ActiveByOrigin returns the number of bans in force per origin.
func (r *Runner) ActiveByOrigin() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int)
	for k, n := range r.counts {
		out[k.origin] += n
	}
	return out
}

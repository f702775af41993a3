"""Training: the one loop, train state, and what each objective adds (steps, rollouts, policy setup)."""

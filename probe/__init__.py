"""leash probe: sample, verify and measure checkpoints (empirical support, pass@k, entropies)."""

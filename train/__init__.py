"""leash train: GRPO/ProRL-style RLVR on TRL's GRPOTrainer that probes its own checkpoints."""

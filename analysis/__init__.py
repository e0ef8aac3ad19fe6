"""Post-hoc analysis of trained LoRA runs: subspace similarity and ΔW vs W (paper §7)."""

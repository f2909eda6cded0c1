"""Training: `config` (TRL configs from a params section), `length_penalty`, `rewards` (RL reward adapters),
`reward_model`, `base_model`, `rl`; thin over TRL, no trainer copied."""

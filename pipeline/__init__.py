"""What ties the stages to `params.yaml` and is no stage: `params` (the schema and loader every stage reads
params through), `launch` (accelerate launch of a training stage), `compose_params` (Hydra composition)."""

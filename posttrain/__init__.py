"""The library: what the pipeline's stages are built from, usable without the pipeline.

Nothing here parses a command line, reads `params.yaml` or knows a pipeline path: values and paths come
in as arguments (`tests/test_layout.py` keeps it so). By concern:

    countdown/    the verifier (TinyZero's reward, without its flaws), the solver, puzzle generation
    instruct/     the embedded instruction tasks: families, generator and rule checker
    evaluation/   statistics (intervals, win rates, paired tests), Countdown pass@k, the win rate, text metrics
    judges/       the judge interface, the checker and reward-model judges, the API client and its cache
    training/     TRL config building, length penalty, RL reward adapters, reward models, base model, RL wiring
    report/       the report's tables, markdown and plots
    generation.py sampling (transformers or vLLM) with exactly the decoding's settings
    hub.py        pulling models from the hub or a folder, pickles read as tensors only
    data_io.py    JSONL and atomic writes, datasets from the hub or local files, checked against schemas
    schemas.py    every row and metrics format, defined once
    prompts.py    Countdown prompts and chat templates (no default system turn)
    errors.py     `UserError`: a user's mistake, shown as one line
"""

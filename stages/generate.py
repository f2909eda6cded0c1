"""Sample completions from a model for a prompt set, and write them as JSONL.

    python -m stages.generate --model models/sft_countdown --task countdown \
        --prompts data/countdown/eval.jsonl --decoding sample --out data/generations/countdown/sft-sample.jsonl

One `schemas.GENERATION` row per (prompt, sample): `prompt_id` (row of the prompt file), `sample`,
`text`, `prompt_tokens`, `completion_tokens`, `finish` ("stop" at `<|im_end|>`/eos, or "length"), the
sampling settings and the model. `--decoding` names a `generate.<decoding>` section (n, temperature,
top_p, max_new_tokens, repetition_penalty; temperature 0 is greedy; `chat_template` puts a Countdown
prompt in the model's chat template as the single user turn, for chat-tuned teachers); `sweep` takes
one of its temperatures from `--temperature`. `generate.backend` picks transformers or vLLM;
`posttrain.generation` says how each samples (only the section's settings, never a model's own
generation defaults).
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import fields
from pathlib import Path

from pipeline import params
from posttrain import generation
from posttrain.data_io import require_model_dir, write_jsonl
from posttrain.errors import UserError, run_main
from posttrain.journal import partial_dir
from posttrain.schemas import GENERATION

DECODINGS = [f.name for f in fields(params.Generate) if f.type in ("Decoding", "Sweep")]  # generate.<name>


def decoding_of(p: params.Params, decoding: str, temperature: float | None) -> params.Decoding:
    """The `generate.<decoding>` section; for `sweep`, its pool at `temperature`."""
    if decoding == "sweep":
        if temperature is None or temperature <= 0:
            raise UserError("--decoding sweep needs --temperature > 0 (one of generate.sweep.temperatures)")
        return p.generate.sweep.at(temperature)
    if temperature is not None:
        raise UserError("--temperature goes with --decoding sweep; the other decodings fix their own")
    return getattr(p.generate, decoding)


def generate(model_dir: Path, task: str, prompt_rows: list[dict], p: params.Params, decoding: str,
             temperature: float | None = None, partial: Path | None = None) -> list[dict]:
    """All samples for all prompts with the params' `generate.<decoding>`, as rows sorted by (prompt_id, sample)."""
    d = decoding_of(p, decoding, temperature)
    return generation.generate(model_dir, task, prompt_rows, d, decoding_name=decoding, backend=p.generate.backend,
                               batch_size=p.generate.batch_size, seed=p.seed,
                               prompt_template=p.countdown.prompt_template, system_prompt=p.instruct.system_prompt,
                               partial=partial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--task", choices=["countdown", "instruct"], required=True)
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--decoding", choices=DECODINGS, required=True, help="a generate.<decoding> section")
    parser.add_argument("--temperature", type=float, help="--decoding sweep: the pool's temperature")
    parser.add_argument("--limit", type=int, help="the first LIMIT prompt rows only")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    require_model_dir(args.model, "--model")
    p = params.load()
    prompts = generation.read_prompts(args.prompts, args.task)[:args.limit]
    partial = partial_dir(args.out)  # a killed run resumes after its last finished batch
    rows = generate(args.model, args.task, prompts, p, args.decoding, args.temperature, partial)
    write_jsonl(args.out, rows, GENERATION)
    shutil.rmtree(partial, ignore_errors=True)


if __name__ == "__main__":
    run_main(main)

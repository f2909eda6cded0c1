"""A model's answers to the instruction prompts, and 002's text metrics on held-out SmolTalk rows, in one process.

    python -m stages.answer_instruct --model models/dpo --prompts data/instruct/gen_test.jsonl \
        --out data/generations/instruct/dpo.jsonl --references data/instruct/sft_test.jsonl --limit 50 \
        --reference-answers data/generations/instruct_refs/dpo.jsonl --text-metrics metrics/instruct_text/dpo.json

1. The model answers `--prompts` (the held-out prompts the judges read) with `generate.instruct`, as
   `stages.generate` does for the reference model (`generate_reference`): the same code
   (`posttrain.generation`) and rows.
2. It answers the first `--limit` held-out SmolTalk rows of `--references` the same way, a separate
   `generate` call, so the judged answers do not depend on `--limit`.
3. `posttrain.evaluation.win_rate.text_metrics`: BLEU of those answers against the rows' reference responses,
   and the model's perplexity on every reference response.

One stage where there were two (`generate_instruct`, `text_instruct`): each model's evaluation pays for
starting Python and importing torch and transformers once (about 5 s here), and for one DVC stage.
A change of one model still reruns only its own stages; a change of `evaluation.text_rows` reruns
this stage, whose judged answers come out the same (seeded), so no judge reruns.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pipeline import params
from posttrain import generation
from posttrain.data_io import read_jsonl, require_model_dir, write_jsonl, write_metrics
from posttrain.errors import run_main
from posttrain.journal import partial_dir
from posttrain.evaluation import text_metrics as eval_instruct
from posttrain.schemas import GENERATION, REFERENCE_ANSWER, TEXT_METRICS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--prompts", type=Path, required=True, help="the held-out prompts the judges read")
    parser.add_argument("--out", type=Path, required=True, help="the answers to --prompts")
    parser.add_argument("--references", type=Path, required=True, help="held-out SmolTalk rows (text metrics)")
    parser.add_argument("--limit", type=int, required=True, help="the first LIMIT reference rows are answered (BLEU)")
    parser.add_argument("--reference-answers", type=Path, required=True, help="the answers to those rows")
    parser.add_argument("--text-metrics", type=Path, required=True, help="the BLEU and perplexity JSON")
    args = parser.parse_args()
    require_model_dir(args.model, "--model")
    p = params.load()
    references = read_jsonl(args.references, REFERENCE_ANSWER)
    prompt_rows = generation.read_prompts(args.prompts, "instruct")
    reference_rows = generation.read_prompts(args.references, "instruct")[:args.limit]
    settings = {"decoding_name": "instruct", "backend": p.generate.backend, "batch_size": p.generate.batch_size,
                "seed": p.seed, "prompt_template": p.countdown.prompt_template,
                "system_prompt": p.instruct.system_prompt}
    for rows, out in ((prompt_rows, args.out), (reference_rows, args.reference_answers)):  # each resumable
        answers = generation.generate(args.model, "instruct", rows, p.generate.instruct, **settings,
                                      partial=partial_dir(out))
        write_jsonl(out, answers, GENERATION)
        shutil.rmtree(partial_dir(out), ignore_errors=True)
    result = eval_instruct.text_metrics(references, answers, args.model, p.instruct.system_prompt, args.references,
                                        args.reference_answers)
    write_metrics(args.text_metrics, result, TEXT_METRICS)
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    run_main(main)

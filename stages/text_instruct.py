"""002's text metrics of one model: its answers to held-out SmolTalk prompts, BLEU against the references, perplexity.

    python -m stages.text_instruct --model models/sft_instruct --references data/instruct/sft_test.jsonl \
        --limit 50 --generations data/generations/instruct_refs/sft_instruct.jsonl \
        --out metrics/instruct_text/sft_instruct.json

The model answers the first `--limit` reference prompts with `generate.instruct` (the generation
stage's own code, so the rows are its rows), then `stages.eval_instruct`'s text metrics read them: BLEU
on those answers, perplexity of every reference response. One process for both, where two stage
commands would each pay for starting Python and importing torch and transformers (about 5 s here).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages import eval_instruct, generate, params
from stages.data_io import SMOLTALK, read_jsonl, require_model_dir, write_json, write_jsonl
from stages.errors import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--references", type=Path, required=True, help="held-out SmolTalk rows")
    parser.add_argument("--limit", type=int, required=True, help="the first LIMIT rows are answered (BLEU)")
    parser.add_argument("--generations", type=Path, required=True, help="the answers, written")
    parser.add_argument("--out", type=Path, required=True, help="the metrics JSON")
    args = parser.parse_args()
    require_model_dir(args.model, "--model")
    p = params.load()
    references = read_jsonl(args.references, {"messages": SMOLTALK["messages"]})
    prompts = generate.read_prompts(args.references, "instruct")[:args.limit]
    rows = generate.generate(args.model, "instruct", prompts, p, "instruct")
    write_jsonl(args.generations, rows)
    result = eval_instruct.text_metrics(references, rows, args.model, p.instruct.system_prompt, args.references,
                                        args.generations)
    write_json(args.out, result)
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    run_main(main)

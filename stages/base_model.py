"""The base model every method starts from, saved with `save_pretrained`.

    python -m stages.base_model --text data/countdown/warmstart_train.jsonl data/instruct/sft_train.jsonl \
        --out models/base

`base_model.source` is a hub id at `base_model.revision` (paper: `Qwen/Qwen2.5-0.5B` at a pinned
commit) or a local folder, copied as it is with `source.json` saying where from, or `build`: a
byte-level BPE tokenizer is trained on the prepared training text with Qwen2's normalizer and split
pattern and Qwen's special tokens and chat template, and a `Qwen2ForCausalLM` is built from
`base_model.config`, seeded. Because the tokenizer is a `Qwen2Tokenizer` over the trained vocabulary
and merges, every loading path (`AutoTokenizer`, TRL, vLLM) tokenizes the same way.

`base_model.pretrain.max_steps > 0` adds a language-modelling pass over that text (TRL's
`SFTTrainer`, loss on every token) before saving. The building and training are
`posttrain.training.base_model`'s; the hub loading `posttrain.hub`'s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from pipeline import params
from posttrain.data_io import SOURCE_RECORD, write_json
from posttrain.errors import run_main
from posttrain.hub import load_causal_lm
from posttrain.training.base_model import build, pretrain, training_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text", type=Path, nargs="+", required=True, help="prepared training JSONL files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    cfg = p.base_model
    record = None
    if cfg.source == "build":
        texts = training_text(args.text)
        model, tokenizer = build(cfg, texts, p.seed)
    else:
        model, tokenizer, record = load_causal_lm(cfg.source, cfg.revision, "base_model.source")
    if cfg.pretrain.max_steps > 0:
        texts = training_text(args.text)
        with tempfile.TemporaryDirectory() as workdir:
            pretrain(model, tokenizer, texts, cfg.pretrain, p.seed, Path(workdir))
    n_params = sum(t.numel() for t in model.parameters())
    tmp = args.out.with_name(args.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if record is not None:
        write_json(tmp / SOURCE_RECORD, record)
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.rename(args.out)
    print(f"base model: {n_params / 1e6:.2f}M parameters, vocabulary {len(tokenizer)} -> {args.out}")


if __name__ == "__main__":
    run_main(main)

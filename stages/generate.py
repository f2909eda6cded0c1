"""Sample completions from a model for a prompt set, and write them as JSONL.

    python -m stages.generate --model models/sft_countdown --task countdown \
        --prompts data/countdown/eval.jsonl --decoding sample --out data/generations/countdown/sft-sample.jsonl

One row per (prompt, sample): `prompt_id` (row of the prompt file), `sample`, `text`,
`prompt_tokens`, `completion_tokens`, `finish` ("stop" at `<|im_end|>`/eos, or "length"), the
sampling settings and the model. `--decoding` names a `generate.<decoding>` section (n, temperature,
top_p, max_new_tokens, repetition_penalty; temperature 0 is greedy; `chat_template` puts a Countdown
prompt in the model's chat template as the single user turn, for chat-tuned teachers).

Both backends sample with the section's settings and nothing else: a model's own
`generation_config.json` (Qwen2.5-Instruct's top_k 20, repetition_penalty 1.05, temperature 0.7) is
not applied, so the reference and the policies sample alike; top_k is off. Backends write the same
rows: `transformers` (CPU or GPU; prompts sorted by length and left-padded in batches, so padding is
small and every row of a batch decodes together; one seed for the run) and `vllm` (GPU only,
imported only when used; each prompt is its own request seeded with `seed` + its index, so a
prompt's samples do not depend on the others). `auto` takes vLLM when it is installed and a GPU is
present.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

from tqdm import tqdm

from pipeline import params
from posttrain.data_io import read_jsonl, require_model_dir, validate, write_jsonl
from posttrain.schemas import COUNTDOWN_TASK, SMOLTALK, ULTRAFEEDBACK
from posttrain.errors import UserError, run_main
from posttrain.prompts import chat_prompt, countdown_prompt, load_chat_tokenizer

STOP = "<|im_end|>"
DECODINGS = [f.name for f in fields(params.Generate) if f.type in ("Decoding", "Sweep")]  # generate.<name>


def user_turn(row: dict) -> str:
    """An instruction prompt: UltraFeedback's `prompt`, or the first user turn of a SmolTalk conversation."""
    if "prompt" in row:
        return row["prompt"]
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def render_prompts(task: str, rows: list[dict], p: params.Params, tokenizer, chat_template: bool = False) -> list[str]:
    """The exact text each prompt row is fed to the model as: an instruction prompt in the chat template with
    the params' system prompt; a Countdown prompt raw, or with `chat_template` as the chat's only (user) turn."""
    if task == "countdown":
        queries = [countdown_prompt(p.countdown.prompt_template, r["nums"], r["target"]) for r in rows]
        return [chat_prompt(tokenizer, "", q) for q in queries] if chat_template else queries
    return [chat_prompt(tokenizer, p.instruct.system_prompt, user_turn(r)) for r in rows]


def read_prompts(path: Path, task: str) -> list[dict]:
    """Prompt rows: Countdown tasks, or instruction rows in the UltraFeedback or SmolTalk schema."""
    if task == "countdown":
        return read_jsonl(path, COUNTDOWN_TASK)
    rows = read_jsonl(path)
    schema = {"messages": SMOLTALK["messages"]} if rows and "prompt" not in rows[0] else {
        "prompt": ULTRAFEEDBACK["prompt"]}
    validate(rows, schema, str(path))
    for i, row in enumerate(rows):
        if "messages" in schema and not any(m["role"] == "user" for m in row["messages"]):
            raise UserError(f"{path}: row {i}: field `messages` has no user turn")
    return rows


def stop_ids(tokenizer) -> list[int]:
    """`<|im_end|>` and the model's eos (`<|endoftext|>` for a base model): either ends a completion."""
    return sorted({tokenizer.convert_tokens_to_ids(STOP), tokenizer.eos_token_id} - {None})


def generation_config(d: params.Decoding, stops: list[int], pad_token_id: int):
    """transformers' `GenerationConfig` for a decoding: its settings, top_k off, the library's neutral defaults."""
    from transformers import GenerationConfig

    sampling = {"do_sample": False}  # greedy: temperature and the top-k/top-p filters do not apply
    if d.temperature > 0:
        sampling = {"do_sample": True, "temperature": d.temperature, "top_p": d.top_p, "top_k": 0}
    return GenerationConfig(**sampling, repetition_penalty=d.repetition_penalty,
                            max_new_tokens=d.max_new_tokens, num_return_sequences=d.n, eos_token_id=stops,
                            pad_token_id=pad_token_id)


def generate_transformers(model_dir: Path, prompts: list[str], d: params.Decoding, batch_size: int,
                          seed: int) -> Iterator[tuple[int, int, str, int, int, str]]:
    """Yield (prompt index, sample, text, prompt tokens, completion tokens, finish) in batches."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()
    stops = stop_ids(tokenizer)
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    config = generation_config(d, stops, tokenizer.pad_token_id)
    # `generate` fills each setting a config leaves unset from the model's own generation_config: with
    # that replaced too, only the decoding's settings and the library's neutral defaults remain.
    model.generation_config = config
    torch.manual_seed(seed)
    for start in tqdm(range(0, len(order), batch_size), desc=f"generating {model_dir.name}", unit="batch"):
        batch = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        for row, tokens in enumerate(new):
            index = batch[row // d.n]
            ended = next((k for k, t in enumerate(tokens) if t in stops), None)
            kept = tokens if ended is None else tokens[: ended + 1]
            text = tokenizer.decode(kept, skip_special_tokens=True)
            yield index, row % d.n, text, lengths[index], len(kept), "length" if ended is None else "stop"


def generate_vllm(model_dir: Path, prompts: list[str], d: params.Decoding,
                  seed: int) -> Iterator[tuple[int, int, str, int, int, str]]:
    """The same rows from vLLM, which schedules its own batches on the GPU."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), seed=seed)
    stops = stop_ids(llm.get_tokenizer())
    # One SamplingParams per prompt (vLLM pairs a list with the prompts), each with its own seed. Every
    # setting is given, so none comes from the model's generation_config; top_k 0 is off.
    requests = [SamplingParams(n=d.n, temperature=d.temperature, top_p=d.top_p if d.temperature > 0 else 1.0,
                               top_k=0, repetition_penalty=d.repetition_penalty, max_tokens=d.max_new_tokens,
                               stop_token_ids=stops, seed=seed + index) for index in range(len(prompts))]
    for index, result in enumerate(llm.generate(prompts, requests)):
        for sample, completion in enumerate(result.outputs):
            finish = "stop" if completion.finish_reason == "stop" else "length"
            yield index, sample, completion.text, len(result.prompt_token_ids), len(completion.token_ids), finish


def pick_backend(name: str) -> str:
    if name not in ("auto", "transformers", "vllm"):
        raise UserError(f"params: generate.backend must be auto, transformers or vllm, got {name!r}")
    if name != "auto":
        return name
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "transformers"


def generate(model_dir: Path, task: str, prompt_rows: list[dict], p: params.Params, decoding: str,
             temperature: float | None = None) -> list[dict]:
    """All samples for all prompts, as rows sorted by (prompt_id, sample); `temperature` overrides the decoding's."""
    if decoding == "sweep":
        if temperature is None or temperature <= 0:
            raise UserError("--decoding sweep needs --temperature > 0 (one of generate.sweep.temperatures)")
        d = p.generate.sweep.at(temperature)
    elif temperature is not None:
        raise UserError("--temperature goes with --decoding sweep; the other decodings fix their own")
    else:
        d = getattr(p.generate, decoding)
    if d.temperature == 0 and d.n != 1:
        raise UserError(f"params: generate.{decoding}: greedy decoding (temperature 0) gives one sample, n must be 1")
    prompts = render_prompts(task, prompt_rows, p, load_chat_tokenizer(model_dir), d.chat_template)
    backend = pick_backend(p.generate.backend)
    if backend == "vllm":
        samples = generate_vllm(model_dir, prompts, d, p.seed)
    else:
        samples = generate_transformers(model_dir, prompts, d, p.generate.batch_size, p.seed)
    settings = {**asdict(d), "decoding": decoding, "backend": backend, "model": model_dir.name}
    rows = [
        {"prompt_id": index, "sample": sample, "text": text, "prompt_tokens": n_prompt,
         "completion_tokens": n_completion, "finish": finish, **settings}
        for index, sample, text, n_prompt, n_completion, finish in samples
    ]
    return sorted(rows, key=lambda r: (r["prompt_id"], r["sample"]))


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
    prompts = read_prompts(args.prompts, args.task)[:args.limit]
    rows = generate(args.model, args.task, prompts, p, args.decoding, args.temperature)
    write_jsonl(args.out, rows)


if __name__ == "__main__":
    run_main(main)

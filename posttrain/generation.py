"""Sampling completions for prompt rows: prompt rendering, transformers and vLLM backends, one row format.

A decoding is any object with the settings `n`, `temperature` (0 is greedy), `top_p`,
`max_new_tokens`, `repetition_penalty` and `chat_template` (the pipeline's `generate.<decoding>`
sections). Both backends sample with those settings and nothing else: a model's own
`generation_config.json` (Qwen2.5-Instruct's top_k 20, repetition_penalty 1.05, temperature 0.7) is
not applied, so the reference and the policies sample alike; top_k is off. Backends give the same
rows: `transformers` (CPU or GPU; prompts sorted by length and left-padded in batches, so padding is
small and every row of a batch decodes together; one seed for the run, its state journalled after each
batch so a killed run resumes exactly: `posttrain.journal`) and `vllm` (GPU only,
imported only when used; each prompt is its own request seeded with `seed` + its index, so a
prompt's samples do not depend on the others). `auto` takes vLLM when it is installed and a GPU is
present.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from posttrain import startup
from posttrain.data_io import read_jsonl, validate
from posttrain.errors import UserError
from posttrain.prompts import chat_prompt, countdown_prompt, load_chat_tokenizer
from posttrain.schemas import COUNTDOWN_TASK, INSTRUCT_PROMPT, REFERENCE_ANSWER

STOP = "<|im_end|>"
BACKENDS = ("auto", "transformers", "vllm")


def user_turn(row: dict) -> str:
    """An instruction prompt: UltraFeedback's `prompt`, or the first user turn of a SmolTalk conversation."""
    if "prompt" in row:
        return row["prompt"]
    return next(m["content"] for m in row["messages"] if m["role"] == "user")


def render_prompts(task: str, rows: list[dict], tokenizer, *, prompt_template: str, system_prompt: str,
                   chat_template: bool = False) -> list[str]:
    """The exact text each prompt row is fed to the model as: an instruction prompt in the chat template with
    `system_prompt`; a Countdown prompt from `prompt_template` raw, or with `chat_template` as the chat's only
    (user) turn."""
    if task == "countdown":
        queries = [countdown_prompt(prompt_template, r["nums"], r["target"]) for r in rows]
        return [chat_prompt(tokenizer, "", q) for q in queries] if chat_template else queries
    return [chat_prompt(tokenizer, system_prompt, user_turn(r)) for r in rows]


def read_prompts(path: Path, task: str) -> list[dict]:
    """Prompt rows: Countdown tasks, or instruction rows in the UltraFeedback or SmolTalk schema."""
    if task == "countdown":
        return read_jsonl(path, COUNTDOWN_TASK)
    rows = read_jsonl(path)
    schema = REFERENCE_ANSWER if rows and "prompt" not in rows[0] else INSTRUCT_PROMPT
    validate(rows, schema, str(path))
    for i, row in enumerate(rows):
        if schema is REFERENCE_ANSWER and not any(m["role"] == "user" for m in row["messages"]):
            raise UserError(f"{path}: row {i}: field `messages` has no user turn")
    return rows


def stop_ids(tokenizer) -> list[int]:
    """`<|im_end|>` and the model's eos (`<|endoftext|>` for a base model): either ends a completion."""
    return sorted({tokenizer.convert_tokens_to_ids(STOP), tokenizer.eos_token_id} - {None})


def generation_config(d, stops: list[int], pad_token_id: int):
    """transformers' `GenerationConfig` for a decoding: its settings, top_k off, the library's neutral defaults."""
    from transformers import GenerationConfig

    sampling = {"do_sample": False}  # greedy: temperature and the top-k/top-p filters do not apply
    if d.temperature > 0:
        sampling = {"do_sample": True, "temperature": d.temperature, "top_p": d.top_p, "top_k": 0}
    return GenerationConfig(**sampling, repetition_penalty=d.repetition_penalty,
                            max_new_tokens=d.max_new_tokens, num_return_sequences=d.n, eos_token_id=stops,
                            pad_token_id=pad_token_id)


def generate_transformers(model_dir: Path, prompts: list[str], d, batch_size: int, seed: int,
                          journal=None) -> Iterator[tuple[int, int, str, int, int, str]]:
    """Yield (prompt index, sample, text, prompt tokens, completion tokens, finish) in batches; with a
    `journal` (`posttrain.journal`), after its finished batches, from the random state they left."""
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
    startup.ready("generating")
    torch.manual_seed(seed)
    skip = 0
    if journal is not None:
        skip = journal.batches
        yield from (tuple(row) for row in journal.rows)
        if journal.rng is not None:
            _set_rng_state(journal.rng)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts[skip:], desc=f"generating {model_dir.name}", unit="batch", initial=skip,
                      total=len(starts)):
        batch = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        rows = []
        for row, tokens in enumerate(new):
            index = batch[row // d.n]
            ended = next((k for k, t in enumerate(tokens) if t in stops), None)
            kept = tokens if ended is None else tokens[: ended + 1]
            text = tokenizer.decode(kept, skip_special_tokens=True)
            rows.append((index, row % d.n, text, lengths[index], len(kept), "length" if ended is None else "stop"))
        if journal is not None:
            journal.commit([list(r) for r in rows], _rng_state())
        yield from rows


def _rng_state() -> bytes:
    """torch's CPU random state and, on a GPU, the current device's: what the next batch samples from."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}, buffer)
    return buffer.getvalue()


def _set_rng_state(state: bytes) -> None:
    import io

    import torch

    saved = torch.load(io.BytesIO(state), weights_only=True)
    torch.set_rng_state(saved["cpu"])
    if saved["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved["cuda"])


VLLM_CHUNK = 512  # prompts per vLLM call: the journal's unit (each prompt seeded alone, so chunks change nothing)


def generate_vllm(model_dir: Path, prompts: list[str], d, seed: int,
                  journal=None) -> Iterator[tuple[int, int, str, int, int, str]]:
    """The same rows from vLLM, which schedules its own batches on the GPU."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), seed=seed)
    startup.ready("generating")
    stops = stop_ids(llm.get_tokenizer())
    # One SamplingParams per prompt (vLLM pairs a list with the prompts), each with its own seed. Every
    # setting is given, so none comes from the model's generation_config; top_k 0 is off.
    requests = [SamplingParams(n=d.n, temperature=d.temperature, top_p=d.top_p if d.temperature > 0 else 1.0,
                               top_k=0, repetition_penalty=d.repetition_penalty, max_tokens=d.max_new_tokens,
                               stop_token_ids=stops, seed=seed + index) for index in range(len(prompts))]
    skip = 0
    if journal is not None:
        skip = journal.batches
        yield from (tuple(row) for row in journal.rows)
    for chunk in range(skip * VLLM_CHUNK, len(prompts), VLLM_CHUNK):
        rows = []
        results = llm.generate(prompts[chunk:chunk + VLLM_CHUNK], requests[chunk:chunk + VLLM_CHUNK])
        for index, result in enumerate(results, start=chunk):
            for sample, completion in enumerate(result.outputs):
                finish = "stop" if completion.finish_reason == "stop" else "length"
                rows.append((index, sample, completion.text, len(result.prompt_token_ids),
                             len(completion.token_ids), finish))
        if journal is not None:
            journal.commit([list(r) for r in rows], None)
        yield from rows


def pick_backend(name: str) -> str:
    """The backend `name` asks for; `auto`: vLLM where it is installed and a GPU is present. vLLM asked for
    but not installed is a `UserError` naming `generate.backend`, before any model is loaded."""
    import importlib.util
    import sys

    import torch

    if name not in BACKENDS:
        raise UserError(f"params: generate.backend must be auto, transformers or vllm, got {name!r}")
    has_vllm = "vllm" in sys.modules or importlib.util.find_spec("vllm") is not None
    if name == "vllm" and not has_vllm:
        raise UserError("params: generate.backend is vllm, but vLLM is not installed (pip install -r "
                        "requirements-gpu.txt, on a GPU machine); set it to auto or transformers")
    if name != "auto":
        return name
    return "vllm" if torch.cuda.is_available() and has_vllm else "transformers"


def decoding_settings(d) -> dict[str, Any]:
    """A decoding's settings as a dict, in its fields' order (a dataclass), or its attributes' (any object)."""
    return dataclasses.asdict(d) if dataclasses.is_dataclass(d) else dict(vars(d))


def generate(model_dir: Path, task: str, prompt_rows: list[dict], decoding, *, decoding_name: str, backend: str,
             batch_size: int, seed: int, prompt_template: str, system_prompt: str,
             partial: Path | None = None) -> list[dict]:
    """All samples of `decoding` for all prompts, as `schemas.GENERATION` rows sorted by (prompt_id, sample).

    Each row also carries the decoding's settings, `decoding_name` and the backend that sampled it. With
    `partial` (a folder), finished batches are journalled there and a rerun resumes after them
    (`posttrain.journal`); the caller removes it (`Journal.remove`) once the rows are saved.
    """
    d = decoding
    if d.temperature == 0 and d.n != 1:
        raise UserError(f"params: generate.{decoding_name}: greedy decoding (temperature 0) gives one sample, "
                        "n must be 1")
    backend = pick_backend(backend)
    prompts = render_prompts(task, prompt_rows, load_chat_tokenizer(model_dir), prompt_template=prompt_template,
                             system_prompt=system_prompt, chat_template=d.chat_template)
    journal = None
    if partial is not None:
        from posttrain.journal import Journal

        journal = Journal(partial, {"prompts": prompts, "decoding": decoding_settings(d), "seed": seed,
                                    "batch_size": batch_size, "backend": backend}, [model_dir])
    if backend == "vllm":
        samples = generate_vllm(model_dir, prompts, d, seed, journal)
    else:
        samples = generate_transformers(model_dir, prompts, d, batch_size, seed, journal)
    settings = {**decoding_settings(d), "decoding": decoding_name, "backend": backend, "model": model_dir.name}
    rows = [
        {"prompt_id": index, "sample": sample, "text": text, "prompt_tokens": n_prompt,
         "completion_tokens": n_completion, "finish": finish, **settings}
        for index, sample, text, n_prompt, n_completion, finish in samples
    ]
    return sorted(rows, key=lambda r: (r["prompt_id"], r["sample"]))

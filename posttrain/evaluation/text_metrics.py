"""Text metrics of one model's answers (002): BLEU against held-out references, and perplexity.

`bleu_1/2/4`: sacrebleu corpus BLEU (`max_ngram_order` k, default 13a tokenizer) of the model's responses
against the reference responses (the first assistant turn) of held-out SmolTalk rows; each generation row
is a segment, matched to the reference row of its `prompt_id`, so the generations may cover any subset of
the file's rows. `perplexity`: exp of the mean token NLL of the reference responses, `<|im_end|>`
included, given the chat-templated prompt with the caller's system prompt, over every row of the
reference file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posttrain.errors import UserError
from posttrain.prompts import chat_prompt, load_chat_tokenizer

EOS = "<|im_end|>"
TOKENS_PER_BATCH = 8192  # perplexity: padded tokens per forward pass (logits are tokens x vocabulary)


def first_turn(row: dict, index: int, where: Path) -> tuple[str, str]:
    """(prompt, reference response): the first user turn and the first assistant turn of a SmolTalk row."""
    user = next((m["content"] for m in row["messages"] if m["role"] == "user"), None)
    assistant = next((m["content"] for m in row["messages"] if m["role"] == "assistant"), None)
    if user is None or assistant is None:
        raise UserError(f"{where}: row {index}: field `messages` needs a user turn and an assistant turn")
    return user, assistant


def bleu(hypotheses: list[str], references: list[str], orders: tuple[int, ...] = (1, 2, 4)) -> dict[str, float]:
    """Corpus BLEU-k (0-100) of hypotheses against one reference each, for each k in `orders`."""
    from sacrebleu.metrics import BLEU

    return {f"bleu_{k}": float(BLEU(max_ngram_order=k).corpus_score(hypotheses, [references]).score)
            for k in orders}


def perplexity(model_dir: Path, system_prompt: str, prompts: list[str], responses: list[str]) -> dict:
    """exp(mean NLL per response token) of the model on the responses, `<|im_end|>` included, each given
    its chat-templated prompt; pooled over all tokens. A pair longer than the model's context keeps its
    first tokens (counted in `perplexity_truncated`)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_chat_tokenizer(model_dir)
    # float32: the differences between methods can be small, and bf16 log-probs carry ~3 digits
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    limit = getattr(model.config, "max_position_embeddings", None) or 10**9
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples, truncated = [], 0
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(chat_prompt(tokenizer, system_prompt, prompt), add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response + EOS, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids)[:limit]
        truncated += len(prompt_ids) + len(response_ids) > limit
        if len(ids) > len(prompt_ids):
            examples.append((ids, len(prompt_ids)))
    examples.sort(key=lambda e: len(e[0]))
    batches, start = [], 0
    while start < len(examples):  # sorted by length: the last of a batch is its longest
        stop = start + 1
        while stop < len(examples) and (stop + 1 - start) * len(examples[stop][0]) <= TOKENS_PER_BATCH:
            stop += 1
        batches.append(examples[start:stop])
        start = stop
    total_nll, total_tokens = 0.0, 0
    for batch in tqdm(batches, desc=f"perplexity {model_dir.name}", unit="batch"):
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
            mask[row, :len(ids)] = 1
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits[:, :-1]
            target = labels[:, 1:].to(device)
            scored = target != -100
            nll = torch.nn.functional.cross_entropy(logits[scored].float(), target[scored], reduction="sum")
        total_nll += float(nll)
        total_tokens += int(scored.sum())
    return {"perplexity": float(np.exp(total_nll / total_tokens)), "perplexity_rows": len(examples),
            "perplexity_tokens": total_tokens, "perplexity_truncated": int(truncated)}


def text_metrics(reference_rows: list[dict], generation_rows: list[dict], model_dir: Path, system_prompt: str,
                 references_path: Path, generations_path: Path) -> dict:
    """BLEU of the generations against their references, and the model's perplexity on all references."""
    turns = [first_turn(row, i, references_path) for i, row in enumerate(reference_rows)]
    if not turns:
        raise UserError(f"{references_path}: no rows")
    if not generation_rows:
        raise UserError(f"{generations_path}: no rows")
    for index, row in enumerate(generation_rows):
        if not 0 <= row["prompt_id"] < len(turns):
            raise UserError(f"{generations_path}: row {index}: prompt_id {row['prompt_id']} is not a row of "
                            f"{references_path} ({len(turns)} rows)")
    hypotheses = [row["text"] for row in generation_rows]
    references = [turns[row["prompt_id"]][1] for row in generation_rows]
    return {
        "n": len(generation_rows),
        "n_prompts": len({row["prompt_id"] for row in generation_rows}),
        "model": model_dir.name,
        **bleu(hypotheses, references),
        **perplexity(model_dir, system_prompt, [t[0] for t in turns], [t[1] for t in turns]),
    }

"""The base model built from scratch: a byte-level BPE tokenizer trained on the training text, a seeded
Qwen2 model, and an optional language-modelling pass.

The tokenizer has Qwen2's normalizer and split pattern and Qwen's special tokens and chat template;
because it is a `Qwen2Tokenizer` over the trained vocabulary and merges, every loading path
(`AutoTokenizer`, TRL, vLLM) tokenizes the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from posttrain.data_io import read_jsonl
from posttrain.errors import UserError
from posttrain.training.config import trainer_args

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2.5's chat format (reference.md §2) without its tool-calling branches, and without a default
# system turn: the system prompt is a parameter, and an empty one gives the single-turn format.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def training_text(paths: list[Path]) -> list[str]:
    """The text of the prepared training files: warmstart query + completion, conversations as chat."""
    texts = []
    for path in paths:
        for row in read_jsonl(path):
            if "query" in row:
                texts.append(row["query"] + row["completion"] + "<|im_end|>")
            elif "messages" in row:
                texts.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in row["messages"]))
            else:
                raise UserError(f"{path}: rows have neither `query` nor `messages`")
    return texts


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE with Qwen2's pre-tokenization, returned as a `Qwen2Tokenizer`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer)
    trained = json.loads(bpe.to_str())["model"]  # the vocabulary and merges, in tokenizer.json's own layout
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=trained["vocab"], merges=merges, eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build(cfg, texts: list[str], seed: int):
    """Train the tokenizer and build a seeded `Qwen2ForCausalLM` from `cfg.config` (`Qwen2Config` fields); `cfg`
    also has `vocab_size`, the BPE vocabulary to train."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    try:
        config = Qwen2Config(
            vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **cfg.config,
        )
    except TypeError as err:
        raise UserError(f"params: base_model.config: {err}") from None
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config), tokenizer


def pretrain(model, tokenizer, texts: list[str], cfg, seed: int, workdir: Path) -> None:
    """A language-modelling pass over the training text, loss on every token; `cfg` has `max_steps`,
    `learning_rate`, `batch_size` and `max_length`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = trainer_args(SFTConfig, {
        "max_steps": cfg.max_steps, "learning_rate": cfg.learning_rate,
        "per_device_train_batch_size": cfg.batch_size, "max_length": cfg.max_length,
        "lr_scheduler_type": "cosine", "warmup_steps": min(100, cfg.max_steps // 10),
        "logging_steps": 50, "save_strategy": "no", "report_to": "none", "seed": seed,
        "dataset_text_field": "text", "packing": False,
    }, "base_model.pretrain", workdir)
    SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}),
               processing_class=tokenizer).train()

"""Tiny stand-ins for the paper profile's hub models and datasets, in the hub's own layouts.

    python -m tests.hub_standins DIR      # writes DIR/<owner>/<name> for every repo below

No hub is reachable here, so the paper profile is tested against these. Each one has what its hub repo
has, in the same files, so that every loading path the real one takes is taken:

- Qwen2.5 causal LMs (`Qwen/Qwen2.5-0.5B` as base; the 0.5B Instruct reference and the two teachers as
  Instruct models): a two-layer `Qwen2ForCausalLM` in bf16 safetensors, a byte-level BPE over Qwen2's
  split pattern with Qwen2.5's 22 special tokens, the real chat template (TRL's copy of it, which
  inserts a default system turn) inside `tokenizer_config.json` (the 3B teacher's in
  `chat_template.jinja`, as transformers 5 saves it), `<|endoftext|>` as the base model's eos and
  `<|im_end|>` as the Instruct models', and each repo's `generation_config.json` sampling defaults
  (which a generation stage must not inherit).
- `distilbert-base-uncased`: `DistilBertForMaskedLM` weights (no classification head), `vocab.txt`,
  safetensors and `pytorch_model.bin` both, as the hub has them.
- `OpenAssistant/reward-model-deberta-v3-large`: a `DebertaV2ForSequenceClassification` with one
  output, its weights ONLY as `pytorch_model.bin` (reference.md §7), and a SentencePiece `spm.model`.
- The four datasets as parquet under `data/<split>-0000k-of-0000n.parquet`, in their hub schemas and
  split names (Countdown's train split in two shards); the warmstart completions are a mix of right
  and wrong answers.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

QWEN_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
TINYZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer.\n"
    "User: Using the numbers {nums}, create an equation that equals {target}. You can use basic arithmetic "
    "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags. "
    "And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\n"
    "Assistant: Let me solve this step by step."
)
# name -> (hub id, instruct?, the repo's generation_config.json sampling defaults)
QWEN_MODELS = {
    "base": ("Qwen/Qwen2.5-0.5B", False, {"do_sample": False, "max_new_tokens": 2048}),
    "instruct": ("Qwen/Qwen2.5-0.5B-Instruct", True,
                 {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}),
    "math_1_5b": ("Qwen/Qwen2.5-Math-1.5B-Instruct", True,
                  {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}),
    "qwen_3b": ("Qwen/Qwen2.5-3B-Instruct", True,
                {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}),
}
DISTILBERT = "distilbert-base-uncased"
DEBERTA_RM = "OpenAssistant/reward-model-deberta-v3-large"
DATASETS = {
    "countdown": "Jiayi-Pan/Countdown-Tasks-3to4",
    "warmstart": "Asap7772/cog_behav_all_strategies",
    "smoltalk": "HuggingFaceTB/smol-smoltalk",
    "ultrafeedback": "HuggingFaceH4/ultrafeedback_binarized",
}
WORDS = ("the a answer question number list sort count letters words explain why how what write short poem about "
         "water fire sum of and is are in on to it be with please give me three two one five ten name city "
         "colour red blue green good bad yes no because so then first second last").split()


def qwen_chat_template() -> str:
    """Qwen2.5's chat template as the hub ships it (TRL keeps a byte-identical copy for identity checks)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _qwen_tokenizer(texts: list[str], instruct: bool):
    """The base_model stage's byte-level BPE over Qwen2's split pattern, dressed as Qwen2.5's tokenizer."""
    from posttrain.training.base_model import train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=600)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL[1:]})
    tokenizer.eos_token = "<|im_end|>" if instruct else "<|endoftext|>"
    tokenizer.model_max_length = 131072
    tokenizer.chat_template = qwen_chat_template()
    return tokenizer


def write_qwen(out: Path, texts: list[str], instruct: bool, sampling: dict, seed: int,
               template_file: bool = False) -> None:
    """A tiny Qwen2.5 repo; `template_file`: the chat template in `chat_template.jinja`, as repos saved by
    transformers 5 keep it, instead of inside `tokenizer_config.json` as the Qwen2.5 repos do."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tokenizer = _qwen_tokenizer(texts, instruct)
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         tie_word_embeddings=True, rope_theta=1000000.0, bos_token_id=endoftext,
                         eos_token_id=im_end if instruct else endoftext)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, pad_token_id=endoftext,
        eos_token_id=[im_end, endoftext] if instruct else endoftext, **sampling)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not template_file:
        _as_hub_tokenizer(out)


def _as_hub_tokenizer(out: Path) -> None:
    """The Qwen2.5 repos' tokenizer files: the chat template inside tokenizer_config.json, vocab.json, merges.txt."""
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["chat_template"] = (out / "chat_template.jinja").read_text()
    (out / "chat_template.jinja").unlink()
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    model = json.loads((out / "tokenizer.json").read_text())["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def _save_bin(model, out: Path) -> None:
    """`pytorch_model.bin`, the pickled state dict older hub repos hold (transformers 5 writes only safetensors)."""
    import torch

    model.config.save_pretrained(out)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, out / "pytorch_model.bin")


def write_distilbert(out: Path, texts: list[str]) -> None:
    """DistilBERT as the hub has it: masked-LM weights (no classification head), uncased WordPiece."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import DistilBertConfig, DistilBertForMaskedLM, DistilBertTokenizer

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special,
                                                                   show_progress=False))
    vocab = sorted(wordpiece.get_vocab().items(), key=lambda kv: kv[1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab))
    tokenizer = DistilBertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True, model_max_length=512)
    torch.manual_seed(1)
    model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(vocab), dim=32, hidden_dim=64, n_layers=2,
                                                   n_heads=2, max_position_embeddings=512,
                                                   pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(out)
    _save_bin(model, out)  # the hub repo holds both formats
    tokenizer.save_pretrained(out)


def write_deberta_rm(out: Path, texts: list[str]) -> None:
    """The OpenAssistant reward model's layout: a one-output DeBERTa-v2 classifier in `pytorch_model.bin` only,
    and DeBERTa-v3's SentencePiece tokenizer (`spm.model`, with the `tokenizer.json` made from it)."""
    import sentencepiece
    import torch
    from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

    out.mkdir(parents=True, exist_ok=True)
    corpus = out.parent / f".{out.name}.corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "spm"), vocab_size=400, model_type="unigram", pad_id=0, bos_id=1,
        eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
        user_defined_symbols=["[MASK]"], hard_vocab_limit=False, minloglevel=2)
    corpus.unlink()
    (out / "spm.vocab").unlink()
    # As the hub repo has it; transformers converts spm.model into the tokenizer.json saved beside it below
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": False, "model_max_length": 512,
        "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]",
        "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]", "split_by_punct": False}))
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(2)
    config = DebertaV2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=512, num_labels=1,
                             pad_token_id=tokenizer.pad_token_id, relative_attention=True, pos_att_type=["p2c", "c2p"],
                             position_biased_input=False, max_relative_positions=-1)
    model = DebertaV2ForSequenceClassification(config)
    _save_bin(model, out)
    tokenizer.save_pretrained(out)
    assert not list(out.glob("*.safetensors")), "the stand-in must hold only pytorch_model.bin"


def _write_split(folder: Path, split: str, rows: list[dict], shards: int = 1) -> None:
    """`data/<split>-0000k-of-0000n.parquet`, as the hub's parquet conversion names the shards of a split."""
    import datasets

    (folder / "data").mkdir(parents=True, exist_ok=True)
    size = -(-len(rows) // shards)
    for k in range(shards):
        datasets.Dataset.from_list(rows[k * size:(k + 1) * size]).to_parquet(
            folder / "data" / f"{split}-{k:05d}-of-{shards:05d}.parquet")


def write_datasets(root: Path, rng: random.Random) -> None:
    puzzles = []
    while len(puzzles) < 400:
        nums = [rng.randint(1, 30) for _ in range(rng.choice([3, 4]))]
        target = (nums[0] + nums[1]) * nums[2] + (nums[3] if len(nums) == 4 else 0)  # solvable, every number used
        puzzles.append({"target": target, "nums": nums})
    _write_split(root / DATASETS["countdown"], "train", puzzles, shards=2)  # rows read in order across shards

    def warm(i: int) -> dict:
        a, b, c = rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 9)
        right = i % 3 != 0  # the hub set's completions are not all correct
        answer = f"({a} + {b}) * {c}" if right else f"{a} + {b} + {c}"
        return {"query": TINYZERO.format(nums=[a, b, c], target=(a + b) * c),
                "completion": f" <think>{a} + {b} = {a + b}, times {c} is {(a + b) * c}.</think>\n"
                              f"<answer>{answer}</answer>"}

    _write_split(root / DATASETS["warmstart"], "train", [warm(i) for i in range(60)])
    _write_split(root / DATASETS["warmstart"], "test", [warm(i) for i in range(12)])

    def conv(user: str, answer: str) -> list[dict]:
        return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]

    smol = root / DATASETS["smoltalk"]
    for split, n in [("train", 80), ("test", 30)]:
        rows = []
        for i in range(n):
            system = [{"role": "system", "content": "You are a concise assistant."}] if i % 4 == 0 else []
            rows.append({"messages": [*system, *conv(_sentence(rng, 6) + "?", _sentence(rng, 10) + "."),
                                      *conv("And why?", _sentence(rng, 5) + ".")], "source": "smol-magpie-ultra"})
        _write_split(smol, split, rows)
    uf = root / DATASETS["ultrafeedback"]
    for split, n in [("train_prefs", 80), ("test_prefs", 30), ("train_sft", 20), ("test_sft", 10),
                     ("train_gen", 80), ("test_gen", 30)]:
        rows = []
        for i in range(n):
            prompt = _sentence(rng, 7) + "?"
            good, bad = _sentence(rng, 9) + ".", _sentence(rng, 3)
            chosen_score = float(rng.randint(6, 10))
            rows.append({"prompt": prompt, "prompt_id": f"{rng.getrandbits(256):064x}", "chosen": conv(prompt, good),
                         "rejected": conv(prompt, bad), "messages": conv(prompt, good),
                         "score_chosen": chosen_score, "score_rejected": float(rng.randint(1, int(chosen_score) - 1))})
        _write_split(uf, split, rows)


def write_standins(root: Path) -> dict[str, Path]:
    """Write every stand-in under `root/<hub id>`; return {short name: folder}."""
    rng = random.Random(0)
    text = [TINYZERO.format(nums=[rng.randint(1, 40) for _ in range(3)], target=rng.randint(1, 200))
            + f" <think>{rng.randint(1, 99)} + {rng.randint(1, 99)}</think>\n<answer>({rng.randint(1, 9)} + 2) * 3"
            "</answer>" for _ in range(200)]
    text += [_sentence(rng, 12) for _ in range(300)]
    folders = {}
    for seed, (name, (hub_id, instruct, sampling)) in enumerate(QWEN_MODELS.items()):
        folders[name] = root / hub_id
        write_qwen(folders[name], text, instruct, sampling, seed, template_file=name == "qwen_3b")
    folders["distilbert"] = root / DISTILBERT
    write_distilbert(folders["distilbert"], text)
    folders["deberta_rm"] = root / DEBERTA_RM
    write_deberta_rm(folders["deberta_rm"], text)
    write_datasets(root, rng)
    folders.update({name: root / hub_id for name, hub_id in DATASETS.items()})
    return folders


if __name__ == "__main__":
    for name, folder in write_standins(Path(sys.argv[1])).items():
        print(f"{name}: {folder}")

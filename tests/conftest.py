"""Shared fixtures: hub-schema stand-ins written as the hub lays them out, and a tiny base model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hub_standins import TINYZERO  # the warmstart `query` prompt (reference.md §2), for the fixtures

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent


def copy_repo(dest: Path) -> Path:
    """The project's files (tracked and new, not ignored) copied to `dest`, as a clone would have them."""
    import shutil
    import subprocess

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def write_hub_split(folder: Path, split: str, rows: list[dict]) -> None:
    """Write one split as the hub stores it: `data/<split>-00000-of-00001.parquet`."""
    import datasets

    (folder / "data").mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(folder / "data" / f"{split}-00000-of-00001.parquet")


@pytest.fixture
def countdown_hub(tmp_path: Path) -> Path:
    """`Jiayi-Pan/Countdown-Tasks-3to4`: one train split of (target, nums), 3 or 4 numbers."""
    rows = [{"target": 10 + i % 50, "nums": [i % 7 + 1, i % 5 + 2, 10 + i % 50 - (i % 7 + 1) - (i % 5 + 2)]}
            for i in range(300)]
    rows = [r for r in rows if r["nums"][2] > 0]
    write_hub_split(tmp_path / "countdown", "train", rows)
    return tmp_path / "countdown"


@pytest.fixture
def warmstart_hub(tmp_path: Path) -> Path:
    """`Asap7772/cog_behav_all_strategies`: train/test of (query, completion), some completions wrong."""
    def row(a: int, b: int, c: int, ok: bool) -> dict:
        answer = f"{a} + {b} + {c}" if ok else f"{a} * {b} * {c}"
        return {"query": TINYZERO.format(nums=[a, b, c], target=a + b + c),
                "completion": f" <think>{a} + {b} = {a + b}, then + {c}.</think>\n<answer>{answer}</answer>"}

    write_hub_split(tmp_path / "warmstart", "train", [row(i, i + 1, 2 * i + 3, i % 4 != 0) for i in range(1, 41)])
    write_hub_split(tmp_path / "warmstart", "test", [row(i, i + 2, 3, True) for i in range(50, 60)])
    return tmp_path / "warmstart"


@pytest.fixture
def instruct_hub(tmp_path: Path) -> tuple[Path, Path]:
    """SmolTalk (messages, source) and UltraFeedback binarized (prompt, chosen, rejected, scores, ...)."""
    def conv(user: str, answer: str) -> list[dict]:
        return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]

    smol = tmp_path / "smoltalk"
    write_hub_split(smol, "train", [
        {"messages": [{"role": "system", "content": "Be brief."}, *conv(f"Question {i}?", f"Answer {i}."),
                      *conv("And more?", "More.")], "source": "fixture"} for i in range(30)])
    write_hub_split(smol, "test", [{"messages": conv(f"Question {i}?", f"Answer {i}."), "source": "fixture"}
                                   for i in range(25, 35)])
    uf = tmp_path / "ultrafeedback"
    for split, start in [("train_prefs", 0), ("test_prefs", 100), ("train_gen", 0), ("test_gen", 100),
                         ("train_sft", 0), ("test_sft", 100)]:
        write_hub_split(uf, split, [
            {"prompt": f"Prompt {i}", "prompt_id": f"{i:064x}", "chosen": conv(f"Prompt {i}", "good"),
             "rejected": conv(f"Prompt {i}", "bad"), "messages": conv(f"Prompt {i}", "good"),
             "score_chosen": 8.0, "score_rejected": 3.0} for i in range(start, start + 20)])
    return smol, uf


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A two-layer Qwen2 with a tokenizer trained on Countdown text, saved like the base_model stage does."""
    from pipeline import params
    from posttrain.training.base_model import build

    texts = [f"Numbers: [{a}, {b}, 3]\nTarget: {a + b + 3}\n<answer>{a} + {b} + 3</answer><|im_end|>"
             for a in range(1, 30) for b in range(1, 20)]
    texts += ["<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\nhi<|im_end|>\n"] * 20
    cfg = params.BaseModel(source="build", revision=None, vocab_size=300, config={
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "max_position_embeddings": 256, "tie_word_embeddings": True},
        pretrain=params.Pretrain(max_steps=0, learning_rate=1e-3, batch_size=8, max_length=64))
    model, tokenizer = build(cfg, texts, seed=0)
    out = tmp_path_factory.mktemp("tiny") / "base"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory):
    """The smoke and paper `dvc repro` runs, started together (tests/pipeline_runs.py)."""
    from tests.pipeline_runs import PipelineRuns

    runs = PipelineRuns(tmp_path_factory.mktemp("pipelines"))
    yield runs
    runs.close()

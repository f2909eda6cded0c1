"""A forced rerun with the same inputs writes byte-identical model folders (so DVC's hashes do not change).

`save_trained` runs in two processes with different string hashing (`PYTHONHASHSEED`) and different
temporary trainer folders, as two runs of a stage have; every file of the full and the LoRA model
folders must have the same bytes. Before the fix, `training_args.bin` (holding the temporary folder)
and the adapter's `target_modules` order differed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # two processes that import torch, transformers and peft

SAVE = """\
import sys, tempfile
from pathlib import Path
from types import SimpleNamespace
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
from posttrain.training.config import lora_config, save_trained

base, out = Path(sys.argv[1]), Path(sys.argv[2])
for kind in ("full", "lora"):
    torch.manual_seed(0)  # the same LoRA initialisation, as a seeded rerun has
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if kind == "lora":
        import peft
        lora = SimpleNamespace(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        model = peft.get_peft_model(model, lora_config(lora))
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to="none")
    save_trained(Trainer(model=model, args=args), AutoTokenizer.from_pretrained(base), out / kind)
"""


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_saving_twice_writes_the_same_bytes(tiny_model, tmp_path):
    (tmp_path / "save.py").write_text(SAVE)
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"run{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, str(tmp_path / "save.py"), str(tiny_model), str(out)], env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        outs.append(files(out))
    first, second = outs
    assert "lora/adapter/adapter_config.json" in first and "full/model.safetensors" in first
    assert not [name for name in first if name.endswith("training_args.bin")]
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []

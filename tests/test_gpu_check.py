"""The GPU check (benchmarks/gpu_check.py) at its dry size: every method runs through the stages' code and
reports positive figures, and every paper stage it can estimate gets a positive time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check, gpu_estimates

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("tokens_per_s", "step_time_s", "tokens_per_step", "peak_memory_gib", "mfu", "seconds_per_unit")


def run_check(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "figures.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry", "--peak-tflops", "1",
                           "--out", str(out), *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "| method |" in proc.stdout and "ESTIMATE" in proc.stdout
    return json.loads(out.read_text())


def check_figures(result: dict) -> None:
    assert result["dry"] is True and result["n_params"] > 0
    assert list(result["methods"]) == list(gpu_check.METHODS)
    for method, m in result["methods"].items():
        assert "error" not in m, (method, m)
        for figure in FIGURES:
            assert m[figure] > 0, (method, figure, m[figure])
        assert m["steps_timed"] >= 1
    # each row filled to the dry length cap, each completion forced to its cap
    sizes = gpu_check.DRY
    assert result["methods"]["sft"]["tokens_per_step"] == (
        sizes.trainer["sft"]["per_device_train_batch_size"] * sizes.trainer["sft"]["max_length"])
    assert result["methods"]["generate"]["new_tokens_per_sequence"] == sizes.generate["max_new_tokens"]
    stages = {e["stage"] for e in result["estimates"]}
    assert {"sft_countdown", "sft_instruct", "dpo", "rloo_countdown", "generate_countdown@<model> (each)"} <= stages
    assert all(e["seconds"] > 0 and e["units"] > 0 for e in result["estimates"])


@pytest.mark.slow
def test_dry_run_reports_every_method_and_estimates_the_paper_stages(tmp_path):
    check_figures(run_check(tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs the dry size on it, in bf16")
def test_dry_run_on_the_gpu(tmp_path):
    result = run_check(tmp_path)
    check_figures(result)
    assert result["device"] != "CPU"


def test_the_written_out_config_has_the_published_parameter_count():
    """Qwen2.5-0.5B's model card: 0.49B parameters, 0.36B of them outside the (tied) embedding."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**gpu_check.QWEN2_5_0_5B))
    total = sum(p.numel() for p in model.parameters())
    assert total == 494_032_768
    assert round((total - model.get_input_embeddings().weight.numel()) / 1e9, 2) == 0.36


def test_estimates_scale_the_measured_time_per_unit_by_the_paper_stage():
    paper = {"instruct": {"sft_train": 1000, "prefs_train": 100, "gen_test": 200},
             "synthetic": {"n": 600}, "distill": {"prompts": 400},
             "countdown": {"n_eval": 1000},
             **{s: {"trainer": {"num_train_epochs": e}} for s, e in [
                 ("sft_countdown", 5), ("sft_synthetic", 5), ("sft_distill", 5), ("sft_instruct", 1),
                 ("sft_instruct_lora", 3), ("dpo", 1), ("dpo_lora", 3)]},
             **{s: {"held_out": 128, "trainer": {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 4,
                                                 "max_steps": 100, "eval_steps": 25, "eval_on_start": True,
                                                 "num_generations": 8}} for s in ("rloo_countdown", "grpo_countdown")},
             "generate": {"batch_size": 64, "greedy": {"max_new_tokens": 1024}, "instruct": {"max_new_tokens": 512},
                          "sweep": {"n": 10, "prompts": 1000, "max_new_tokens": 1024}}}
    measured = {"sft": {"seconds_per_unit": 0.01, "unit": "sequence"},
                "dpo": {"seconds_per_unit": 0.1, "unit": "pair"},
                "rloo": {"seconds_per_unit": 0.5, "unit": "completion"},
                "generate": {"seconds_per_unit": 30.0, "unit": "batch"},
                "sft_instruct": {"error": "OutOfMemoryError: ..."}}
    rows = {e["stage"]: e for e in gpu_estimates.estimates(paper, measured)}
    assert rows["sft_countdown"]["seconds"] == pytest.approx(gpu_estimates.WARMSTART_ROWS * 5 * 0.01)
    assert rows["sft_synthetic"]["units"] == (gpu_estimates.WARMSTART_ROWS + 600) * 5
    assert "sft_instruct" not in rows  # its method failed: no estimate, rather than a wrong one
    assert rows["sft_instruct_lora"]["units"] == 3000
    assert rows["dpo_lora"]["seconds"] == pytest.approx(300 * 0.1)
    # 100 steps of 64 completions, and held-out evaluations at steps 0, 25, 50, 75 and 100
    assert rows["rloo_countdown"]["units"] == 100 * 64 + 5 * 128 * 8
    assert rows["generate_countdown@<model> (each)"]["seconds"] == pytest.approx(16 * 30.0)
    assert rows["generate_instruct@<model> (each)"]["units"] == pytest.approx(4 * 0.5)
    assert "| sft_countdown | sft | 5,000 sequences | 0:00:50 |" in gpu_estimates.report(
        {"device": "X", "dry": False, "peak_tflops": 989.0, "n_params": 1e6, "estimates": list(rows.values()),
         "methods": {"sft_instruct": {"section": "sft_instruct", "error": "OutOfMemoryError: ..."}}})


def test_dataclasses_are_built_from_the_paper_profile_whatever_fields_they_gain():
    import yaml

    from pipeline import params

    greedy = yaml.safe_load(gpu_check.PAPER_PROFILE.read_text())["generate"]["greedy"]
    d = gpu_check.from_yaml(params.Decoding, {**greedy, "a_field_params_lacks": 1}, max_new_tokens=16)
    assert (d.n, d.temperature, d.max_new_tokens) == (greedy["n"], greedy["temperature"], 16)


@pytest.mark.parametrize("name, tflops", [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H200", 989),
                                          ("NVIDIA H100 PCIe", 756), ("NVIDIA A10G", None)])
def test_peak_flops_from_the_device_name(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert gpu_check.peak_flops(None) == (tflops and tflops * 1e12)
    assert gpu_check.peak_flops(500.0) == 500e12

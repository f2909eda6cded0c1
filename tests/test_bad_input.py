"""Bad input and a hostile environment: every user mistake is one line naming it, exit status 2, before any work.

Each case runs a real stage's `main` under `run_main` in a temporary folder holding an edited copy of
`params.yaml` (in-process, so the table stays fast; the offline case needs a fresh interpreter, since
`datasets` reads HF_HUB_OFFLINE on import). "Before any work" is checked by the stage's outputs not
existing afterwards.
"""

from __future__ import annotations

import copy
import errno
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pipeline import checks, params
from posttrain.errors import run_main
from tests.conftest import ROOT, write_hub_split

DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())
PREPARE = ["stages.prepare_countdown", "--out", "d", "--summary", "s.json"]
SMALL = {"train_rows": [0, 100], "eval_rows": [100, 140], "n_eval": 40, "warmstart_train": 50, "warmstart_test": 20}


def write_params(folder: Path, edit: Callable[[dict], None] | None = None) -> None:
    data = copy.deepcopy(DEFAULT)
    if edit:
        edit(data)
    (folder / "params.yaml").write_text(yaml.safe_dump(data))


def run_stage(folder: Path, argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run `python -m argv...` in-process in `folder`: (exit status, stderr)."""
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "argv", argv)
    module = importlib.import_module(argv[0])
    capsys.readouterr()
    try:
        run_main(module.main)
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    """The error line, checked to be the only one (progress bars aside) and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line and "/s]" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def refused(folder: Path, argv: list[str], monkeypatch, capsys, *names: str) -> str:
    code, err = run_stage(folder, argv, monkeypatch, capsys)
    line = one_line(err)
    assert code == 2, err
    for name in names:
        assert name in line, line
    return line


def sets(path: str, value) -> Callable[[dict], None]:
    """An edit setting the dotted `path` of params to `value`."""
    *parents, last = path.split(".")

    def edit(data: dict) -> None:
        for part in parents:
            data = data[part]
        data[last] = value
    return edit


# ------------------------------------------------------------------ params: nonsense refused before any work
@pytest.mark.parametrize(("path", "value"), [
    ("sft_countdown.trainer.learning_rate", -1e-4),
    ("base_model.pretrain.learning_rate", -0.1),
    ("dpo.trainer.per_device_train_batch_size", 0),
    ("reward_bt.trainer.per_device_eval_batch_size", 0),
    ("generate.greedy.max_new_tokens", 0),
    ("generate.teacher.n", 0),
    ("generate.batch_size", 0),
    ("rloo_countdown.trainer.temperature", 0.0),
    ("grpo_instruct.trainer.num_generations", 1),
    ("dpo.beta", 0.0),
    ("dpo_lora.beta", -0.1),
    ("sft_instruct.trainer.num_train_epochs", -1),
    ("sft_countdown.trainer.max_steps", 0),
    ("sft_countdown.trainer.learning_rate", "fast"),
    ("generate.instruct.temperature", -0.5),
    ("generate.teacher.top_p", 0.0),
    ("generate.sweep.top_p", 1.5),
    ("generate.sweep.temperatures", [0.7, 0.0]),
    ("countdown.n_eval", 0),
    ("countdown.n_eval", 2000),
    ("countdown.generator.num_count", [5, 5]),
    ("countdown.generator.low", 0),
    ("countdown.generator.target_low", 100_000),
    ("countdown.generator.high", 2),
    ("sft_instruct_lora.lora.dropout", 1.0),
    ("synthetic.n", -1),
    ("score.best_of", [1, 50]),
])
def test_a_nonsense_value_is_refused_before_any_work(tmp_path, monkeypatch, capsys, path, value):
    write_params(tmp_path, sets(path, value))
    # the message names the parameter (a `generator` setting: the section, whose settings conflict)
    name = path if not path.startswith("countdown.generator.") else "countdown.generator"
    refused(tmp_path, PREPARE, monkeypatch, capsys, name.removesuffix(".high"))
    assert not (tmp_path / "d").exists() and not (tmp_path / "s.json").exists()


def test_num_train_epochs_0_without_max_steps_trains_nothing_and_is_refused(tmp_path, monkeypatch, capsys):
    def edit(data):
        data["dpo"]["trainer"].pop("max_steps")
        data["dpo"]["trainer"]["num_train_epochs"] = 0
    write_params(tmp_path, edit)
    refused(tmp_path, PREPARE, monkeypatch, capsys, "dpo.trainer.num_train_epochs", "nothing would be trained")


@pytest.mark.parametrize(("template", "says"), [
    ("Target: {target}\n", "must name {nums} once"),
    ("{nums} {nums} {target}", "must name {nums} once, found it 2 times"),
    ("Numbers {nums} make {target} using {ops}", "has the field {ops}"),
    ("Numbers {nums:>20} make {target}", "has the field {nums:>20}"),
    ("Numbers {nums} make {target} {", "not a format template"),
])
def test_a_prompt_template_without_nums_or_with_an_unknown_field_is_refused(tmp_path, monkeypatch, capsys,
                                                                             template, says):
    write_params(tmp_path, sets("countdown.prompt_template", template))
    refused(tmp_path, PREPARE, monkeypatch, capsys, "countdown.prompt_template", says)


def test_a_template_with_literal_braces_renders_and_parses():
    from posttrain.prompts import countdown_prompt, countdown_query_pattern, parse_countdown_query

    template = 'Reply as {{"answer": ...}}. Numbers {nums}, target {target}.'
    checks.check_template(template, "t")
    query = countdown_prompt(template, [3, 4, 5], 12)
    assert query.startswith('Reply as {"answer": ...}.')
    assert parse_countdown_query(countdown_query_pattern(template), query) == ([3, 4, 5], 12)


def test_a_hand_written_1e_4_is_the_float_yaml_1_2_makes_it(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-4` as a string; params.yaml's loader reads it as the float, as OmegaConf does."""
    text = (ROOT / "params.yaml").read_text()
    text = text.replace("    learning_rate: 0.001\n", "    learning_rate: 1e-4\n")
    assert text.count("learning_rate: 1e-4") >= 2  # base_model.pretrain (a typed float) and trainer sections
    (tmp_path / "params.yaml").write_text(text)
    p = params.load(tmp_path / "params.yaml")
    assert p.base_model.pretrain.learning_rate == 1e-4
    assert p.sft_countdown.trainer["learning_rate"] == 1e-4 and isinstance(p.sft_countdown.trainer["learning_rate"],
                                                                           float)
    assert yaml.safe_load("x: 1e-4")["x"] == "1e-4"  # what the plain loader would have handed TRL


def test_constants_written_out_in_params_match_the_library():
    from posttrain import generation
    from posttrain.countdown import solver

    assert checks.MAX_NUMS == solver.MAX_NUMS
    assert checks.BACKENDS == generation.BACKENDS


def test_the_committed_profiles_pass_the_value_checks(tmp_path):
    from pipeline.compose_params import compose

    for profile in ("smoke", "embedded", "paper"):
        compose(tmp_path / f"{profile}.yaml", [f"profile={profile}"])
        params.load(tmp_path / f"{profile}.yaml")


def test_generator_settings_that_make_no_puzzle_end_in_one_line(tmp_path, monkeypatch, capsys):
    """Within the bound params can check, but only [20, 20, 20] reaches 8000: make_puzzle gives up after its draws."""
    def edit(data):
        data["countdown"].update(SMALL, train_rows=[0, 40], eval_rows=[40, 60], n_eval=10, warmstart_train=10,
                                 warmstart_test=5)
        data["countdown"]["generator"].update(target_low=7999, target_high=8000)
    write_params(tmp_path, edit)
    refused(tmp_path, PREPARE, monkeypatch, capsys, "countdown.generator", "widen the target range")


# ------------------------------------------------------------------ task files
def puzzles(n: int) -> list[dict]:
    """`n` distinct solvable 3-number puzzles (a + b + c)."""
    return [{"target": a + b + 3, "nums": [a, b, 3]} for a in range(1, 40) for b in range(a, 40)][:n]


@pytest.mark.parametrize(("row", "replace", "says"), [
    (5, {"target": 1000, "nums": [1, 1, 1]}, "row 5: unsolvable"),  # a training row the warmstart generator solves
    (5, {"target": 28, "nums": [1, 2, 3, 4, 5, 6, 7]}, "row 5: field `nums` has 7 numbers"),
    (120, {"target": 1000, "nums": [1, 1, 1]}, "row 120: unsolvable"),  # an evaluation row
    (120, {"target": 28, "nums": [1, 2, 3, 4, 5, 6, 7]}, "row 120: field `nums` has 7 numbers"),
])
def test_a_task_file_with_a_bad_puzzle_names_the_row(tmp_path, monkeypatch, capsys, row, replace, says):
    rows = puzzles(140)
    rows[row] = replace
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_params(tmp_path, lambda d: d["countdown"].update(SMALL, tasks_source="tasks.jsonl"))
    refused(tmp_path, PREPARE, monkeypatch, capsys, "tasks.jsonl", says)
    assert not (tmp_path / "d").exists()


def test_repeated_evaluation_rows_are_refused_not_shrunk(tmp_path, monkeypatch, capsys):
    """40 copies of one puzzle gave n_eval 40 -> 1 without a word."""
    rows = puzzles(100) + puzzles(101)[100:] * 40
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_params(tmp_path, lambda d: d["countdown"].update(SMALL, tasks_source="tasks.jsonl"))
    refused(tmp_path, PREPARE, monkeypatch, capsys, "tasks.jsonl", "hold 1 distinct puzzles", "n_eval=40")


# ------------------------------------------------------------------ hub-layout folders
def _folder(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / "countdown"
    write_hub_split(folder, "train", puzzles(140))
    parquet = folder / "data" / "train-00000-of-00001.parquet"
    jsonl = parquet.with_suffix(".jsonl")
    lines = [json.dumps(r).encode() + b"\n" for r in puzzles(140)]
    good = b"".join(lines)
    latin1 = b"".join(lines[:9]) + b'{"target": 5, "nums": [1, 4], "x": "caf\xe9"}\n' + b"".join(lines[9:])
    if kind.startswith("jsonl"):
        parquet.unlink()
        jsonl.write_bytes({"jsonl_truncated": good[:len(good) // 2 + 7], "jsonl_empty": b"", "jsonl_not_utf8": latin1}[kind])
    else:
        data = parquet.read_bytes()
        parquet.write_bytes(data[:len(data) // 2] if kind == "parquet_truncated" else b"")
    return folder


@pytest.mark.parametrize(("kind", "says"), [
    ("jsonl_truncated", "train-00000-of-00001.jsonl' with error <class 'pyarrow.lib.ArrowInvalid'>: JSON parse error"),
    ("jsonl_empty", "train-00000-of-00001.jsonl is empty (0 bytes)"),
    ("jsonl_not_utf8", "train-00000-of-00001.jsonl: row 9: not UTF-8 text"),
    ("parquet_truncated", "train-00000-of-00001.parquet' with error ArrowInvalid"),
    ("parquet_empty", "train-00000-of-00001.parquet is empty (0 bytes)"),
])
def test_a_bad_file_in_a_hub_layout_folder_is_named(tmp_path, monkeypatch, capsys, kind, says):
    folder = _folder(tmp_path, kind)
    write_params(tmp_path, lambda d: d["countdown"].update(SMALL, tasks_source=str(folder)))
    refused(tmp_path, PREPARE, monkeypatch, capsys, "countdown.tasks_source", says)


def test_a_local_jsonl_that_is_not_utf8_names_the_row(tmp_path):
    from posttrain.data_io import read_jsonl
    from posttrain.errors import UserError

    (tmp_path / "t.jsonl").write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(UserError, match=r"t.jsonl: row 1: not UTF-8 text"):
        read_jsonl(tmp_path / "t.jsonl")
    with pytest.raises(UserError, match=r": cannot read: Is a directory"):
        read_jsonl(tmp_path)


def test_offline_without_the_dataset_cached_says_how_to_get_it(tmp_path):
    write_params(tmp_path, lambda d: d["countdown"].update(SMALL, tasks_source="Jiayi-Pan/Countdown-Tasks-3to4"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_DATASETS_CACHE", None)
    result = subprocess.run([sys.executable, "-m", *PREPARE], cwd=tmp_path, capture_output=True, text=True, env=env,
                            check=False)
    line = one_line(result.stderr)
    assert result.returncode == 2
    assert "`countdown.tasks_source`='Jiayi-Pan/Countdown-Tasks-3to4': not in the local hub cache" in line
    assert "-S countdown.tasks_source=DIR" in line


# ------------------------------------------------------------------ models and backends
GENERATE = ["stages.generate", "--task", "countdown", "--prompts", "p.jsonl", "--decoding", "greedy", "--out", "o.jsonl"]


def test_a_model_folder_without_config_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "models" / "sft").mkdir(parents=True)
    (tmp_path / "models" / "sft" / "tokenizer.json").write_text("{}")
    refused(tmp_path, [*GENERATE, "--model", "models/sft"], monkeypatch, capsys,
            "models/sft: not a model folder, no config.json (from --model; found: tokenizer.json)")


def test_vllm_asked_for_but_not_installed_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")  # no weights, no tokenizer: the backend is checked first
    (tmp_path / "p.jsonl").write_text(json.dumps(puzzles(1)[0]) + "\n")
    write_params(tmp_path, sets("generate.backend", "vllm"))
    refused(tmp_path, [*GENERATE, "--model", "m"], monkeypatch, capsys, "generate.backend is vllm",
            "vLLM is not installed")
    assert not (tmp_path / "o.jsonl").exists()


# ------------------------------------------------------------------ a full disk, a read-only folder
def _prepared(tmp_path: Path, monkeypatch, capsys) -> dict[str, bytes]:
    write_params(tmp_path, lambda d: d["countdown"].update(SMALL))
    code, err = run_stage(tmp_path, PREPARE, monkeypatch, capsys)
    assert code == 0, err
    return {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}


def test_a_full_disk_is_one_line_and_the_previous_outputs_stay(tmp_path, monkeypatch, capsys):
    from posttrain import data_io

    before = _prepared(tmp_path, monkeypatch, capsys)
    write_params(tmp_path, lambda d: d["countdown"].update(SMALL, n_eval=30))  # new outputs, were there room
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(data_io.os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    refused(tmp_path, PREPARE, monkeypatch, capsys, "d/train.jsonl: cannot write: No space left on device",
            "the previous file is left as it was")
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before  # no temporary file left either


def test_a_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    from posttrain import data_io

    before = _prepared(tmp_path, monkeypatch, capsys)

    def read_only(dir, **kwargs):  # what mkstemp meets in a read-only folder (EROFS) or one not ours (EACCES)
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(data_io.tempfile, "mkstemp", read_only)
    refused(tmp_path, PREPARE, monkeypatch, capsys, "d/train.jsonl: cannot write: Read-only file system")
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_an_unwritable_output_folder_is_one_line(tmp_path, monkeypatch, capsys):
    before = _prepared(tmp_path, monkeypatch, capsys)
    (tmp_path / "d").chmod(0o555)
    try:
        refused(tmp_path, PREPARE, monkeypatch, capsys, "d/train.jsonl: cannot write: Permission denied")
    finally:
        (tmp_path / "d").chmod(0o755)
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before


def test_run_main_turns_a_refused_write_anywhere_into_one_line(capsys):
    def save_model():  # e.g. save_pretrained, which does not go through data_io
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "models/sft/model.safetensors")

    with pytest.raises(SystemExit) as stop:
        run_main(save_model)
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: models/sft/model.safetensors: No space left on device\n"

    def bug():
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):  # not the disk's doing: a traceback, as a bug should have
        run_main(bug)


# ------------------------------------------------------------------ two `dvc repro` at once
@pytest.mark.slow  # ~12 s: three DVC start-ups around a stage that sleeps long enough to be caught running
def test_a_second_dvc_repro_in_the_same_checkout_fails_cleanly_and_the_first_finishes(tmp_path):
    """DVC's locks keep a second `dvc repro` out while one runs: it stops with DVC's one message (the output
    is busy, or the repo lock is taken), and the first run finishes and writes its lock file whole."""
    def run(*command: str, **kwargs):
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False, **kwargs)

    assert run("git", "init", "-q").returncode == 0 and run("dvc", "init", "-q").returncode == 0
    (tmp_path / "in.txt").write_text("1\n")
    stage = ("import pathlib, time; pathlib.Path('started').touch(); time.sleep(5); "
             "pathlib.Path('out.txt').write_text(pathlib.Path('in.txt').read_text())")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"slow": {
        "cmd": f'{sys.executable} -c "{stage}"', "deps": ["in.txt"], "outs": ["out.txt"]}}}))
    first = subprocess.Popen(["dvc", "repro"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        for _ in range(300):  # the stage's command has started: the first run holds its locks
            if (tmp_path / "started").exists() or first.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        second = run("dvc", "repro")
    finally:
        first_out, _ = first.communicate(timeout=120)
    assert first.returncode == 0, first_out
    assert second.returncode != 0, second.stdout + second.stderr
    said = second.stdout + second.stderr
    assert "Traceback" not in said
    assert "is busy, it is being blocked by" in said or "Unable to acquire lock" in said, said
    assert (tmp_path / "out.txt").read_text() == "1\n"
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert lock["stages"]["slow"]["outs"][0]["path"] == "out.txt"
    assert run("dvc", "status", "-q").returncode == 0  # up to date: the first run's lock entry is whole

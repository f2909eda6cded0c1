"""Every file one stage writes and another reads has one definition, in `posttrain/schemas.py` (habit 12).

- No other module defines a row schema (a dict of field -> check) or a metrics key list of its own.
- Each inter-stage format's writer and each of its readers reach the definition: the module, or a
  library module it imports, names it from `posttrain.schemas`. The table below says who writes and
  who reads each format; a new reader or writer that describes the format itself fails the first check.
- A writer that breaks its own format fails loudly (`write_jsonl` with a schema), and a reader names
  the file, the row and the field.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from posttrain import data_io, schemas
from posttrain.errors import UserError
from tests.conftest import ROOT

CODE = sorted([*(ROOT / "posttrain").rglob("*.py"), *(ROOT / "stages").glob("*.py"), *(ROOT / "pipeline").glob("*.py")])

# format -> (writers, readers): stage or library modules, as dotted names
FORMATS = {
    "GENERATION": (["stages.generate", "stages.answer_instruct"],
                   ["stages.score_countdown", "stages.judges", "stages.distill", "posttrain.evaluation.win_rate"]),
    "COUNTDOWN_SCORE": (["stages.score_countdown"], []),
    "JUDGED": (["stages.judges"], ["posttrain.evaluation.win_rate"]),
    "OUTCOME": (["stages.score_countdown", "stages.judges"], ["stages.report"]),
    "COUNTDOWN_METRICS": (["stages.score_countdown"], ["stages.report"]),
    "WIN_RATE_METRICS": (["stages.judges"], ["stages.report"]),
    "TEXT_METRICS": (["stages.answer_instruct"], ["stages.report"]),
    "REWARD_MODEL_METRICS": (["stages.reward_model"], ["stages.report"]),
}


def _module_path(name: str) -> Path:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"


def _first_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("posttrain", "stages"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] in ("posttrain", "stages"))
    return {n for n in names if _module_path(n).is_file()}


def _names_schema(path: Path, name: str) -> bool:
    """`path` names `posttrain.schemas.<name>`: imported from schemas, or as `schemas.<name>`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "posttrain.schemas" and name in [a.name for a in node.names]:
            return True
        if isinstance(node, ast.Attribute) and node.attr == name and isinstance(node.value, ast.Name) \
                and node.value.id == "schemas":
            return True
    return False


def _reaches(module: str, name: str) -> bool:
    """`module`, or a first-party module it imports (transitively), names the schema."""
    todo, seen = [module], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        path = _module_path(m)
        if _names_schema(path, name):
            return True
        todo += [n for n in _first_party_imports(path) if n.split(".")[0] == "posttrain"]
    return False


def _is_check(node: ast.expr) -> bool:
    """A value that reads as a field check: a lambda, an `is_*`/`_is_*` function, or `SCHEMA["field"]`."""
    if isinstance(node, ast.Lambda):
        return True
    if isinstance(node, ast.Name):
        return node.id.lstrip("_").startswith("is_")
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_").startswith("is_")
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        owner = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
        return owner.isupper()  # a field of another schema (`ULTRAFEEDBACK["prompt"]`), not `row["query"]`
    return False


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_defines_a_row_schema_of_its_own(path: Path):
    if path == ROOT / "posttrain" / "schemas.py":
        return
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Dict) and node.keys and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                                            and k.value.isidentifier() for k in node.keys) \
                and all(_is_check(v) for v in node.values):
            keys = [k.value for k in node.keys]
            pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno}: a row schema {keys} defined here; "
                        "define it in posttrain/schemas.py and import it")
        if isinstance(node, ast.List) and len(node.elts) >= 3 \
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            keys = [e.value for e in node.elts]
            if "n" in keys and any(k.endswith("_ci") for k in keys):
                pytest.fail(f"{path.relative_to(ROOT)}:{node.lineno}: a metrics key list {keys} defined here; "
                            "use posttrain/schemas.py's")


@pytest.mark.parametrize("fmt", FORMATS)
def test_writers_and_readers_use_the_one_definition(fmt: str):
    writers, readers = FORMATS[fmt]
    assert hasattr(schemas, fmt)
    for module in writers + readers:
        assert _module_path(module).is_file(), f"{module}: no such module (update FORMATS)"
        role = "writes" if module in writers else "reads"
        assert _reaches(module, fmt), f"{module} {role} {fmt} but never names posttrain.schemas.{fmt}"


def test_a_writer_breaking_its_format_fails_and_writes_nothing(tmp_path: Path):
    out = tmp_path / "rows.jsonl"
    good = {"prompt_id": 0, "value": 1.0}
    data_io.write_jsonl(out, [good], schemas.OUTCOME)
    with pytest.raises(ValueError, match="row 1: field `value`"):
        data_io.write_jsonl(out, [good, {"prompt_id": 1, "value": "win"}], schemas.OUTCOME)
    assert [json.loads(line) for line in out.read_text().splitlines()] == [good]  # the old file stands


def test_a_reader_names_the_file_row_and_field(tmp_path: Path):
    path = tmp_path / "judged.jsonl"
    path.write_text(json.dumps({"prompt_id": 0, "sample": 0, "reward": 1.0, "judge": "x", "judge_model": None}) + "\n"
                    + json.dumps({"prompt_id": "a", "sample": 0, "reward": 1.0, "judge": "x", "judge_model": None}))
    with pytest.raises(UserError, match=r"judged.jsonl: row 1: field `prompt_id`"):
        data_io.read_jsonl(path, schemas.JUDGED)


@pytest.mark.parametrize("keys", [schemas.COUNTDOWN_METRICS, schemas.WIN_RATE_METRICS, schemas.TEXT_METRICS])
def test_check_metrics_names_the_missing_key(keys: list[str]):
    data = {k: [0.0, 1.0] if k.endswith("_ci") else 1.0 for k in keys}
    assert schemas.check_metrics(data, keys, "m.json") is None
    del data[keys[-1]]
    assert keys[-1] in schemas.check_metrics(data, keys, "m.json")

"""The house's layout holds (style habits 1, 11): library and stages apart, each stage a thin entry point.

- `stages/` holds only DVC entry points: each module is run by some `dvc.yaml` command, runs `main`
  under `__main__`, says its command line in its docstring, stays about 150 lines, and imports no
  other stage module (what two stages share lives in the library).
- `posttrain/` is the library: it imports neither `stages` nor `pipeline`, parses no arguments and
  reads no params file; everything it needs comes in as arguments.
- `pipeline/` holds what ties stages to `params.yaml` and is no stage: the params schema, the
  launcher, the composition.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

MAX_STAGE_LINES = 150
STAGES = sorted(p for p in (ROOT / "stages").glob("*.py") if p.name != "__init__.py")
LIBRARY = sorted((ROOT / "posttrain").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module an import in `path` names, anywhere (lazy imports included), made absolute."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _stage_commands() -> set[str]:
    """The stage modules `dvc.yaml`'s commands run (`python -m stages.X`, `pipeline.launch stages.X`)."""
    return set(re.findall(r"\bstages\.([a-z_]+)\b", (ROOT / "dvc.yaml").read_text()))


def test_the_three_folders_exist_and_hold_python():
    assert STAGES and LIBRARY and list((ROOT / "pipeline").glob("*.py"))


@pytest.mark.parametrize("path", STAGES, ids=lambda p: p.stem)
def test_each_stage_module_is_a_thin_entry_point(path: Path):
    source = path.read_text()
    assert path.stem in _stage_commands(), f"{path.name} is in stages/ but no dvc.yaml command runs it"
    assert 'if __name__ == "__main__":' in source, f"{path.name}: an entry point runs main under __main__"
    doc = ast.get_docstring(ast.parse(source)) or ""
    assert f"python -m stages.{path.stem}" in doc, f"{path.name}: its docstring must show its command line"
    lines = len(source.splitlines())
    assert lines <= MAX_STAGE_LINES, f"{path.name}: {lines} lines; move the reusable part into posttrain/"


@pytest.mark.parametrize("path", STAGES, ids=lambda p: p.stem)
def test_no_stage_imports_a_stage(path: Path):
    others = sorted(n for n in _imports(path) if n == "stages" or n.startswith("stages."))
    assert not others, f"{path.name} imports {others}: what two stages share belongs in posttrain/"


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_knows_no_stage_params_or_command_line(path: Path):
    names = _imports(path)
    bad = sorted(n for n in names if n.split(".")[0] in ("stages", "pipeline", "argparse"))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the library takes its values as arguments"
    constants = [n.value for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [c for c in constants if c.strip() == "params.yaml"], f"{path}: the library reads no params file"


def test_pipeline_modules_are_not_stages():
    assert not {p.stem for p in (ROOT / "pipeline").glob("*.py")} & {p.stem for p in STAGES}

"""Every stage's `deps` in dvc.yaml are what it reads, no less and no more, in every profile (style habit 13).

DVC reruns a stage when one of its deps changes, so a dep that is missing is a stale result nobody is
told about (and a wrong order in the DAG), and one that is not read is a needless rerun. The stages are
taken as DVC itself expands them (`foreach`, `matrix`, `${...}` from params.yaml), for the default
profile (the committed params.yaml) and for the paper profile (composed into a copy of the repo). For
each stage, what it reads is:

- modules: every first-party module its command runs (each `python -m stages.X`; `pipeline.launch
  stages.Y` runs both) and, transitively, every first-party module those import, read with `ast`
  anywhere in the file, so a lazy import inside a function counts. First-party packages are the
  repo's top-level folders with an `__init__.py`, less tests/ and benchmarks/. A package's
  `__init__.py` that holds only a docstring is neither required nor an extra.
- paths its command names: each argument that is a path of the repo, i.e. it exists, or it is, holds
  or lies in some stage's out, or it starts with a folder DVC manages (`DATA_ROOTS`). The stage's own
  outs (`--out`, `--summary`, `--scores`, `--metrics`, `--union`, ...) are not inputs, nor is what lies
  in them; nor are the DVCLive folders `--live metrics/train/<stage>`, which hold only its own outs. A
  named folder of other stages' outs (`--judged data/judged`; the report's `--metrics metrics`, which
  also holds its own metrics/report) stands for those outs, less the stage's own and those of stages
  after it in the DAG (prepare_countdown's `--out data/countdown` also holds synthetic's outs).
- paths its params name: each string, anywhere under a key the stage declares in `params:`, that is a
  path of the repo by the same rule (`distill.student: models/sft_countdown`, `evaluation.reference`).

A dep covers itself and every path under it: a folder dep (the report's `metrics/countdown`) covers
each file in it, so a coarser folder dep is fine where it keeps dvc.yaml readable. A dep is justified
when it is a module above, covers a required path, or lies under a named folder (a finer dep). Named
paths that are not inputs are listed in `NOT_INPUTS`, each with its reason.

Modules take their paths from the command line only: `test_no_module_hard_codes_a_data_path` fails on
a module that names a path under a DVC-managed folder, which no dep could track.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import os
import posixpath
import re
import shlex
import shutil
import subprocess
from contextlib import chdir
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

# Top-level folders whose contents DVC makes or keeps (outs, caches): a string starting with one of them
# is a path of the repo even where it is nobody's out yet (a typo in params is then a missing dep, not a
# silently ignored string).
DATA_ROOTS = ("data", "models", "metrics", "cache")

# Named paths that are not inputs: (stage, what, reason). `stage` is a glob over the stage's name
# (`judge_instruct@checker-base`); `what` is a glob over the path or over its source, `param:<key>`
# for a string found under a params key. An entry no profile uses fails `test_allowlist_is_used`.
NOT_INPUTS = [
    ("*", "param:evaluation.judges.*.cache",
     "an API judge's response cache (paper: cache/judges.sqlite) is state a rerun must keep: it memoises "
     "answers that do not change, and as a dep every judge stage would rerun when any other wrote to it"),
    ("report", "param:evaluation.reference",
     "the report prints the reference model's name from `evaluation`; it never loads the model"),
    ("report", "metrics/data/*",
     "handed `--metrics metrics`, the report reads its countdown, instruct, instruct_text, "
     "reward_model and train folders; the data summaries metrics/data/*.json are for people, the report never "
     "opens them"),
    ("report", "metrics/train_seeds/*",
     "the replicates' training curves (train_seeds) are for people; the report reads the replicates' scores"),
]

NOT_PACKAGES = {"tests", "benchmarks"}  # first-party by location, but no stage may import them


# ---------------------------------------------------------------------------------------------- modules


def first_party(root: Path) -> set[str]:
    """Top-level packages of the repo a stage may import: folders with an `__init__.py`."""
    return {p.parent.name for p in root.glob("*/__init__.py")} - NOT_PACKAGES


def module_file(root: Path, name: str, packages: set[str]) -> Path | None:
    """The file of first-party module `name` (`stages.sft` -> stages/sft.py), or None."""
    parts = name.split(".")
    if parts[0] not in packages or not all(p.isidentifier() for p in parts):
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def imported_names(root: Path, path: Path) -> frozenset[str]:
    """Every module name an `import` anywhere in `path` may load, with the packages above each."""
    tree = ast.parse(path.read_text(), filename=str(path))
    this = _module_name(root, path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from . import x`, `from .x import y`
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from stages import params`
    for name in list(names):
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(names)


def module_closure(root: Path, entries: set[str]) -> set[Path]:
    """The files of `entries` and of every first-party module they import, transitively."""
    packages = first_party(root)
    todo = [f for f in (module_file(root, e, packages) for e in entries) if f]
    for entry in list(entries):  # running `stages.sft` imports the package `stages` first
        todo += [f for f in (module_file(root, ".".join(entry.split(".")[:i]), packages)
                             for i in range(1, entry.count(".") + 1)) if f]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [f for f in (module_file(root, n, packages) for n in imported_names(root, path)) if f]
    return seen


@functools.cache
def docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in body)


# ------------------------------------------------------------------------------------------------ paths


def _under(path: str, folder: str) -> bool:
    """`path` is `folder` or lies in it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _rel(root: Path, wdir: str, path: str) -> str:
    return posixpath.normpath(os.path.relpath(os.path.join(wdir, path), root)).replace(os.sep, "/")


@dataclass
class Stage:
    """One expanded stage, its paths relative to the repo root."""

    name: str
    cmd: str
    wdir: str
    deps: list[str]
    outs: list[str]
    params: dict[str, object]  # declared key -> its value


@dataclass
class Finding:
    """What one stage reads (`required`) and what of it its deps lack, or list beyond it."""

    stage: str
    required: set[str] = field(default_factory=set)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    allowed: list[tuple[str, str, str]] = field(default_factory=list)  # (NOT_INPUTS `what`, source, path)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _lookup(tree: dict, key: str):
    """The value of a dotted params key (`generate.sweep.prompts`)."""
    for part in key.split("."):
        tree = tree[int(part)] if isinstance(tree, list) else tree[part]
    return tree


def expand(root: Path) -> list[Stage]:
    """The stages of `root`/dvc.yaml as DVC expands them (no data needs to exist)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    stages = []
    files: dict[str, dict] = {}  # params files, read once (DVC's own `read_params` parses one per stage)
    config = None if (root / ".git").exists() else {"core": {"no_scm": True}}
    with Repo(str(root), config=config) as repo:
        for s in repo.index.stages:
            if not isinstance(s, PipelineStage):
                continue
            params: dict[str, object] = {}
            deps = []
            for d in s.deps:
                if isinstance(d, ParamsDependency):  # params.yaml and the keys the stage declares
                    path = _rel(root, s.wdir, d.def_path)
                    if path not in files:
                        files[path] = yaml.load((root / path).read_text(), Loader=_LOADER) or {}
                    for key in d.params or list(files[path]):
                        params[key] = _lookup(files[path], key)
                else:
                    deps.append(_rel(root, s.wdir, d.def_path))
            cmd = " && ".join(s.cmd) if isinstance(s.cmd, list) else s.cmd
            stages.append(Stage(s.name, cmd, s.wdir, deps, [_rel(root, s.wdir, o.def_path) for o in s.outs],
                                params))
    return stages


def _strings(value, key: str):
    """(dotted key, string) for every string in a params value."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{key}.{i}")


def _not_input(stage: str, source: str, path: str) -> str | None:
    for stage_glob, what, _ in NOT_INPUTS:
        if fnmatch.fnmatchcase(stage, stage_glob) and (fnmatch.fnmatchcase(source, what)
                                                       or fnmatch.fnmatchcase(path, what)):
            return what
    return None


def downstream_outs(stages: list[Stage]) -> dict[str, set[str]]:
    """For each stage, the outs of the stages that run after it in the DAG its deps declare."""
    after = {s.name: {t.name for t in stages if t is not s and any(_under(d, o) or _under(o, d)
                                                                  for d in t.deps for o in s.outs)}
             for s in stages}
    outs = {s.name: s.outs for s in stages}
    result = {}
    for s in stages:
        seen, todo = set(), list(after[s.name])
        while todo:
            if (t := todo.pop()) not in seen:
                seen.add(t)
                todo += after[t]
        result[s.name] = {o for t in seen for o in outs[t]}
    return result


def check(root: Path) -> list[Finding]:
    """For every stage of `root`/dvc.yaml, what it reads and how its deps differ from that."""
    stages = expand(root)
    packages = first_party(root)
    all_outs = sorted({o for s in stages for o in s.outs})

    def repo_path(text: str, wdir: str) -> str | None:
        """`text` as a path relative to the root, when it is a path of the repo."""
        if not text or any(c.isspace() for c in text) or "://" in text or text.startswith("-"):
            return None
        path = _rel(root, wdir, text)
        if path == "." or path.startswith("../") or os.path.isabs(text):
            return None
        if (path.split("/")[0] in DATA_ROOTS or (root / path).exists()
                or any(_under(o, path) or _under(path, o) for o in all_outs)):
            return path
        return None

    later = downstream_outs(stages)
    findings = []
    for s in stages:
        f = Finding(s.name)
        entries, named = set(), []  # named: (source, path)
        for part in s.cmd.split("&&"):
            for token in shlex.split(part):
                value = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
                if module_file(root, value, packages):
                    entries.add(value)
                elif (path := repo_path(value, s.wdir)) is not None:
                    named.append(("cmd", path))
        for key, value in s.params.items():
            for subkey, text in _strings(value, key):
                if (path := repo_path(text, s.wdir)) is not None:
                    named.append((f"param:{subkey}", path))

        modules = module_closure(root, entries)
        justified = {_rel(root, str(root), str(m)) for m in modules}
        f.required = {m for m in justified if not (m.endswith("__init__.py") and docstring_only(root / m))}
        folders = []  # named paths that are folders: a finer dep in one is justified
        for source, path in named:
            if any(_under(path, o) for o in s.outs):
                continue  # one of its own outs
            if (what := _not_input(s.name, source, path)) is not None:
                f.allowed.append((what, source, path))
                continue
            holds_own = any(_under(o, path) for o in s.outs)
            if holds_own or (not any(_under(path, o) for o in all_outs)
                             and any(_under(o, path) for o in all_outs) and not (root / path).is_file()):
                # a folder of other stages' outs: they are what it reads, less its own outs and those of
                # the stages after it (prepare_countdown's `--out data/countdown` holds synthetic's out)
                for o in all_outs:
                    if _under(o, path) and not any(_under(o, own) for own in s.outs) and o not in later[s.name]:
                        if (what := _not_input(s.name, source, o)) is not None:
                            f.allowed.append((what, source, o))
                        else:
                            f.required.add(o)
            else:
                f.required.add(path)
                if not (root / path).is_file():
                    folders.append(path)

        f.missing = sorted(r for r in f.required if not any(_under(r, d) for d in s.deps))
        f.extra = sorted(d for d in s.deps if any(_under(d, o) for o in s.outs) or (
            d not in justified and not any(_under(r, d) for r in f.required)
            and not any(_under(d, p) for p in folders)))
        findings.append(f)
    return findings


def describe(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        if f.missing:
            lines.append(f"{f.stage}: missing {', '.join(f.missing)}")
        if f.extra:
            lines.append(f"{f.stage}: not read {', '.join(f.extra)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- copies


def copy_repo(dest: Path) -> Path:
    """The files git would commit (tracked, and untracked but not ignored), copied to `dest`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def composed_copy(dest: Path, overrides: list[str]) -> Path:
    """A copy of the repo whose params.yaml is composed with `overrides` (`profile=paper`, ...)."""
    from pipeline.compose_params import compose

    copy_repo(dest)
    with chdir(dest):  # compose reads conf/ relative to the working directory
        compose(dest / "params.yaml", overrides)
    return dest


def paper_copy(dest: Path) -> Path:
    """A copy of the repo whose params.yaml is the paper profile's."""
    return composed_copy(dest, ["profile=paper"])


# The replicate stages of `train_seeds` exist only when it lists seeds (none by default): checked with two.
VARIANTS = {"default": [], "paper": ["profile=paper"], "seeds": ["train_seeds=[1,2]"],
            "paper-seeds": ["profile=paper", "train_seeds=[1,2]"]}


@pytest.fixture(scope="module")
def findings(tmp_path_factory) -> dict[str, list[Finding]]:
    return {name: check(ROOT) if not overrides else check(composed_copy(tmp_path_factory.mktemp(name), overrides))
            for name, overrides in VARIANTS.items()}


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("profile", list(VARIANTS))
def test_every_stage_depends_on_what_it_reads(findings, profile):
    wrong = describe(findings[profile])
    assert not wrong, f"dvc.yaml deps ({profile} profile) differ from what the stages read:\n{wrong}"


def test_the_checker_sees_modules_and_params(findings):
    """Spot checks that the rules find what they claim: a lazy import, a launched module, a params path."""
    by_name = {f.stage: f for f in findings["default"]}
    prepare = by_name["prepare_instruct"].required
    assert {"posttrain/instruct/tasks.py", "posttrain/instruct/families.py", "posttrain/errors.py"} <= prepare
    sft = by_name["sft_distill@synthetic"].required
    assert {"pipeline/launch.py", "stages/sft.py", "models/sft_countdown", "data/distill/synthetic.jsonl"} <= sft
    assert "stages/__init__.py" not in sft


def test_removing_the_judge_model_dep_is_caught(tmp_path):
    """The reward-model judge reads `models/<judge>`: without that dep its verdicts would go stale."""
    copy = copy_repo(tmp_path)
    spec = yaml.safe_load((copy / "dvc.yaml").read_text())
    stage = spec["stages"]["judge_instruct_rm"]
    assert "models/${item.judge}" in stage["deps"]
    stage["deps"] = [d for d in stage["deps"] if d != "models/${item.judge}"]  # a copy: anchors may share it
    (copy / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    judges = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluation"]["reward_judges"]
    findings = [f for f in check(copy) if f.stage.startswith("judge_instruct_rm@")]
    assert findings
    for f in findings:
        judge = next(j for j in judges if f.stage.startswith(f"judge_instruct_rm@{j}-"))
        assert f"models/{judge}" in f.missing, f.stage
    assert f"judge_instruct_rm@{judges[0]}-" in describe(findings)


def test_allowlist_is_used(findings):
    """Each NOT_INPUTS entry still matches a named path in some profile (a stale entry would hide one)."""
    used = {what for fs in findings.values() for f in fs for what, _, _ in f.allowed}
    assert {what for _, what, _ in NOT_INPUTS} <= used


# Strings such as `"models/"` alone (a prefix a module tests paths against) are no path; `models/base`,
# `f"data/{name}.jsonl"` are.
HARD_CODED = re.compile(rf"^(\./)?({'|'.join(DATA_ROOTS)})/[^/\s]")


def hard_coded_paths(path: Path) -> list[str]:
    """String constants and f-strings in `path` (docstrings aside) that name a path under DATA_ROOTS."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value
        else:
            continue
        if HARD_CODED.match(text):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    return found


def test_no_module_hard_codes_a_data_path():
    """Paths live only in dvc.yaml: a module that opens `data/...` itself reads what no dep tracks."""
    modules = sorted(p for pkg in first_party(ROOT) for p in (ROOT / pkg).rglob("*.py"))
    assert modules
    found = [hit for p in modules for hit in hard_coded_paths(p)]
    assert not found, "modules name data paths (pass them on the command line instead):\n" + "\n".join(found)

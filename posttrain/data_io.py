"""Reading datasets from the hub or local files in their hub schemas, and writing JSONL atomically.

Every dataset the pipeline reads comes from a hub id or a local file (JSONL or parquet) or folder,
through `datasets.load_dataset`. Each row is checked against the dataset's schema; a row that
breaks it stops the stage with the file, the row and the field. A hub that cannot be reached fails
at once with the dataset's id and how to point the parameter at a local copy, instead of hanging in
the libraries' retries.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from posttrain.errors import UserError
from posttrain.schemas import Check

_LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def validate(rows: Iterable[dict[str, Any]], schema: dict[str, Check], where: str) -> list[dict[str, Any]]:
    """Return the rows reduced to the schema's fields, or raise naming `where`, the row and the field."""
    kept = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"{where}: row {index}: not a record")
        for field, check in schema.items():
            if field not in row:
                raise UserError(f"{where}: row {index}: missing field `{field}`")
            if not check(row[field]):
                raise UserError(f"{where}: row {index}: field `{field}` has a bad value {str(row[field])[:80]!r}")
        kept.append({field: row[field] for field in schema})
    return kept


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One TCP connect to the hub's endpoint: seconds, where the libraries would retry for minutes."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def require_hub(repo_id: str, kind: str, parameter: str, revision: str | None = None) -> None:
    """Fail at once, naming the repo and the parameter, when the hub is needed but unreachable.

    With `HF_HUB_OFFLINE=1` the libraries read their local cache instead, so no check is made.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1" or _hub_reachable():
        return
    repo_type = "dataset " if kind == "dataset" else ""
    at = f" --revision {revision}" if revision else ""
    raise UserError(
        f"cannot reach the Hugging Face hub for {kind} `{repo_id}`. Download it on a machine that can "
        f"(`hf download {repo_id} --repo-type {kind}{at} --local-dir DIR`), copy DIR here and run with "
        f"`-S {parameter}=DIR`, or set HF_HUB_OFFLINE=1 if it is in the local cache. ({repo_type}id: {repo_id})"
    )


# A source starting with one of these is a local path, never a hub id, whether it exists or not.
_PATH_PREFIXES = ("/", "./", "../", "~", "models/", "data/")
# A hub repo id: `name` or `owner/name` (letters, digits, `-`, `_`, `.`), as huggingface_hub validates it.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def require_model_dir(path: str | Path, parameter: str) -> Path:
    """`path` as an existing model folder, or a one-line `UserError` naming it and where it came from.

    A stage handed a folder must never fall through to the hub: `from_pretrained("models/x")` on a
    missing folder would try to download a repo of that name.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such model folder (from {parameter})")
    if not (path / "config.json").is_file():  # an empty or half-copied folder: from_pretrained's error is pages
        found = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
        raise UserError(f"{path}: not a model folder, no config.json (from {parameter}; found: {found})")
    return path


def is_local(source: str) -> bool:
    """A source names a local path when it looks like one or exists; otherwise it is a hub id."""
    return source.startswith(_PATH_PREFIXES) or Path(source).exists()


def hub_or_folder(source: str, parameter: str) -> Path | None:
    """The model folder `source` names (it must exist), or None for a hub id (checked for its form)."""
    if is_local(source):
        if not Path(source).is_dir():  # what the folder holds is checked by the reader (pull: every file it needs)
            raise UserError(f"{Path(source)}: no such model folder (from {parameter})")
        return Path(source)
    if not _HUB_ID.fullmatch(source) or ".." in source:
        raise UserError(f"`{parameter}`={source!r}: neither an existing folder nor a hub id (`owner/name`)")
    return None


SOURCE_RECORD = "source.json"  # in a model folder copied from the hub or a folder: where it came from


def source_record(source: str, revision: str | None, commit: str | None, local: Path | None) -> dict[str, Any]:
    """What `SOURCE_RECORD` holds: the id, the revision asked for, and the commit the files came from
    (None where unknown); a local folder's own record, if it has one, as `upstream`."""
    if local is None:
        return {"id": source, "revision": revision, "commit": commit, "from": "hub"}
    upstream = local / SOURCE_RECORD
    return {"id": str(local), "revision": revision, "commit": None, "from": "local folder",
            "upstream": json.loads(upstream.read_text()) if upstream.is_file() else None}


def load_rows(source: str, split: str, schema: dict[str, Check], parameter: str,
              revision: str | None = None) -> list[dict[str, Any]]:
    """Load one split of a dataset from a hub id, a local file or a local folder, and validate it.

    A local file is one split by itself; a folder or a hub id is read with `split`. `revision` (a
    commit, tag or branch; None for the default branch) applies to a hub id; a local copy is what it is.
    """
    import datasets

    path = Path(source)
    logged: list[str] = []
    try:
        with _datasets_errors(logged):
            rows, where = _load(datasets, source, split, parameter, revision, schema)
            # inside: Arrow decodes a string column's bytes only when the rows are read
            return rows if where is None else validate(rows, schema, where)
    except UserError:
        raise
    except ConnectionError as err:  # datasets, offline (HF_HUB_OFFLINE=1) with the dataset not in its cache
        at = f" --revision {revision}" if revision else ""
        raise UserError(f"`{parameter}`={source!r}: not in the local hub cache, and the hub is not read "
                        f"({' '.join(str(err).split())}); run once with the hub reachable, or download it "
                        f"(`hf download {source} --repo-type dataset{at} --local-dir DIR`) and set "
                        f"`-S {parameter}=DIR`") from None
    except (FileNotFoundError, ValueError, StopIteration, datasets.exceptions.DatasetNotFoundError,
            datasets.exceptions.DatasetGenerationError) as err:
        raise UserError(f"`{parameter}`={source!r}, split {split!r}: cannot load: "
                        f"{_load_failure(path, err, logged)}") from None


def _load(datasets, source: str, split: str, parameter: str, revision: str | None,
          schema: dict[str, Check]) -> tuple[Any, str | None]:
    """(rows, where to name in a row's error); where is None when the rows are validated already."""
    path = Path(source)
    if path.is_file():
        if path.suffix not in _LOCAL_SUFFIXES:
            raise UserError(f"{source}: `{parameter}` must be a .jsonl, .json or .parquet file or a folder")
        if path.suffix == ".jsonl":  # read as written: Arrow's JSON reader would coerce a "5" into 5
            return read_jsonl(path, schema), None
        return datasets.load_dataset(_LOCAL_SUFFIXES[path.suffix], data_files=str(path), split="train"), str(path)
    if is_local(source):
        if not path.is_dir():
            raise UserError(f"{source}: no such file or folder (from `{parameter}`)")
        return datasets.load_dataset(source, split=split), f"{source} [{split}]"
    require_hub(source, "dataset", parameter, revision)
    rows = datasets.load_dataset(source, split=split, revision=revision)
    return rows, f"{source}@{revision} [{split}]" if revision else f"{source} [{split}]"


@contextlib.contextmanager
def _datasets_errors(logged: list[str]):
    """Collect the error lines `datasets` logs while loading instead of printing them.

    Its loaders log the file and row of a bad data file ("Failed to load JSON from file '...' ... in row
    150") and then raise an error that names neither; the logged line goes into the one-line error instead.
    Other records (warnings: "Using the latest cached version ...") are printed as before.
    """
    import logging

    logger = logging.getLogger("datasets")
    printers = list(logger.handlers)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                logged.append(" ".join(record.getMessage().split()))
            else:
                for printer in printers:
                    printer.handle(record)

    collect = Collect()
    for printer in printers:
        logger.removeHandler(printer)
    logger.addHandler(collect)
    try:
        yield
    finally:
        logger.removeHandler(collect)
        for printer in printers:
            logger.addHandler(printer)


def _load_failure(path: Path, err: BaseException, logged: list[str]) -> str:
    """What went wrong loading a dataset, in one line: the file (and row) where `datasets` said, else the error."""
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        empty = [f for f in files if f.stat().st_size == 0]
        if empty:
            return f"{empty[0]} is empty (0 bytes)"
        if not logged:  # Arrow's decoding error names neither the file nor the row
            for f in files:
                if f.suffix in (".jsonl", ".json"):
                    try:
                        read_jsonl(f)
                    except UserError as bad:
                        return str(bad)
    if logged:
        return logged[-1]
    if isinstance(err, StopIteration):  # datasets' loaders, on a data file that holds no row
        return "a data file holds no rows"
    cause = err.__cause__ if isinstance(err.__cause__, Exception) else err
    return " ".join(str(cause).split())[:300] or type(cause).__name__


def read_jsonl(path: str | Path, schema: dict[str, Check] | None = None) -> list[dict[str, Any]]:
    """Read a JSONL file the pipeline wrote (or a user supplied), validating it when a schema is given."""
    rows = []
    try:
        with open(path, "rb") as f:
            for index, raw in enumerate(f):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise UserError(f"{path}: row {index}: not UTF-8 text ({err.reason} at byte {err.start} of the "
                                    "row)") from None
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise UserError(f"{path}: row {index}: not valid JSON: {err}") from None
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except OSError as err:  # a folder, a file without read permission
        raise UserError(f"{path}: cannot read: {err.strerror}") from None
    return validate(rows, schema, str(path)) if schema is not None else rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]], schema: dict[str, Check] | None = None) -> int:
    """Write rows as JSONL through a temporary file, so a crash never leaves a half-written file. With a
    schema, each row is checked against it first: a writer that breaks its own format fails loudly."""
    if schema is not None:
        rows = list(rows)
        for index, row in enumerate(rows):
            bad = [f for f, check in schema.items() if f not in row or not check(row[f])]
            if bad:
                raise ValueError(f"{path}: row {index}: field `{bad[0]}` breaks the schema ({row.get(bad[0])!r})")
    return _write_atomic(Path(path), lambda f: sum(f.write(json.dumps(row) + "\n") > 0 for row in rows))


def write_json(path: str | Path, data: Any) -> None:
    """Write one JSON document atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_metrics(path: str | Path, data: dict[str, Any], keys: list[str]) -> None:
    """Write a flat metrics JSON after checking it holds `keys` (a `schemas` list): a writer that breaks
    the format its reader expects fails here, not in the report."""
    from posttrain.schemas import check_metrics

    problem = check_metrics(data, keys, str(path))
    if problem:
        raise ValueError(problem)
    write_json(path, data)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    _write_atomic(Path(path), lambda f: f.write(text))


def _write_atomic(path: Path, write: Callable[[Any], int]) -> int:
    """Write through a temporary file renamed over `path`: a failed write (a full disk, a read-only
    folder) leaves the previous file as it was and stops the stage with one line naming `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"{path}: cannot write: {err.strerror} ({err.filename})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            result = write(f)
        os.replace(tmp, path)
    except BaseException as err:
        os.unlink(tmp)
        if isinstance(err, OSError):
            raise UserError(f"{path}: cannot write: {err.strerror or err}; the previous file is left as it was") \
                from None
        raise
    return result

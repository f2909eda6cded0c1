"""Pull a model from the Hugging Face hub into a folder that DVC tracks (paper: the distillation teachers).

    python -m stages.pull_model --id Qwen/Qwen2.5-3B-Instruct --out models/hub/qwen_3b

Only the files transformers (and vLLM) load a model and its tokenizer from are kept: the config,
the generation config, the safetensors weights and index, and the tokenizer files; no README,
LICENSE, `.bin` duplicates or other formats. `--id` is a hub id (from `hub_models.<name>`) or a local
folder, copied the same way. The files go to a temporary folder next to `--out`, renamed at the end,
so an interrupted pull never leaves a folder that looks finished. An unreachable hub fails within
seconds with the id and how to use a local copy; with `HF_HUB_OFFLINE=1` the hub cache is read.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from stages.data_io import require_hub
from stages.errors import UserError, run_main

MODEL_FILES = [
    "config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
    "added_tokens.json", "tokenizer.model", "chat_template.jinja",
]


def _copy_model_files(source: Path, dest: Path) -> None:
    for path in sorted(source.iterdir()):
        if path.is_file() and any(fnmatch.fnmatch(path.name, pattern) for pattern in MODEL_FILES):
            shutil.copy2(path, dest / path.name)  # follows the hub cache's symlinks to their blobs


def _download(model_id: str, dest: Path, parameter: str) -> None:
    import httpx
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    require_hub(model_id, "model", parameter)
    try:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            # Offline, snapshot_download with local_dir would look only in that folder, not the cache.
            # local_files_only follows the variable as read now, not as huggingface_hub read it on import.
            cached = snapshot_download(model_id, allow_patterns=MODEL_FILES, local_files_only=True)
            _copy_model_files(Path(cached), dest)
        else:
            snapshot_download(model_id, local_dir=dest, allow_patterns=MODEL_FILES)
            shutil.rmtree(dest / ".cache", ignore_errors=True)  # the download's bookkeeping, not the model
    except (httpx.HTTPError, HFValidationError, LocalEntryNotFoundError) as err:  # HTTP errors include the hub's
        raise UserError(f"`{parameter}`={model_id!r}: cannot download the model: {err}") from None


def pull(model_id: str, out: Path, parameter: str) -> list[str]:
    """Copy or download `model_id` to `out`, whole or not at all; return the file names."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        if Path(model_id).is_dir():
            _copy_model_files(Path(model_id), tmp)
        else:
            _download(model_id, tmp, parameter)
        names = sorted(path.name for path in tmp.iterdir())
        missing = [need for need, found in (
            ("config.json", "config.json" in names),
            ("*.safetensors weights", any(name.endswith(".safetensors") for name in names)),
            ("tokenizer.json or tokenizer_config.json", "tokenizer.json" in names or "tokenizer_config.json" in names),
        ) if not found]
        if missing:
            found = ", ".join(names) or "nothing"
            raise UserError(f"`{parameter}`={model_id!r}: no {', no '.join(missing)} (found: {found})")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--id", required=True, help="a hub model id or a local folder")
    parser.add_argument("--out", type=Path, required=True, help="models/hub/<name>, <name> a key of hub_models")
    args = parser.parse_args()
    names = pull(args.id, args.out, f"hub_models.{args.out.name}")
    print(f"{args.id} -> {args.out}: {', '.join(names)}")


if __name__ == "__main__":
    run_main(main)

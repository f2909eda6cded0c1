"""Copying a model from the Hugging Face hub (or a local folder in the hub's layout) into a folder.

Only what transformers (and vLLM) load a model and its tokenizer from is kept: the config, the
generation config, the weights and their index, and every tokenizer file the hub's repos use
(`tokenizer.json`, `vocab.json` + `merges.txt`, `vocab.txt`, `spm.model`, ...); no README, LICENSE or
other frameworks' weights.

Weights are kept as safetensors. A repo with safetensors gets only those; a repo with only pickled
PyTorch weights (`pytorch_model.bin`, or its shards and index, e.g. OpenAssistant's DeBERTa reward
model) has them read with `torch.load(weights_only=True)`, which unpickles tensors and plain
containers only and refuses anything else (an object that would run code is never built), and
written as `model.safetensors` (or shards and `model.safetensors.index.json`); the `.bin` files are
not kept. `source.json` records the id, the revision asked for and the commit the files came from.

Everything happens in a temporary folder next to the destination, renamed at the end, so an
interrupted or refused pull never leaves a folder that looks finished. An unreachable hub fails
within seconds with the id and how to use a local copy; with `HF_HUB_OFFLINE=1` the hub cache is read.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from posttrain.data_io import SOURCE_RECORD, hub_or_folder, require_hub, source_record, write_json
from posttrain.errors import UserError

CONFIG_FILES = ["config.json", "generation_config.json"]
# Written out because the names are chosen before the repo's tokenizer class is known (from the listing):
# transformers keeps the shared ones as constants in `tokenization_utils_base` and the vocabulary files
# in each tokenizer class's `vocab_files_names`, with no list across classes short of importing them all.
TOKENIZER_FILES = [
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json",
    "vocab.json", "merges.txt",  # byte-level BPE (GPT-2, Qwen)
    "vocab.txt",  # WordPiece (BERT, DistilBERT)
    "spm.model", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",  # SentencePiece (DeBERTa-v2, ...)
]
SAFETENSORS = ["*.safetensors", "model.safetensors.index.json"]
PICKLED = ["pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json"]


def select_files(names: list[str]) -> list[str]:
    """The files of a repo listing to keep: config, tokenizer, and safetensors weights if any, else pickled ones."""
    top = [name for name in names if "/" not in name]
    weights = SAFETENSORS if any(name.endswith(".safetensors") for name in top) else PICKLED
    keep = CONFIG_FILES + TOKENIZER_FILES + weights
    return sorted(name for name in top if any(fnmatch.fnmatch(name, pattern) for pattern in keep))


def _copy_selected(source: Path, dest: Path) -> None:
    for name in select_files([path.name for path in source.iterdir() if path.is_file()]):
        shutil.copy2(source / name, dest / name)  # follows the hub cache's symlinks to their blobs


def _download(model_id: str, revision: str | None, dest: Path, parameter: str) -> str:
    """Download `model_id` at `revision` into `dest`; return the commit the files came from."""
    import httpx
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    require_hub(model_id, "model", parameter, revision)
    try:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            # Offline, snapshot_download with local_dir would look only in that folder, not the cache.
            # local_files_only follows the variable as read now, not as huggingface_hub read it on import.
            cached = Path(snapshot_download(model_id, revision=revision, local_files_only=True,
                                            allow_patterns=CONFIG_FILES + TOKENIZER_FILES + SAFETENSORS + PICKLED))
            _copy_selected(cached, dest)
            return cached.name  # the cache keeps each snapshot under its commit
        # One listing of the revision: its commit, which every file is then fetched at, and its files,
        # so that a repo holding safetensors and .bin duplicates is downloaded without the .bin.
        info = HfApi().model_info(model_id, revision=revision)
        keep = select_files([sibling.rfilename for sibling in info.siblings or []])
        snapshot_download(model_id, revision=info.sha, local_dir=dest, allow_patterns=keep)
        shutil.rmtree(dest / ".cache", ignore_errors=True)  # the download's bookkeeping, not the model
        return info.sha
    except (httpx.HTTPError, HFValidationError, LocalEntryNotFoundError) as err:  # HTTP errors include the hub's
        at = f" at revision {revision!r}" if revision else ""
        message = " ".join(str(err).split())
        raise UserError(f"`{parameter}`={model_id!r}: cannot download the model{at}: {message}") from None


def _load_tensors(path: Path) -> dict[str, Any]:
    """A pickled state dict's tensors, unpickled in torch's safe mode only: tensors and plain containers."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message is a page of advice; its one useful line names what was refused
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", str(err), re.S)
        why = " ".join((found.group(1) if found else str(err).splitlines()[0]).split())
        raise UserError(f"{path.name}: refused, not plain tensors (torch.load weights_only: {why})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(f"{path.name}: not a PyTorch checkpoint: {' '.join(str(err).split())[:200]}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"{path.name}: not a state dict of named tensors")
    return state


def _save_safetensors(state: dict[str, Any], path: Path) -> int:
    """Write tensors as safetensors; tensors sharing memory (tied weights) are stored once each. Returns bytes."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for name, tensor in state.items():
        tensor = tensor.contiguous()
        storage = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if storage in seen and tensor.numel() else tensor
        seen.add(storage)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sum(t.numel() * t.element_size() for t in tensors.values())


def convert_pickled_weights(folder: Path) -> None:
    """Replace `pytorch_model*.bin` (and its index) in `folder` with safetensors of the same tensors."""
    shards = sorted(folder.glob("pytorch_model*.bin"))
    if not shards:
        return
    if [shard.name for shard in shards] == ["pytorch_model.bin"]:
        _save_safetensors(_load_tensors(shards[0]), folder / "model.safetensors")
    else:
        weight_map, total = {}, 0
        for shard in shards:
            name = shard.name.replace("pytorch_model", "model", 1).removesuffix(".bin") + ".safetensors"
            state = _load_tensors(shard)
            total += _save_safetensors(state, folder / name)
            weight_map.update(dict.fromkeys(state, name))
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    for path in [*shards, folder / "pytorch_model.bin.index.json"]:
        path.unlink(missing_ok=True)


def pull(model_id: str, out: Path, parameter: str, revision: str | None = None) -> list[str]:
    """Copy or download `model_id` at `revision` to `out`, whole or not at all; return the model's file names."""
    local = hub_or_folder(model_id, parameter)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        if local is not None:
            _copy_selected(local, tmp)
            record = source_record(model_id, revision, None, local)
        else:
            record = source_record(model_id, revision, _download(model_id, revision, tmp, parameter), None)
        try:
            convert_pickled_weights(tmp)
        except UserError as err:
            raise UserError(f"`{parameter}`={model_id!r}: {err}") from None
        names = sorted(path.name for path in tmp.iterdir())
        missing = [need for need, found in (
            ("config.json", "config.json" in names),
            ("weights (*.safetensors or pytorch_model*.bin)", any(name.endswith(".safetensors") for name in names)),
            ("tokenizer.json or tokenizer_config.json", "tokenizer.json" in names or "tokenizer_config.json" in names),
        ) if not found]
        if missing:
            found = ", ".join(names) or "nothing"
            raise UserError(f"`{parameter}`={model_id!r}: no {', no '.join(missing)} (found: {found})")
        write_json(tmp / SOURCE_RECORD, record)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


def load_causal_lm(source: str, revision: str | None, parameter: str):
    """(model, tokenizer, `SOURCE_RECORD` contents) of a causal LM loaded from a hub id at `revision` or a folder.

    A local folder is read as it is (no revision); a hub id is loaded through the hub cache, after
    `require_hub` has checked the hub can be reached.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = hub_or_folder(source, parameter)
    if local is None:
        require_hub(source, "model", parameter, revision)
    path = str(local) if local else source
    at = {"revision": revision} if local is None and revision else {}  # a local copy is what it is
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **at)
        tokenizer = AutoTokenizer.from_pretrained(path, **at)
    except OSError as err:  # transformers' word for a repo, revision or file it cannot find (offline: not cached)
        at_revision = f" at revision {revision!r}" if revision else ""
        raise UserError(f"`{parameter}`={source!r}: cannot load the model{at_revision}: "
                        f"{' '.join(str(err).split())[:300]}") from None
    # transformers reads the commit off the hub cache's snapshots/<commit>/ path it loaded from
    record = source_record(source, revision, getattr(model.config, "_commit_hash", None), local)
    return model, tokenizer, record

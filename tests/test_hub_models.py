"""Hub models and revisions: pickled weights pulled as safetensors (never unpickled unsafely), what a pull
records, revisions passed on, and model folders that do not exist refused in one line, never sent to the hub."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import params
from posttrain import data_io, hub, schemas
from posttrain.errors import UserError, run_main
from stages import base_model, judges, pull_model
from tests.conftest import ROOT

DEBERTA_REPO = [  # OpenAssistant/reward-model-deberta-v3-large: only pickled weights (reference.md §7)
    "added_tokens.json", "config.json", "pytorch_model.bin", "special_tokens_map.json", "spm.model",
    "tokenizer.json", "tokenizer_config.json",
]
TEXTS = (["say hi.", "the cat?"], ["hi", "a good dog"])


def _deberta(seed: int = 0):
    """A tiny `DebertaV2ForSequenceClassification` with one output and its tokenizer (tokenizers-backed)."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Tokenizer

    pieces = [f"▁{w}" for w in "say hi the cat a good dog".split()] + list("abcdefghijklmnopqrstuvwxyz.?▁")
    vocab = [("[PAD]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[UNK]", 0.0), ("[MASK]", 0.0)]
    vocab += [(piece, -1.0 - i / 10) for i, piece in enumerate(pieces)]
    tokenizer = DebertaV2Tokenizer(vocab=vocab, unk_id=3)
    torch.manual_seed(seed)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=1, pad_token_id=0)).eval()
    return model, tokenizer


def _logits(model, tokenizer) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(*TEXTS, padding=True, return_tensors="pt")).logits


def deberta_repo(path: Path, shards: int = 1) -> tuple[Path, torch.Tensor]:
    """The reward model's hub repo in miniature, weights as `torch.save(state_dict)` only; and its logits on TEXTS."""
    model, tokenizer = _deberta()
    tokenizer.save_pretrained(path)
    model.config.save_pretrained(path)
    (path / "spm.model").write_bytes(b"\x0a\x04stub")  # the SentencePiece model; tokenizer.json is what loads
    (path / "special_tokens_map.json").write_text(json.dumps({"cls_token": "[CLS]", "sep_token": "[SEP]",
                                                              "pad_token": "[PAD]", "unk_token": "[UNK]",
                                                              "mask_token": "[MASK]"}))
    (path / "added_tokens.json").write_text(json.dumps({"[MASK]": 4}))
    (path / "README.md").write_text("card")
    (path / ".gitattributes").write_text("*.bin filter=lfs")
    state = model.state_dict()
    if shards == 1:
        torch.save(state, path / "pytorch_model.bin")  # what save_pretrained(safe_serialization=False) wrote
    else:
        names = list(state)
        weight_map = {}
        for i in range(shards):
            shard = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
            part = {name: state[name] for name in names[i::shards]}
            torch.save(part, path / shard)
            weight_map.update(dict.fromkeys(part, shard))
        (path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path, _logits(model, tokenizer)


def run_pull(monkeypatch, name: str, model: params.HubModel, out: Path) -> None:
    """`python -m stages.pull_model --name NAME --out OUT` with `hub_models: {NAME: model}` as the params."""
    monkeypatch.setattr(params, "load", lambda: types.SimpleNamespace(hub_models={name: model}))
    monkeypatch.setattr(sys, "argv", ["pull_model", "--name", name, "--out", str(out)])
    pull_model.main()


@pytest.mark.parametrize("shards", [1, 2])
def test_pickled_weights_are_pulled_as_safetensors(tmp_path, monkeypatch, shards):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source, logits = deberta_repo(tmp_path / "download", shards)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    out = tmp_path / "models" / "deberta_rm"
    run_pull(monkeypatch, "deberta_rm", params.HubModel(id=str(source), revision=None), out)

    names = sorted(p.name for p in out.iterdir())
    weights = ["model.safetensors"] if shards == 1 else [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    tokenizer_files = [n for n in DEBERTA_REPO if n not in ("config.json", "pytorch_model.bin")]
    assert names == sorted(["config.json", "source.json", *tokenizer_files, *weights])  # no .bin, no README
    assert (out / "spm.model").read_bytes() == b"\x0a\x04stub"  # every tokenizer file the repo has, as it is
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before  # the source is only read
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    original = _deberta()[0].state_dict()
    assert loaded.state_dict().keys() == original.keys()
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in original.items())
    assert torch.allclose(_logits(loaded, AutoTokenizer.from_pretrained(out)), logits, atol=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["deberta_rm"]  # no temporary folder left


def test_safetensors_are_preferred_and_only_model_files_kept():
    distilbert = ["config.json", "flax_model.msgpack", "model.safetensors", "pytorch_model.bin", "rust_model.ot",
                  "tf_model.h5", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "coreml/model.mlpackage",
                  "README.md", ".gitattributes"]
    assert hub.select_files(distilbert) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert hub.select_files(DEBERTA_REPO + ["README.md"]) == DEBERTA_REPO
    qwen = ["LICENSE", "config.json", "generation_config.json", "merges.txt", "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json", "vocab.json"]
    assert hub.select_files(qwen) == qwen[1:]


class Payload:
    """An object whose unpickling would run code: it would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_a_pickle_that_is_not_plain_tensors_is_refused_and_never_run(tmp_path, monkeypatch, capsys):
    source, _ = deberta_repo(tmp_path / "download")
    marker = tmp_path / "code_ran"
    torch.save({"classifier.weight": torch.zeros(1, 32), "payload": Payload(marker)}, source / "pytorch_model.bin")
    out = tmp_path / "models" / "deberta_rm"
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: run_pull(monkeypatch, "deberta_rm", params.HubModel(str(source), None), out))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: `hub_models.deberta_rm.id`=")
    assert "pytorch_model.bin: refused, not plain tensors" in err and "GLOBAL exec" in err
    assert not marker.exists() and not out.exists() and list(out.parent.iterdir()) == []
    torch.load(source / "pytorch_model.bin", weights_only=False)  # the payload is live: a plain load runs it
    assert marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"\0", "pytorch_model.bin: refused, not plain tensors"),
    ([1, 2], "pytorch_model.bin: not a state dict of named tensors"),
])
def test_a_bin_that_is_no_state_dict_is_refused(tmp_path, content, message):
    source, _ = deberta_repo(tmp_path / "download")
    if isinstance(content, bytes):
        (source / "pytorch_model.bin").write_bytes(content)
    else:
        torch.save(content, source / "pytorch_model.bin")
    with pytest.raises(UserError, match=re.escape(message)):
        hub.pull(str(source), tmp_path / "out", "hub_models.x.id")
    assert not (tmp_path / "out").exists()


def test_a_local_pull_records_its_source_and_a_pull_of_it_the_upstream(tmp_path, tiny_model):
    first, second = tmp_path / "models" / "a", tmp_path / "models" / "b"
    hub.pull(str(tiny_model), first, "hub_models.a.id", revision="v1.0")
    record = json.loads((first / "source.json").read_text())
    assert record == {"id": str(tiny_model), "revision": "v1.0", "commit": None, "from": "local folder",
                      "upstream": None}
    hub.pull(str(first), second, "hub_models.b.id")
    assert json.loads((second / "source.json").read_text())["upstream"] == record


def test_a_hub_pull_asks_for_the_revision_and_records_the_commit(tmp_path, monkeypatch):
    """Online: one listing of the revision gives its commit and files; every file is fetched at that commit."""
    import huggingface_hub

    source, _ = deberta_repo(tmp_path / "download")
    commit, calls = "c" * 40, []

    def model_info(self, repo_id, revision=None, **kwargs):
        calls.append(("model_info", repo_id, revision))
        listing = [p.name for p in source.iterdir()] + ["model.onnx", "onnx/model.onnx"]
        return types.SimpleNamespace(sha=commit, siblings=[types.SimpleNamespace(rfilename=n) for n in listing])

    def snapshot_download(repo_id, revision=None, local_dir=None, allow_patterns=None, **kwargs):
        calls.append(("snapshot_download", repo_id, revision, sorted(allow_patterns)))
        for name in allow_patterns:
            (Path(local_dir) / name).write_bytes((source / name).read_bytes())
        (Path(local_dir) / ".cache").mkdir()
        return str(local_dir)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "require_hub", lambda *args: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    out = tmp_path / "models" / "deberta_rm"
    hub.pull("OpenAssistant/reward-model-deberta-v3-large", out, "hub_models.deberta_rm.id", revision="v2")
    assert calls == [("model_info", "OpenAssistant/reward-model-deberta-v3-large", "v2"),
                     ("snapshot_download", "OpenAssistant/reward-model-deberta-v3-large", commit, DEBERTA_REPO)]
    assert json.loads((out / "source.json").read_text()) == {
        "id": "OpenAssistant/reward-model-deberta-v3-large", "revision": "v2", "commit": commit, "from": "hub"}
    assert (out / "model.safetensors").is_file() and not (out / ".cache").exists()


def test_an_offline_pull_reads_the_pinned_snapshot_from_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "d" * 40
    deberta_repo(tmp_path / "cache" / "models--Org--Rm" / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "models" / "rm"
    assert "model.safetensors" in hub.pull("Org/Rm", out, "hub_models.rm.id", revision=commit)
    assert json.loads((out / "source.json").read_text())["commit"] == commit
    with pytest.raises(UserError, match=r"`hub_models.rm.id`='Org/Rm': cannot download the model at revision 'v9'"):
        hub.pull("Org/Rm", tmp_path / "models" / "other", "hub_models.rm.id", revision="v9")


def test_an_unreachable_hub_says_how_to_download_the_pinned_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(UserError, match=r"hf download Org/Rm --repo-type model --revision abc --local-dir DIR.*"
                                        r"-S hub_models.rm.id=DIR"):
        hub.pull("Org/Rm", tmp_path / "rm", "hub_models.rm.id", revision="abc")


@pytest.mark.parametrize("source, result", [
    ("Qwen/Qwen2.5-0.5B", None),
    ("distilbert-base-uncased", None),
    ("models/missing", "models/missing: no such model folder (from base_model.source)"),
    ("./qwen", "qwen: no such model folder (from base_model.source)"),
    ("/nowhere/qwen", "/nowhere/qwen: no such model folder (from base_model.source)"),
    ("data/qwen", "data/qwen: no such model folder (from base_model.source)"),
    ("Qwen/Qwen2.5/0.5B", "neither an existing folder nor a hub id"),
    ("Qwen/../x", "neither an existing folder nor a hub id"),
])
def test_a_source_is_an_existing_folder_or_a_hub_id(tmp_path, monkeypatch, source, result):
    monkeypatch.chdir(tmp_path)
    if result is None:
        assert data_io.hub_or_folder(source, "base_model.source") is None
    else:
        with pytest.raises(UserError, match=re.escape(result)):
            data_io.hub_or_folder(source, "base_model.source")
    (tmp_path / "qwen").mkdir()
    assert data_io.hub_or_folder("qwen", "base_model.source") == Path("qwen")  # an existing folder, not a hub id


def test_base_model_from_a_missing_folder_never_reaches_the_hub(tmp_path, monkeypatch):
    cfg = params.BaseModel(source="models/qwen", revision=None, vocab_size=0, config={}, pretrain=None)
    monkeypatch.setattr(params, "load", lambda: types.SimpleNamespace(base_model=cfg, seed=0))
    monkeypatch.setattr(hub, "require_hub", lambda *args: pytest.fail("looked for the hub"))
    monkeypatch.setattr(sys, "argv", ["base_model", "--text", "t.jsonl", "--out", str(tmp_path / "base")])
    with pytest.raises(UserError, match=r"^models/qwen: no such model folder \(from base_model.source\)$"):
        base_model.main()


def test_base_model_copied_from_a_folder_records_it(tmp_path, monkeypatch, tiny_model):
    cfg = params.BaseModel(source=str(tiny_model), revision=None, vocab_size=0, config={},
                           pretrain=params.Pretrain(max_steps=0, learning_rate=0.0, batch_size=1, max_length=1))
    monkeypatch.setattr(params, "load", lambda: types.SimpleNamespace(base_model=cfg, seed=0))
    monkeypatch.setattr(sys, "argv", ["base_model", "--text", "t.jsonl", "--out", str(tmp_path / "base")])
    base_model.main()
    assert json.loads((tmp_path / "base" / "source.json").read_text())["id"] == str(tiny_model)
    assert (tmp_path / "base" / "model.safetensors").is_file()


@pytest.mark.parametrize("stage", [
    ["stages.generate", "--task", "countdown", "--prompts", "p.jsonl", "--decoding", "greedy", "--out", "o.jsonl"],
    ["stages.sft", "--section", "sft_countdown", "--train", "t.jsonl", "--out", "o"],
    ["stages.dpo", "--section", "dpo", "--train", "t.jsonl", "--out", "o"],
    ["stages.rl", "--method", "rloo", "--section", "rloo_countdown", "--task", "countdown", "--prompts", "p.jsonl",
     "--out", "o"],
    ["stages.answer_instruct", "--prompts", "p.jsonl", "--out", "o.jsonl", "--references", "r.jsonl", "--limit", "1",
     "--reference-answers", "g.jsonl", "--text-metrics", "o.json"],
])
def test_a_stage_given_a_missing_model_folder_says_so_in_one_line(tmp_path, stage):
    result = subprocess.run([sys.executable, "-m", *stage, "--model", "models/sft_countdown"], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr == "error: models/sft_countdown: no such model folder (from --model)\n"


def test_reward_models_read_as_judge_or_reward_must_be_folders(tmp_path):
    from posttrain.training.rewards import reward_model_reward

    with pytest.raises(UserError, match=r"^models/deberta_rm: no such model folder \(from --model\)$"):
        judges.make_judge("reward_model", model="models/deberta_rm")
    with pytest.raises(UserError, match=r"no such model folder \(from --reward-model\)"):
        reward_model_reward(tmp_path / "reward_bt")


def test_a_dataset_revision_reaches_the_hub_and_a_local_path_is_never_an_id(tmp_path, monkeypatch):
    import datasets

    asked = []
    monkeypatch.setattr(data_io, "require_hub", lambda *args: asked.append(("require_hub", *args)))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: asked.append(("load_dataset", a, k)) or [])
    data_io.load_rows("Jiayi-Pan/Countdown-Tasks-3to4", "train", schemas.COUNTDOWN_TASK, "countdown.tasks_source",
                      "408f70d1")
    assert asked == [("require_hub", "Jiayi-Pan/Countdown-Tasks-3to4", "dataset", "countdown.tasks_source",
                      "408f70d1"),
                     ("load_dataset", ("Jiayi-Pan/Countdown-Tasks-3to4",), {"split": "train", "revision": "408f70d1"})]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^data/hub/countdown: no such file or folder \(from `countdown.tasks_source`"):
        data_io.load_rows("data/hub/countdown", "train", schemas.COUNTDOWN_TASK, "countdown.tasks_source")
    assert len(asked) == 2


def _default() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("entry, message", [
    ("Qwen/Qwen2.5-0.5B", "`hub_models.qwen` must be a mapping, got 'Qwen/Qwen2.5-0.5B'"),
    ({"id": "Qwen/Qwen2.5-0.5B"}, "missing parameter `hub_models.qwen.revision`"),
    ({"id": "Qwen/Qwen2.5-0.5B", "revision": 7}, "`hub_models.qwen.revision` must be str"),
    ({"id": "Qwen/Qwen2.5-0.5B", "revision": None, "sha": "x"}, "unknown parameter `hub_models.qwen.sha`"),
])
def test_a_bad_hub_models_entry_is_refused_naming_it(entry, message):
    data = copy.deepcopy(_default())
    data["hub_models"] = {"qwen": entry}
    with pytest.raises(UserError, match=re.escape(message)):
        params.parse(data)
    data["hub_models"] = {"qwen": {"id": "Qwen/Qwen2.5-0.5B", "revision": None}}
    assert params.parse(data).hub_models == {"qwen": params.HubModel(id="Qwen/Qwen2.5-0.5B", revision=None)}


def test_the_paper_profile_pins_a_revision_for_every_hub_source(tmp_path, monkeypatch):
    from pipeline.compose_params import compose

    monkeypatch.chdir(ROOT)
    compose(tmp_path / "params.yaml", ["profile=paper"])
    p = params.load(tmp_path / "params.yaml")
    revisions = {"base_model": p.base_model.revision, "countdown.tasks": p.countdown.tasks_revision,
                 "countdown.warmstart": p.countdown.warmstart_revision,
                 "instruct.smoltalk": p.instruct.smoltalk_revision,
                 "instruct.ultrafeedback": p.instruct.ultrafeedback_revision,
                 **{f"hub_models.{name}": model.revision for name, model in p.hub_models.items()}}
    assert all(revisions.values()), revisions
    assert all(re.fullmatch(r"[0-9a-f]{40}|main", revision) for revision in revisions.values()), revisions
    assert p.hub_models["distilbert"].id == "distilbert-base-uncased"
    for section in (p.reward_pointwise, p.reward_bt):  # the encoder: the pulled DistilBERT's weights
        assert section.config is None and Path(section.encoder).name == "distilbert"

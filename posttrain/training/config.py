"""What every training stage shares: a TRL config built from params, device precision, DVCLive logging.

Each trainer's config is TRL's own dataclass, filled from the stage's `trainer` section of
`params.yaml`, so TRL validates every field; an unknown or bad field becomes an error naming the
parameter. TRL defaults to bf16, which a CPU cannot run: precision follows the device here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from posttrain.errors import UserError


def device_precision() -> dict[str, Any]:
    """bf16 on a GPU that has it, fp32 on the CPU."""
    import torch

    if torch.cuda.is_available():
        return {"bf16": torch.cuda.is_bf16_supported(), "use_cpu": False}
    return {"bf16": False, "use_cpu": True}


def trainer_args(config_cls: type, fields: dict[str, Any], section: str, output_dir: Path, **fixed: Any):
    """Build `config_cls` (e.g. `SFTConfig`) from `fields`, naming `section.<field>` in any error."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise UserError(f"params: unknown parameter `{section}.{unknown[0]}` (not a field of {config_cls.__name__})")
    values = {**device_precision(), "output_dir": str(output_dir), "report_to": "none",
              "disable_tqdm": False, **fields, **fixed}
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as err:
        raise UserError(f"params: `{section}`: {err}") from None


def dvclive_callback(directory: Path):
    """A DVCLive callback writing the curves under `directory`, leaving `dvc.yaml` alone (it declares the plots).

    The Live object is made on the main process only, and the trainer's arguments are not logged: the
    run's settings are `params.yaml`'s, and the arguments hold a temporary folder that would make the
    logged file differ on every run (and the stages reading `metrics/train` rerun for nothing).
    """
    from transformers.integrations import DVCLiveCallback

    class Callback(DVCLiveCallback):
        resume = False  # set by `checkpoints.train` when the run resumes: DVCLive continues its step count

        def setup(self, args, state, model):
            from dvclive import Live

            self._initialized = True
            if state.is_world_process_zero and self.live is None:
                self.live = Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None, resume=self.resume)

    return Callback()


def checkpoint_fields(saving) -> dict[str, Any]:
    """Trainer fields that save a checkpoint every `saving.steps` optimizer steps, keeping `saving.save_total_limit`."""
    return {"save_strategy": "steps", "save_steps": saving.steps, "save_total_limit": saving.save_total_limit}


def lora_config(lora, task_type: str = "CAUSAL_LM"):
    """PEFT's `LoraConfig` from a `params.Lora` section."""
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type=task_type)


def merge_adapter(adapter_dir: Path):
    """The model an adapter describes: its weights merged onto the base its own config records.

    The sources merged onto a hard-coded base (reference.md §6); here the base is the
    `base_model_name_or_path` PEFT wrote when the adapter was trained, a path or a hub id.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    base = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    try:
        model = AutoModelForCausalLM.from_pretrained(base)
    except OSError as err:
        raise UserError(f"{adapter_dir}: the adapter's recorded base model {base!r} cannot be loaded: {err}") from None
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def _sort_adapter_sets(adapter: Path, configs) -> None:
    """Rewrite `adapter_config.json` with the fields PEFT holds as sets sorted, in PEFT's own layout."""
    import json

    path = adapter / "adapter_config.json"
    data = json.loads(path.read_text())
    for config in configs:
        for key, value in vars(config).items():
            if isinstance(value, set) and isinstance(data.get(key), list):
                data[key] = sorted(data[key])
    path.write_text(json.dumps(data, indent=2, sort_keys=True))  # as `PeftConfigMixin.save_pretrained` writes it


def save_trained(trainer, tokenizer, out: Path) -> None:
    """Save the trained model and its tokenizer to `out`, whole or not at all.

    Every process calls this (FSDP and DeepSpeed gather the weights inside `save_model`); only the
    main one writes. The model goes to `<out>.tmp` first and is renamed at the end, so an
    interrupted stage never leaves a folder that looks finished. A LoRA model is saved as its
    adapter (kept under `<out>/adapter`, with the base it records) and as the merged model that
    later stages load like any other.

    The same weights give the same bytes, so a forced rerun changes no DVC hash and `dvc push` sends
    nothing: `training_args.bin` (the trainer's arguments, pickled with the run's temporary
    `output_dir`; the settings are params.yaml's and nothing reads it) is not kept, and the adapter's
    set-valued fields (`target_modules`), which PEFT writes in the set's order (it changes with
    Python's string hashing from process to process), are written sorted.
    """
    import shutil

    tmp = out.with_name(out.name + ".tmp")
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    is_peft = hasattr(trainer.model, "peft_config")
    trainer.save_model(str(tmp / "adapter") if is_peft else str(tmp))
    if main:
        for folder in (tmp, tmp / "adapter"):
            (folder / "training_args.bin").unlink(missing_ok=True)
        if is_peft:
            _sort_adapter_sets(tmp / "adapter", trainer.model.peft_config.values())
            merged = merge_adapter(tmp / "adapter")
            merged.generation_config = trainer.model.generation_config
            for name in ("eos_token_id", "pad_token_id"):  # the chat eos the trainer set, as a full model keeps
                setattr(merged.config, name, getattr(trainer.model.config, name, None))
            merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    trainer.accelerator.wait_for_everyone()

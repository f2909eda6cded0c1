"""What every training stage shares: a TRL config built from params, device precision, DVCLive logging.

Each trainer's config is TRL's own dataclass, filled from the stage's `trainer` section of
`params.yaml`, so TRL validates every field; an unknown or bad field becomes an error naming the
parameter. TRL defaults to bf16, which a CPU cannot run: precision follows the device here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from stages.errors import UserError


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
    """A DVCLive callback writing under `directory`, leaving `dvc.yaml` alone (it declares the plots)."""
    from dvclive import Live
    from transformers.integrations import DVCLiveCallback

    return DVCLiveCallback(live=Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None))

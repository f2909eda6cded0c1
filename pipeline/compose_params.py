"""Write params.yaml from conf/ with Hydra (DVC's own composition function), checked before it is written.

    python -m pipeline.compose_params                  # the default (embedded) profile
    python -m pipeline.compose_params profile=paper    # then `dvc repro` or `dvc exp run` runs the paper profile
    python -m pipeline.compose_params profile=smoke dpo.beta=0.05

Overrides use Hydra's grammar, as `dvc exp run -S` does; an unknown key fails. The composition is
checked with the stages' own checker (`pipeline.params.parse`) first: a bad value (`dpo.beta=abc`)
stops here with one line and leaves params.yaml as it was.

This is the only place a profile is chosen. DVC's Hydra integration is off (.dvc/config): with it on,
every `dvc exp run` recomposed params.yaml from conf/ with the default profile and silently dropped the
profile and the edits the user had made. Off, `dvc exp run -S key=value` edits params.yaml in place
(DVC's native behaviour), so an experiment runs on what the user chose (README, "The experiment workflow").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from pipeline.params import PARAMS_FILE, parse
from posttrain.errors import UserError, run_main


def compose(output: Path, overrides: list[str]) -> None:
    """Compose conf/ (relative to the working directory) with `overrides`, check it, then write `output`."""
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp.yaml")  # beside it, so the rename is atomic
    try:
        try:
            compose_and_dump(tmp, str(Path("conf").resolve()), None, "config", "", overrides)
        except (HydraException, OmegaConfBaseException) as err:
            one_line = " ".join(str(err).split())  # Hydra's messages span lines
            raise UserError(f"conf/: {one_line}; {output} left unchanged") from None
        try:
            parse(yaml.safe_load(tmp.read_text()))
        except UserError as err:
            raise UserError(f"{err}; {output} left unchanged") from None
        os.replace(tmp, output)  # whole or not at all
    finally:
        tmp.unlink(missing_ok=True)


def main() -> None:
    compose(PARAMS_FILE, sys.argv[1:])
    print(f"wrote {PARAMS_FILE}")


if __name__ == "__main__":
    run_main(main)

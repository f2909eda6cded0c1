"""Write params.yaml from conf/ with DVC's own Hydra composition, as `dvc exp run` does.

    python -m pipeline.compose_params                  # the default (embedded) profile
    python -m pipeline.compose_params profile=paper    # then `dvc repro` runs the paper profile

Overrides use Hydra's grammar, as `dvc exp run -S` does; an unknown key fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

from posttrain.errors import UserError, run_main
from pipeline.params import PARAMS_FILE, load


def compose(output: Path, overrides: list[str]) -> None:
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        compose_and_dump(output, str(Path("conf").resolve()), None, "config", "", overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(f"conf/: {err}") from None


def main() -> None:
    compose(PARAMS_FILE, sys.argv[1:])
    load()
    print(f"wrote {PARAMS_FILE}")


if __name__ == "__main__":
    run_main(main)

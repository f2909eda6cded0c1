"""Copy a model from the Hugging Face hub (or a local folder) into a folder that DVC tracks.

    python -m stages.pull_model --name qwen_3b --out models/qwen_3b

`hub_models.<name>` in params is `{id, revision}`: a hub id at a commit or tag (null: the default
branch), or a local folder in the hub's layout. `posttrain.hub.pull` copies it: only the files
transformers and vLLM load (config, weights, tokenizer), pickled PyTorch weights converted to
safetensors in torch's safe unpickling mode, `source.json` recording the commit; whole or not at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import params
from posttrain.errors import UserError, run_main
from posttrain.hub import pull


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="a key of hub_models in params.yaml")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write, models/<name>")
    args = parser.parse_args()
    hub_models = params.load().hub_models
    if args.name not in hub_models:
        known = ", ".join(sorted(hub_models)) or "none"
        raise UserError(f"--name {args.name}: not a key of hub_models in params.yaml (keys: {known})")
    model = hub_models[args.name]
    names = pull(model.id, args.out, f"hub_models.{args.name}.id", model.revision)
    at = f"@{model.revision}" if model.revision else ""
    print(f"{model.id}{at} -> {args.out}: {', '.join(names)}")


if __name__ == "__main__":
    run_main(main)

"""Run a stage module with each optimizer step slowed by $STEP_SLEEP seconds, so a test can stop it mid-run.

    python tests/run_slowly.py stages.sft --section ... (the stage's own arguments)

The sleep sits in the trainer's step-end callback hook, which every trainer (transformers', TRL's)
calls once per optimizer step; it changes no number the run computes.
"""

import os
import runpy
import sys
import time

from transformers.trainer_callback import CallbackHandler

_on_step_end = CallbackHandler.on_step_end


def _slow_step_end(self, *args, **kwargs):
    time.sleep(float(os.environ.get("STEP_SLEEP", "0")))
    return _on_step_end(self, *args, **kwargs)


CallbackHandler.on_step_end = _slow_step_end
module, sys.argv[1:] = sys.argv[1], sys.argv[2:]
runpy.run_module(module, run_name="__main__", alter_sys=True)

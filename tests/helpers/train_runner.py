"""Run one tiny training job in its own process, optionally killing itself with SIGKILL.

    python tests/helpers/train_runner.py CONFIG.json [--kill-mid-save STEP] [--kill-at-step STEP]

``--kill-mid-save STEP``: SIGKILL while checkpoint-STEP is being written (after the model and
optimizer files, before the RNG and trainer state), the worst moment for a checkpoint.
``--kill-at-step STEP``: SIGKILL at the start of optimizer step STEP (state in memory lost).
Used by the resume and DeepSpeed tests; a real kill, no cleanup code runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def main() -> int:
    from transformers import TrainerCallback

    from mico_chat.training import TrainRecipe, config_from_dict
    from mico_chat.training.trainer import MiCoTrainer

    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--kill-mid-save", type=int)
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--reset-between", action="store_true", help="several configs (a JSON list) in one process")
    args = parser.parse_args()

    class KillMidSave(MiCoTrainer):
        def _save_rng_state(self, output_dir):
            if self.state.global_step == args.kill_mid_save:
                os.kill(os.getpid(), signal.SIGKILL)
            super()._save_rng_state(output_dir)

    class KillAtStep(TrainerCallback):
        def on_step_begin(self, train_args, state, control, **kwargs):
            if state.global_step + 1 == args.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)

    data = json.loads(Path(args.config).read_text())
    configs = data if isinstance(data, list) else [data]
    for i, item in enumerate(configs):
        if i:
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
        recipe = TrainRecipe(
            config_from_dict(item),
            progress=False,
            trainer_cls=KillMidSave if args.kill_mid_save else MiCoTrainer,
            callbacks=[KillAtStep()] if args.kill_at_step else [],
        )
        summary = recipe.run()
        print(
            "SUMMARY " + json.dumps({k: summary[k] for k in ("status", "steps", "first_loss", "last_loss", "export")})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

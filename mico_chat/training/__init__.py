"""Staged training of MiCo-Chat models on the Hugging Face Trainer (DeepSpeed optional).

    from mico_chat.training import TrainRecipe, load_config
    recipe = TrainRecipe(load_config("configs/default/stage1_align.yaml", ["data.train=captions.jsonl"]))
    summary = recipe.run()          # setup -> train -> save -> cleanup

Parts: :mod:`.config` (YAML -> dataclasses -> overrides), :mod:`.stages` (what trains),
:mod:`.data` (records -> samples, scan, sampler, encoder-feature cache), :mod:`.collator`
(padding / packing), :mod:`.trainer` (``MiCoTrainer``), :mod:`.recipe` (``TrainRecipe``),
:mod:`.reports` (plots, summary), :mod:`.launch` (one-process DeepSpeed environment).
"""

import importlib
from typing import TYPE_CHECKING

# The recipe pulls in transformers' Trainer (and through it DeepSpeed, peft, bitsandbytes):
# imported on first use, so reading or checking a config stays fast.
_LAZY = {
    "TrainConfig": ".config",
    "config_from_dict": ".config",
    "load_config": ".config",
    "DataError": ".errors",
    "LabelMaskError": ".errors",
    "NonFiniteLossError": ".errors",
    "TrainConfigError": ".errors",
    "TrainingError": ".errors",
    "TrainRecipe": ".recipe",
    "STAGES": ".stages",
    "Stage": ".stages",
    "get_stage": ".stages",
    "trainable_parameter_names": ".stages",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .config import TrainConfig, config_from_dict, load_config
    from .errors import DataError, LabelMaskError, NonFiniteLossError, TrainConfigError, TrainingError
    from .recipe import TrainRecipe
    from .stages import STAGES, Stage, get_stage, trainable_parameter_names


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'mico_chat.training' has no attribute {name!r}")

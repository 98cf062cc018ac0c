"""Staged training of MiCo-Chat models on the Hugging Face Trainer (DeepSpeed optional).

    from mico_chat.training import TrainRecipe, load_config
    recipe = TrainRecipe(load_config("configs/default/stage1_align.yaml", ["data.train=captions.jsonl"]))
    summary = recipe.run()          # setup -> train -> save -> cleanup

Parts: :mod:`.config` (YAML -> dataclasses -> overrides), :mod:`.stages` (what trains),
:mod:`.data` (records -> samples, scan, sampler, encoder-feature cache), :mod:`.collator`
(padding / packing), :mod:`.trainer` (``MiCoTrainer``), :mod:`.recipe` (``TrainRecipe``),
:mod:`.reports` (plots, summary), :mod:`.launch` (one-process DeepSpeed environment).
"""

from .config import TrainConfig, config_from_dict, load_config
from .errors import DataError, LabelMaskError, NonFiniteLossError, TrainConfigError, TrainingError
from .recipe import TrainRecipe
from .stages import STAGES, Stage, get_stage, trainable_parameter_names

__all__ = [
    "STAGES",
    "DataError",
    "LabelMaskError",
    "NonFiniteLossError",
    "Stage",
    "TrainConfig",
    "TrainConfigError",
    "TrainRecipe",
    "TrainingError",
    "config_from_dict",
    "get_stage",
    "load_config",
    "trainable_parameter_names",
]

"""MiCo pretraining of the omni-modal encoder: config (YAML + overrides), cached media data and
seeded multi-dataset batches, and the recipe (train / checkpoint / exact resume / export).

    from mico_chat.pretraining import PretrainRecipe, load_config
    recipe = PretrainRecipe(load_config("configs/pretrain/tiny_synth.yaml", ["train.max_steps=20"]))
    recipe.setup(); recipe.train(); recipe.export()
"""

from .config import DatasetSpec, PretrainConfig, PretrainConfigError, config_from_dict, load_config
from .data import MediaTable, PretrainingMixture, build_media_table
from .plots import plot_losses, read_loss_log
from .recipe import PretrainRecipe

__all__ = [
    "DatasetSpec",
    "MediaTable",
    "PretrainConfig",
    "PretrainConfigError",
    "PretrainRecipe",
    "PretrainingMixture",
    "build_media_table",
    "config_from_dict",
    "load_config",
    "plot_losses",
    "read_loss_log",
]

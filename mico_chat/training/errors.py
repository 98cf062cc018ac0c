"""Errors of the training library. Each one names what to fix; the CLI prints them in one line."""

from __future__ import annotations

from mico_chat.errors import ConfigError


class TrainingError(RuntimeError):
    """A run that cannot go on (data, numerics, checkpoints); the message says what to do."""


class TrainConfigError(ConfigError):
    """An invalid training config: unknown key, wrong type, a required value (``???``) not set."""


class DataError(TrainingError):
    """A record that cannot become a training sample, where skipping is not allowed (strict mode,
    or a failure after the pre-training scan); names the file, line and record id."""


class LabelMaskError(TrainingError):
    """The per-message loss mask disagrees with the text it should cover (template or tokenizer
    inconsistency); never skipped, because every sample of the run would be affected alike."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the run stops before the optimizer applies that step."""

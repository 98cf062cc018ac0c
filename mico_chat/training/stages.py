"""Training stages: each is a declaration of which parameters train.

MiCo-Chat trains in stages (MiCo section 4.4, following LLaVA):

================  ===============================================  =========================
stage             trainable                                         LLM
================  ===============================================  =========================
stage1_align      ``connectors.*``                                  frozen
stage1_lexical    ``connectors.*`` (loss in the LLM's embedding      not run
                  space, :mod:`.lexical`)
stage2_instruct   ``connectors.*``, ``language_model.*``            full
stage2_lora       ``connectors.*``, LoRA adapters on the LLM        frozen base + LoRA
stage2_frozen     ``connectors.*``                                  frozen: text-only chat is
                                                                    exactly the base LLM's
stage2_qlora      ``connectors.*``, LoRA adapters on the LLM        4/8-bit base + LoRA
new_modality      ``connectors.<named modalities>.*``               frozen
================  ===============================================  =========================

The encoder is frozen in every stage (it comes pretrained). Patterns are ``fnmatch`` patterns over
the parameter names of :class:`~mico_chat.modeling.MiCoChatForConditionalGeneration`;
``{modality}`` expands to each trained modality. Names are always reported relative to the MiCo-Chat
model, also when LoRA wraps it in a ``peft`` model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from .errors import TrainConfigError

PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Args:
        name: registry key.
        description: one line for logs and docs.
        trainable: ``fnmatch`` patterns of trainable parameter names (``{modality}`` expands).
        lora: add LoRA adapters to the LLM's linear layers (they train too).
        quantize: load the LLM quantized with bitsandbytes (QLoRA).
        chat_template: the prompt format this stage uses unless the config names one.
        needs_modalities: the config must name the modalities whose connectors train.
        objective: ``lm`` (next-token loss through the LLM) or ``lexical`` (media tokens aligned to
            the caption's word embeddings, :mod:`.lexical`; the LLM never runs).
    """

    name: str
    description: str
    trainable: tuple[str, ...]
    lora: bool = False
    quantize: bool = False
    chat_template: str | None = None
    needs_modalities: bool = False
    objective: str = "lm"


_STAGES: dict[str, Stage] = {}
STAGES: Mapping[str, Stage] = MappingProxyType(_STAGES)


def register_stage(stage: Stage) -> Stage:
    if stage.name in _STAGES:
        raise ValueError(f"stage {stage.name!r} is already registered")
    _STAGES[stage.name] = stage
    return stage


register_stage(
    Stage(
        "stage1_align",
        "align the connectors on caption pairs; encoder and LLM frozen",
        ("connectors.{modality}.*",),
        chat_template="plain",
    )
)
register_stage(
    Stage(
        "stage1_lexical",
        "align the connectors on caption pairs in the LLM's word-embedding space; encoder and LLM frozen",
        ("connectors.{modality}.*",),
        chat_template="plain",
        objective="lexical",
    )
)
register_stage(
    Stage(
        "stage2_instruct",
        "instruction tuning: connectors and the whole LLM",
        ("connectors.{modality}.*", "language_model.*"),
    )
)
register_stage(
    Stage(
        "stage2_lora",
        "instruction tuning: connectors and LoRA adapters on the LLM",
        ("connectors.{modality}.*",),
        lora=True,
    )
)
register_stage(
    Stage(
        "stage2_frozen",
        "instruction tuning with the LLM frozen: connectors (and extra_trainable, e.g. the encoder); "
        "a conversation without media runs the base LLM exactly",
        ("connectors.{modality}.*",),
    )
)
register_stage(
    Stage(
        "stage2_qlora",
        "instruction tuning: connectors and LoRA adapters on a quantized LLM",
        ("connectors.{modality}.*",),
        lora=True,
        quantize=True,
    )
)
register_stage(
    Stage(
        "new_modality",
        "a new modality's connector; everything else frozen",
        ("connectors.{modality}.*",),
        needs_modalities=True,
    )
)


def get_stage(name: str) -> Stage:
    try:
        return _STAGES[name]
    except KeyError:
        raise TrainConfigError(f"unknown stage {name!r}; registered: {', '.join(_STAGES)}") from None


def base_name(name: str) -> str:
    """A parameter name relative to the MiCo-Chat model (drops ``peft``'s wrapper prefix)."""
    return name[len(PEFT_PREFIX) :] if name.startswith(PEFT_PREFIX) else name


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Sorted names (relative to the MiCo-Chat model) of the parameters that require grad."""
    return sorted(base_name(n) for n, p in model.named_parameters() if p.requires_grad)


def expand_patterns(stage: Stage, modalities: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The stage's patterns with ``{modality}`` expanded, plus ``extra`` patterns."""
    out: list[str] = []
    for pattern in stage.trainable:
        if "{modality}" in pattern:
            out.extend(pattern.format(modality=m) for m in modalities)
        else:
            out.append(pattern)
    return out + list(extra)


def mark_trainable(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad`` on parameters whose (base) name matches a pattern; others keep theirs.

    Raises :class:`TrainConfigError` when a pattern matches nothing (a typo, or a connector the
    model does not have), so a stage never silently trains less than it says.
    """
    hits = dict.fromkeys(patterns, 0)
    for name, param in model.named_parameters():
        for pattern in patterns:
            if fnmatch.fnmatchcase(base_name(name), pattern):
                param.requires_grad_(True)
                hits[pattern] += 1
    unmatched = [p for p, n in hits.items() if n == 0]
    if unmatched:
        raise TrainConfigError(f"trainable pattern(s) {unmatched} match no parameter of the model")
    return trainable_parameter_names(model)


def lora_target_regex(target_modules: Sequence[str]) -> str:
    """A ``peft`` ``target_modules`` regex that picks these linear layers inside the LLM only
    (the encoder has ``q_proj``/``k_proj``/``v_proj`` layers too, and they stay frozen)."""
    names = "|".join(sorted(set(target_modules)))
    return rf"language_model\..*\.({names})"

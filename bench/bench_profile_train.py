"""Profile one training stage on this CPU: where a sample's tokens go, where a step's time goes,
how close the LLM runs to this machine's matmul speed, and what each throughput lever buys.

    # stage 2 (LoRA) of the default pipeline, on its world and its stage-1 model
    .venv/bin/python bench/bench_profile_train.py --records runs/default-model/data/train/records.jsonl \\
        --init-from runs/default-model/stage1/model --levers --out runs/default-model/profile_stage2.json
    # stage 1 on caption records; key=value overrides as for `mico-chat train`
    .venv/bin/python bench/bench_profile_train.py --config configs/default/stage1_align.yaml \\
        --records runs/default-model/data/train/captions.jsonl "model.encoder={pretrained: ENCODER_DIR}"
    # the tests' tiny model on a 2-clip world: seconds
    PYTHONPATH=tests .venv/bin/python bench/bench_profile_train.py --tiny --levers --warmup 1 --steps 1

The stage is built as ``mico-chat train CONFIG [key=value ...]`` builds it
(:class:`~mico_chat.training.TrainRecipe`: model, stage, record scan, dataset, collator, sampler,
the trainer's optimizer groups); the steps are then run by hand so that each part can be timed.
A step is the trainer's: forward (under bf16 autocast when ``train.bf16`` asks), backward,
clipping to ``train.max_grad_norm``, optimizer step; the learning-rate schedule is not stepped.

1. Tokens per sample: system prompt / media / question (user text and template tokens) / answer
   (trained tokens) / padding, means over every scanned sample; padding is what the stage's
   collator adds to the batches its sampler forms.
2. Step time: encoder, connectors, LLM decoder forward, LM head, loss, other forward work
   (embedding lookup, feature merge), LLM backward, encoder + connector backward, gradient
   clipping, optimizer step; from forward hooks and a gradient hook, means over ``--steps`` steps
   after ``--warmup``, batches from the stage's own data loader. Loading a batch (media decoding
   and collation, ``dataloader_num_workers=0``) is timed apart.
3. Achieved FLOP/s of the LLM part (formula in ``FLOP_FORMULA``, printed) against ``torch.mm`` at
   the LLM's matrix shapes, float32 and bfloat16, measured in the same run.
4. ``--levers``: tokens/s and records/s (records = questions answered; loading time included) for
   five levers, each side differing from the baseline (the config as given) in one setting, all in
   the same run on the same batches where the data do not change: merged turns, LM head on the
   supervised positions only, a short system prompt, bf16 autocast, 2 threads.

Without ``--records`` (or a ``data.train=`` override) a small synthetic world is generated
(instruction records, or caption records for stage 1). Without ``--init-from`` the config's model
section is used; when it names a folder that does not exist, the shipped ``default`` preset stands
in and the output says so.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from mico_chat.processing import IGNORE_INDEX, MiCoChatProcessor, PreparedConversation
from mico_chat.training import TrainRecipe, load_config
from mico_chat.training.data import expected_segments

REPO = Path(__file__).resolve().parents[1]

DEFAULT_CONFIG = REPO / "configs/default/stage2_lora.yaml"
SHORT_SYSTEM = "You are a helpful assistant."
PROBE = "PROFILEPROBEQUESTION"  # a user message no template rewrites (see system_prefix_chars)

FLOP_FORMULA = (
    "T = executed positions (rows x row length, padding included), R rows of length L, K = LM-head positions, "
    "P = weights of the decoder's linear layers (LoRA adapters included), n layers, d = heads x head_dim, "
    "h x V = LM head. Forward: 2*T*P + 4*n*R*L^2*d + 2*K*h*V. Backward: activation gradients of every matmul "
    "(the same FLOPs as its forward) plus weight gradients (the same again) only for trainable weights: "
    "2*T*P_frozen + 4*T*P_trainable + 8*n*R*L^2*d + (2 or 4)*K*h*V. Attention is counted dense (every pair of "
    "a row, PaLM's convention; a packed row's block-diagonal mask does not skip work). Timed against: "
    "decoder forward + LM head + LLM backward (loss excluded)."
)


# ---------------------------------------------------------------------------------------- setup


class ProfileRecipe(TrainRecipe):
    """A :class:`TrainRecipe` that can drop the model's system prompt, so that the chat template's
    own default (or none) is rendered: the "off" side of the system-prompt lever."""

    def __init__(self, config, *, template_system: bool = False, progress: bool = True):
        super().__init__(config, progress=progress)
        self.template_system = template_system

    def build_model(self, *, quantize: bool):
        model, processor = super().build_model(quantize=quantize)
        if self.template_system:
            model.config.system_prompt = None
            processor = MiCoChatProcessor(processor.tokenizer, model.config, processor.settings)
        return model, processor


@dataclass(frozen=True)
class DataVariant:
    """What changes the samples: turns merged per sample, and the system prompt."""

    merge_turns: int
    system: str  # "config": as the config says; "template": the template's default; else the prompt text


@dataclass
class Setup:
    """One built stage (model, data, optimizer) and the batches every measurement on it replays."""

    variant: DataVariant
    recipe: Any
    model: nn.Module  # what the trainer trains (a peft model for LoRA stages)
    core: nn.Module  # the MiCoChatForConditionalGeneration inside
    optimizer: torch.optim.Optimizer
    batches: list[dict[str, Any]]
    metas: list[dict[str, Any]]
    load_s: list[float]  # seconds to load each batch (media decoding + collation)
    answers: dict[str, int]  # sample id -> questions answered


def build_setup(config, variant: DataVariant, num_batches: int, workdir: Path, progress: bool) -> Setup:
    """Build the stage as ``mico-chat train`` does, with the data variant applied, and draw its batches."""
    config = copy.deepcopy(config)
    config.data.merge_turns = variant.merge_turns
    if variant.system not in ("config", "template"):
        config.model.system_prompt = variant.system
    config.train.output_dir = str(workdir)
    recipe = ProfileRecipe(config, template_system=variant.system == "template", progress=progress)
    recipe.setup()
    trainer = recipe.trainer
    model = trainer.model
    if config.train.gradient_checkpointing:  # what Trainer.train does first
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
    model.train()
    optimizer = trainer.create_optimizer()
    batches, metas, load_s = [], [], []
    loader = trainer.get_train_dataloader()
    stream = iter(loader)
    for _ in tqdm(range(num_batches), desc="loading batches", unit="batch", disable=not progress):
        start = time.perf_counter()
        try:
            batch = next(stream)
        except StopIteration:  # fewer batches than steps: a new epoch, as training would go on
            stream = iter(loader)
            batch = next(stream)
        load_s.append(time.perf_counter() - start)
        metas.append(batch.pop("meta"))
        batches.append(batch)
    answers = {s.record_id: sum(1 for m in s.messages if m["role"] == "assistant") for s in recipe.scan.samples}
    return Setup(variant, recipe, model, recipe._unwrapped(), optimizer, batches, metas, load_s, answers)


# ---------------------------------------------------------------------------------------- tokens


def system_prefix_chars(template, messages: Sequence[Mapping[str, str]]) -> int:
    """Characters of the rendered conversation before its first user turn: the system-prompt block.

    The user-turn header (``<|im_start|>user\\n``, ``USER: ``) is what a template writes between an
    explicit system message rendered alone and a probe user text that follows it. Rendering the
    conversation's own messages before its first user turn plus that probe then puts the header
    right before the probe, so the prefix is everything ahead of it, including a system prompt the
    template adds on its own when none is given. A template that renders no user text (``plain``)
    has no header: its prefix is the rendering of the messages before the first user turn.
    """
    first = next(i for i, m in enumerate(messages) if m["role"] == "user")
    before = [dict(m) for m in messages[:first]]
    probe = {"role": "user", "content": PROBE}
    explicit = [{"role": "system", "content": "S"}]
    alone = template.render(explicit, add_generation_prompt=False)
    with_user = template.render(explicit + [probe], add_generation_prompt=False)
    if PROBE not in with_user:
        return len(template.render(before, add_generation_prompt=False)) if before else 0
    if not with_user.startswith(alone):
        raise ValueError(f"template {template.name}: a system message renders differently when a user turn follows")
    header = with_user[len(alone) : with_user.index(PROBE)]
    own = template.render(before + [probe], add_generation_prompt=False)
    at = own.index(PROBE) - len(header)
    if at < 0 or own[at : at + len(header)] != header:
        raise ValueError(f"template {template.name}: the first user turn's header {header!r} is not where expected")
    return at


def encode_sample(processor, spec) -> dict[str, list[int]]:
    """A scanned sample's ``input_ids``/``labels`` as the processor encodes it for training, media
    placeholders expanded by the counts the scan used (nothing decoded)."""
    prepared = PreparedConversation([dict(m) for m in spec.messages], list(spec.media))
    counts = [
        processor.config.num_media_tokens(item.modality, expected_segments(item.modality, processor))
        for item in spec.media
    ]  # as the scan counted them
    enc = processor.encode_text(prepared, counts, add_generation_prompt=False, with_labels=True)
    if len(enc["input_ids"]) != spec.length:
        raise ValueError(f"sample {spec.record_id}: {len(enc['input_ids'])} tokens now, {spec.length} at the scan")
    return enc


def sample_tokens(processor, spec, enc: Mapping[str, list[int]]) -> dict[str, int]:
    """One sample's tokens by kind: ``system``, ``media``, ``question``, ``answer`` (they sum to ``length``).

    ``enc`` is :func:`encode_sample`'s. ``media`` are the placeholder tokens
    (``config.media_token_ids``), ``answer`` the trained ones (``labels != -100``), ``system`` the
    leading tokens whose last character lies in the prefix before the first user turn (the
    processor's own rule for which segment a token belongs to; see :func:`system_prefix_chars`),
    a BOS token the tokenizer adds included; ``question`` is all the rest: user text, turn headers
    and the end-of-turn tokens that are not trained.
    """
    ids, labels = enc["input_ids"], enc["labels"]
    template = processor.template
    messages = [dict(m) for m in spec.messages]
    text = "".join(s.text for s in template.segments(messages))  # the text encode_text tokenizes
    prefix = system_prefix_chars(template, messages)
    raw = processor.tokenizer(text, add_special_tokens=template.add_special_tokens, return_offsets_mapping=True)
    # Offsets rise along the sequence; the prefix holds no placeholder, so its tokens are the same
    # before and after the placeholders are expanded.
    system = sum(1 for _ in itertools.takewhile(lambda span: span[1] <= prefix, raw["offset_mapping"]))
    media_ids = set(processor.config.media_token_ids.values())
    if raw["input_ids"][:system] != ids[:system] or any(
        t in media_ids or label != IGNORE_INDEX for t, label in zip(ids[:system], labels[:system])
    ):
        raise ValueError(f"sample {spec.record_id}: the system prefix holds media or trained tokens")
    media = sum(1 for t in ids if t in media_ids)
    answer = sum(1 for label in labels if label != IGNORE_INDEX)
    return {"system": system, "media": media, "question": len(ids) - system - media - answer, "answer": answer,
            "length": len(ids)}  # fmt: skip


def token_split(setup: Setup, progress: bool) -> dict[str, Any]:
    """Mean tokens per sample by kind over every scanned sample, plus the padding the stage's
    sampler and collator add (token-only samples through the same collator, so nothing is decoded)."""
    recipe = setup.recipe
    samples = recipe.scan.samples
    rows, encoded = [], []
    for spec in tqdm(samples, desc="token split", unit="sample", disable=not progress):
        enc = encode_sample(recipe.processor, spec)
        rows.append(sample_tokens(recipe.processor, spec, enc))
        encoded.append({**enc, "media": [], "features": [], "id": spec.record_id})
    trainer = recipe.trainer
    order = list(trainer._get_train_sampler(trainer.train_dataset))
    size = trainer.args.per_device_train_batch_size
    padding = 0
    for start in range(0, len(order), size):
        batch = trainer.data_collator([encoded[i] for i in order[start : start + size]])
        padding += batch["input_ids"].numel() - batch["meta"]["num_tokens"]
    n = len(rows)
    mean = {k: sum(r[k] for r in rows) / n for k in ("system", "media", "question", "answer", "length")}
    mean["padding"] = padding / n
    mean["padded_length"] = mean["length"] + mean["padding"]
    return {
        "samples": n,
        "answers_per_sample": round(sum(setup.answers[s.record_id] for s in samples) / n, 3),
        "mean_tokens": mean,
        "supervised_fraction": round(mean["answer"] / mean["length"], 4),
        "supervised_fraction_with_padding": round(mean["answer"] / mean["padded_length"], 4),
        "batch_size": size,
        "packing": recipe.config.data.packing,
        "pack_length": recipe.config.data.pack_length,
    }


# ---------------------------------------------------------------------------------------- steps

FORWARD_PARTS = ("encoder", "connectors", "llm_forward", "lm_head", "loss", "other_forward")
PARTS = (*FORWARD_PARTS, "llm_backward", "media_backward", "grad_clip", "optimizer")


class StepClock:
    """Wall time of a training step's parts, from hooks on the model's modules.

    Forward hooks time ``encoder``, each connector, the LLM's decoder stack and its LM head; a
    gradient hook on the decoder's input embeddings marks when the backward pass has gone through
    the whole LLM (the rest of it is the connectors' and encoder's). The hooks only record while
    :meth:`step` runs the forward pass, so a gradient-checkpointing recompute is not counted twice.
    Also records each step's LM-head positions and the decoder's rows and row length (for FLOPs).
    """

    def __init__(self, core: nn.Module):
        self.core = core
        self.recording = False
        self.handles = []
        self.reset()
        llm = core.language_model
        spans = {"encoder": [core.encoder], "connectors": list(core.connectors.values()),
                 "llm_forward": [llm.get_decoder()], "lm_head": [llm.get_output_embeddings()]}  # fmt: skip
        for part, modules in spans.items():
            for module in modules:
                self.handles.append(module.register_forward_pre_hook(self._opener(part)))
                self.handles.append(module.register_forward_hook(self._closer(part)))
        self.handles.append(llm.get_decoder().register_forward_pre_hook(self._watch_embeds, with_kwargs=True))
        self.handles.append(llm.get_output_embeddings().register_forward_pre_hook(self._count_head))

    def reset(self) -> None:
        self.spent = dict.fromkeys(PARTS, 0.0)
        self.opened: dict[str, float] = {}
        self.head_end: float | None = None
        self.embeds_grad_at: float | None = None
        self.head_positions = 0
        self.rows = self.row_length = 0

    def _opener(self, part: str):
        def hook(module, args):
            if self.recording:
                self.opened[part] = time.perf_counter()

        return hook

    def _closer(self, part: str):
        def hook(module, args, output):
            if self.recording:
                now = time.perf_counter()
                self.spent[part] += now - self.opened.pop(part)
                if part == "lm_head":
                    self.head_end = now

        return hook

    def _watch_embeds(self, module, args, kwargs):
        if not self.recording:
            return
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise ValueError("the LLM's decoder was called without inputs_embeds; cannot time its backward")
        self.rows, self.row_length = embeds.shape[0], embeds.shape[1]
        if embeds.requires_grad:
            embeds.register_hook(self._mark_embeds_grad)

    def _mark_embeds_grad(self, grad):
        self.embeds_grad_at = time.perf_counter()

    def _count_head(self, module, args):
        if self.recording:
            self.head_positions += args[0].shape[:-1].numel()

    def step(self, model: nn.Module, optimizer, batch: Mapping[str, Any], *, bf16: bool, max_grad_norm: float):
        """One training step on ``batch``; returns ``(step seconds, {part: seconds})``."""
        self.reset()
        params = [p for p in model.parameters() if p.requires_grad]
        start = time.perf_counter()
        self.recording = True
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        forward_end = time.perf_counter()
        self.recording = False
        loss.backward()
        backward_end = time.perf_counter()
        if max_grad_norm and max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        clip_end = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()}")
        spent = self.spent
        spent["loss"] = forward_end - self.head_end if self.head_end is not None else 0.0
        spent["other_forward"] = (forward_end - start) - sum(spent[p] for p in FORWARD_PARTS[:-1])
        llm_done = self.embeds_grad_at if self.embeds_grad_at is not None else backward_end
        spent["llm_backward"] = llm_done - forward_end
        spent["media_backward"] = backward_end - llm_done
        spent["grad_clip"] = clip_end - backward_end
        spent["optimizer"] = end - clip_end
        return end - start, dict(spent)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def llm_shape(core: nn.Module) -> dict[str, Any]:
    """The LLM's sizes that its FLOPs depend on (see ``FLOP_FORMULA``)."""
    llm = core.language_model
    cfg = llm.config
    linears = [m for m in llm.get_decoder().modules() if isinstance(m, nn.Linear)]
    head = llm.get_output_embeddings().weight
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {
        "hidden": cfg.hidden_size,
        "intermediate": cfg.intermediate_size,
        "vocab": head.shape[0],
        "layers": cfg.num_hidden_layers,
        "attention_width": cfg.num_attention_heads * head_dim,
        "decoder_weights_frozen": sum(m.weight.numel() for m in linears if not m.weight.requires_grad),
        "decoder_weights_trainable": sum(m.weight.numel() for m in linears if m.weight.requires_grad),
        "head_trainable": head.requires_grad,
    }


def llm_flops(shape: Mapping[str, Any], rows: int, row_length: int, head_positions: int) -> float:
    """Forward + backward FLOPs of the LLM for one step (``FLOP_FORMULA``)."""
    tokens = rows * row_length
    attention = 4 * shape["layers"] * rows * row_length**2 * shape["attention_width"]  # forward
    head = 2 * head_positions * shape["hidden"] * shape["vocab"]  # forward
    frozen, trainable = shape["decoder_weights_frozen"], shape["decoder_weights_trainable"]
    forward = 2 * tokens * (frozen + trainable) + attention + head
    head_backward = head * (2 if shape["head_trainable"] else 1)
    backward = 2 * tokens * frozen + 4 * tokens * trainable + 2 * attention + head_backward
    return float(forward + backward)


@dataclass(frozen=True)
class Arm:
    """One measured setting: a data variant plus what changes per step."""

    variant: DataVariant
    head_on_labels: bool = True
    bf16: bool = False
    threads: int = 2


def measure(setup: Setup, arm: Arm, steps: int, warmup: int, max_grad_norm: float, progress: bool, label: str):
    """Run ``warmup + steps`` steps of ``setup``'s batches under ``arm``; means over the last ``steps``."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(arm.threads)
    clock = StepClock(setup.core)
    shape = llm_shape(setup.core)
    totals = dict.fromkeys(PARTS, 0.0)
    step_s = load_s = flops = llm_s = 0.0
    tokens = positions = answers = head_positions = 0
    try:
        for i in tqdm(range(warmup + steps), desc=label, unit="step", disable=not progress, leave=False):
            batch = dict(setup.batches[i])
            if not arm.head_on_labels:
                batch.pop("logits_to_keep", None)  # the LM head on every position: the model's default
            seconds, spent = clock.step(setup.model, setup.optimizer, batch, bf16=arm.bf16, max_grad_norm=max_grad_norm)
            if i < warmup:
                continue
            step_s += seconds
            load_s += setup.load_s[i]
            for part in PARTS:
                totals[part] += spent[part]
            meta = setup.metas[i]
            tokens += meta["num_tokens"]
            answers += sum(setup.answers[sid] for sid in meta["ids"])
            positions += clock.rows * clock.row_length
            head_positions += clock.head_positions
            flops += llm_flops(shape, clock.rows, clock.row_length, clock.head_positions)
            llm_s += spent["llm_forward"] + spent["lm_head"] + spent["llm_backward"]
    finally:
        clock.close()
        torch.set_num_threads(threads_before)
    wall = step_s + load_s
    return {
        "arm": {"merge_turns": arm.variant.merge_turns, "system": arm.variant.system,
                "head_on_labels": arm.head_on_labels, "bf16_autocast": arm.bf16, "threads": arm.threads},  # fmt: skip
        "steps": steps,
        "step_s": step_s / steps,
        "load_s": load_s / steps,
        "parts_s": {p: totals[p] / steps for p in PARTS},
        "tokens_per_step": tokens / steps,
        "positions_per_step": positions / steps,
        "head_positions_per_step": head_positions / steps,
        "answers_per_step": answers / steps,
        "tokens_per_s": tokens / wall,
        "records_per_s": answers / wall,
        "tokens_per_s_compute": tokens / step_s,
        "llm_flops_per_step": flops / steps,
        "llm_gflops_per_s": flops / llm_s / 1e9 if llm_s > 0 else None,
    }


# ---------------------------------------------------------------------------------------- roofline


def mm_rate(m: int, k: int, n: int, dtype: torch.dtype, min_seconds: float = 0.2, max_repeats: int = 5) -> float:
    """Best GFLOP/s of ``torch.mm`` of an ``(m, k)`` by a ``(k, n)`` matrix (one untimed warm-up)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(dtype)
    b = torch.randn(k, n, generator=generator).to(dtype)
    torch.mm(a, b)
    best, spent = float("inf"), 0.0
    for _ in range(max_repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds = time.perf_counter() - start
        best, spent = min(best, seconds), spent + seconds
        if spent >= min_seconds:
            break
    return 2 * m * k * n / best / 1e9


def roofline(
    shape: Mapping[str, Any], tokens: int, head_tokens: int, threads: int, progress: bool
) -> dict[str, Any]:
    """``torch.mm`` GFLOP/s at the LLM's matrix shapes, float32 and bfloat16: ``tokens`` rows by the
    hidden x hidden and hidden x intermediate weights, ``head_tokens`` rows (the positions the LM
    head runs on) by the hidden x vocabulary head. ``best`` is the fastest of the three."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    h = shape["hidden"]
    shapes = {"hidden_x_hidden": (tokens, h), "hidden_x_intermediate": (tokens, shape["intermediate"]),
              "hidden_x_vocab": (head_tokens, shape["vocab"])}  # fmt: skip
    out: dict[str, Any] = {"tokens": tokens, "head_tokens": head_tokens, "threads": threads}
    jobs = [(dtype, name, rows, n) for dtype in ("float32", "bfloat16") for name, (rows, n) in shapes.items()]
    try:
        for dtype, name, rows, n in tqdm(jobs, desc="roofline (torch.mm)", disable=not progress, leave=False):
            out.setdefault(dtype, {})[name] = mm_rate(rows, h, n, getattr(torch, dtype))
    finally:
        torch.set_num_threads(threads_before)
    for dtype in ("float32", "bfloat16"):
        out[dtype]["best"] = max(out[dtype].values())
    return out


# ---------------------------------------------------------------------------------------- levers


@dataclass(frozen=True)
class Lever:
    name: str
    what: str
    off: Arm
    on: Arm


def levers(base: Arm, config) -> list[Lever]:
    """The five levers, each an (off, on) pair that differs from ``base`` in one setting (one side
    of a lever is often the baseline itself, measured once)."""
    short = config.model.system_prompt or SHORT_SYSTEM
    merged = config.data.merge_turns if config.data.merge_turns > 1 else 16
    v = base.variant
    return [
        Lever("merge_turns", f"one record per sample vs data.merge_turns={merged}",
              replace(base, variant=replace(v, merge_turns=1)), replace(base, variant=replace(v, merge_turns=merged))),
        Lever("head_on_labels", "LM head on every position vs on the supervised positions only",
              replace(base, head_on_labels=False), replace(base, head_on_labels=True)),
        Lever("system_prompt", f"the chat template's default system prompt vs model.system_prompt={short!r}",
              replace(base, variant=replace(v, system="template")), replace(base, variant=replace(v, system=short))),
        Lever("bf16_autocast", "float32 vs torch.autocast('cpu', dtype=torch.bfloat16)",
              replace(base, bf16=False), replace(base, bf16=True)),
        Lever("threads", "torch threads 1 vs 2", replace(base, threads=1), replace(base, threads=2)),
    ]  # fmt: skip


def run_arms(config, arms: Sequence[Arm], args, workdir: Path, built: dict[DataVariant, Setup]) -> dict[Arm, dict]:
    """Measure every distinct arm; each data variant's stage is built once (or taken from ``built``)
    and dropped once its arms are measured. Returns the measurement per arm."""
    results: dict[Arm, dict] = {}
    by_variant: dict[DataVariant, list[Arm]] = {}
    for arm in dict.fromkeys(arms):
        by_variant.setdefault(arm.variant, []).append(arm)
    for k, (variant, group) in enumerate(by_variant.items()):
        setup = built.pop(variant, None) or build_setup(
            config, variant, args.warmup + args.steps, workdir / f"variant{k}", not args.no_progress
        )
        for arm in group:
            label = (f"merge {arm.variant.merge_turns}, system {arm.variant.system[:10]!r}, "
                     f"head on labels {arm.head_on_labels}, bf16 {arm.bf16}, {arm.threads} threads")  # fmt: skip
            results[arm] = measure(setup, arm, args.steps, args.warmup, config.train.max_grad_norm,
                                   not args.no_progress, label)  # fmt: skip
        del setup
        gc.collect()
    return results


def lever_table(levers_: Sequence[Lever], results: Mapping[Arm, dict], base: Arm) -> dict[str, Any]:
    baseline = results[base]
    out = {}
    for lever in levers_:
        off, on = results[lever.off], results[lever.on]
        out[lever.name] = {
            "what": lever.what,
            "off": off,
            "on": on,
            "tokens_per_s_ratio": on["tokens_per_s"] / off["tokens_per_s"],
            "records_per_s_ratio": on["records_per_s"] / off["records_per_s"],
            "off_tokens_per_s_vs_baseline": off["tokens_per_s"] / baseline["tokens_per_s"],
            "on_tokens_per_s_vs_baseline": on["tokens_per_s"] / baseline["tokens_per_s"],
        }
    return out


# ---------------------------------------------------------------------------------------- inputs


def tiny_inputs(root: Path) -> Path:
    """The tests' tiny model (tests/helpers/tiny.py) saved as a folder; returns it (needs ``PYTHONPATH=tests``)."""
    from helpers.train_fixtures import save_tiny_model

    return save_tiny_model(root / "tiny_model")


def synthetic_records(root: Path, clips: int, captions: bool) -> Path:
    """A small synthetic world; its instruction records (or caption records for stage 1)."""
    from mico_chat.instruct_data.synth import CAPTIONS_FILE, RECORDS_FILE, WorldConfig, generate_world

    summary = generate_world(root / "world", clips, seed=0, split="train", workers=1,
                             config=WorldConfig(speech="off"), progress=False)  # fmt: skip
    return summary.out_dir / (CAPTIONS_FILE if captions else RECORDS_FILE)


def load_profile_config(args, root: Path) -> tuple[Any, list[str], dict[str, str]]:
    """The stage config with the bench's overrides; returns ``(config, overrides, notes)``."""
    notes: dict[str, str] = {}
    overrides: list[str] = []
    if args.tiny:
        model = tiny_inputs(root)
        overrides += [f"model.init_from={model}", "model.preset=null", "train.per_device_train_batch_size=2"]
        notes["model"] = "tests/helpers/tiny.py tiny model (--tiny)"
    elif args.init_from:
        overrides += [f"model.init_from={args.init_from}", "model.preset=null"]
        notes["model"] = str(args.init_from)
    overrides += list(args.overrides)
    if args.records is not None:
        overrides.append(f"data.train=[{args.records}]")
        notes["records"] = str(args.records)
    elif any(o.partition("=")[0].strip() == "data.train" for o in args.overrides):
        notes["records"] = "data.train as given"
    # The stage and model sections decide what to fill in; data.train may still be the config's "???".
    config = load_config(args.config, [*overrides, "data.train=[unset]"] if "records" not in notes else overrides)
    if config.model.init_from is not None and not Path(config.model.init_from).exists():
        overrides += ["model.init_from=null", "model.preset=default"]
        notes["model"] = (f"preset 'default' standing in for {config.model.init_from}, which does not exist "
                          "(same LLM; a pipeline-trained encoder may give other media token counts)")  # fmt: skip
    notes.setdefault("model", str(config.model.init_from or f"preset {config.model.preset!r}"))
    if "records" not in notes:
        clips = 2 if args.tiny else args.world_clips
        records = synthetic_records(root, clips, config.stage.name == "stage1_align")
        overrides.append(f"data.train=[{records}]")
        notes["records"] = f"a synthetic world of {clips} clips ({records.name}), generated for this run"
    overrides += [f"train.output_dir={root / 'run'}", "train.use_cpu=true"]
    return load_config(args.config, overrides), overrides, notes


# ---------------------------------------------------------------------------------------- report


def achieved(measured: Mapping[str, Any], arm: Arm, roof: Mapping[str, Any]) -> dict[str, Any]:
    """An arm's achieved LLM GFLOP/s and its ratio to the best ``torch.mm`` rate of its precision."""
    dtype = "bfloat16" if arm.bf16 else "float32"
    rate = measured["llm_gflops_per_s"]
    return {"precision": "bf16 autocast" if arm.bf16 else "float32", "achieved_gflops_per_s": rate,
            "roofline_gflops_per_s": roof[dtype]["best"], "vs_roofline": rate / roof[dtype]["best"]}  # fmt: skip


def print_report(result: Mapping[str, Any]) -> None:
    tok = result["tokens"]
    mean = tok["mean_tokens"]
    print(f"\n{result['stage']} on {result['notes']['records']}; model: {result['notes']['model']}")
    print(f"{tok['samples']} samples, {tok['answers_per_sample']:.2f} answers per sample, "
          f"batch {tok['batch_size']}, packing {tok['packing']}\n")  # fmt: skip
    print("| tokens per sample | mean | share |\n|---|---:|---:|")
    for kind in ("system", "media", "question", "answer", "padding"):
        print(f"| {kind} | {mean[kind]:.1f} | {mean[kind] / mean['padded_length']:.1%} |")
    print(f"| **total** (real {mean['length']:.1f}) | {mean['padded_length']:.1f} | 100% |")
    print(f"supervised: {tok['supervised_fraction']:.1%} of real tokens, "
          f"{tok['supervised_fraction_with_padding']:.1%} with padding\n")  # fmt: skip
    step = result["step"]
    print(f"| step part ({step['steps']} steps, {result['threads']} threads) | ms | share |\n|---|---:|---:|")
    for part, seconds in step["parts_s"].items():
        print(f"| {part} | {seconds * 1e3:.1f} | {seconds / step['step_s']:.1%} |")
    print(f"| **step** | {step['step_s'] * 1e3:.1f} | 100% |")
    print(f"| batch loading (apart) | {step['load_s'] * 1e3:.1f} | |")
    print(f"{step['tokens_per_step']:.0f} tokens, {step['positions_per_step']:.0f} positions, "
          f"{step['head_positions_per_step']:.0f} LM-head positions per step; {step['tokens_per_s']:.1f} tokens/s, "
          f"{step['records_per_s']:.2f} records/s (loading included)\n")  # fmt: skip
    flops, roof = result["flops"], result["roofline"]
    print(f"LLM FLOPs: {FLOP_FORMULA}")
    print(f"LLM: {flops['per_step'] / 1e9:.3f} GFLOP per step\n")
    print(f"| torch.mm, {roof['tokens']} rows ({roof['head_tokens']} for the head) | float32 GFLOP/s | "
          "bfloat16 GFLOP/s |\n|---|---:|---:|")
    for name in ("hidden_x_hidden", "hidden_x_intermediate", "hidden_x_vocab", "best"):
        print(f"| {name} | {roof['float32'][name]:.1f} | {roof['bfloat16'][name]:.1f} |")
    for row in (flops, flops.get("other_precision")):
        if row:
            print(f"achieved ({row['precision']}): {row['achieved_gflops_per_s']:.2f} GFLOP/s, "
                  f"{row['vs_roofline']:.1%} of the best {row['precision'].split()[0]} mm")  # fmt: skip
    if result.get("levers"):
        print("\n| lever | off tokens/s | on tokens/s | tokens/s on/off | records/s on/off | off, on vs baseline |")
        print("|---|---:|---:|---:|---:|---|")
        for name, row in result["levers"].items():
            print(f"| {name}: {row['what']} | {row['off']['tokens_per_s']:.1f} | {row['on']['tokens_per_s']:.1f} | "
                  f"{row['tokens_per_s_ratio']:.2f}x | {row['records_per_s_ratio']:.2f}x | "
                  f"{row['off_tokens_per_s_vs_baseline']:.2f}x, "
                  f"{row['on_tokens_per_s_vs_baseline']:.2f}x |")  # fmt: skip
    print(f"\nload average {result['load_average_before']} before, {result['load_average_after']} after")


# ---------------------------------------------------------------------------------------- main


def profile(args) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    progress = not args.no_progress
    with tempfile.TemporaryDirectory(prefix="mico-profile-") as tmp:
        root = Path(tmp)
        config, overrides, notes = load_profile_config(args, root)
        variant = DataVariant(config.data.merge_turns, config.model.system_prompt or "config")
        setup = build_setup(config, variant, args.warmup + args.steps, root / "baseline", progress)
        # The baseline is the config as given: bf16 autocast when the trainer would use it.
        base = Arm(variant, head_on_labels=True, bf16=bool(setup.recipe.trainer.args.bf16), threads=args.threads)
        tokens = token_split(setup, progress)
        shape = llm_shape(setup.core)
        parameters = dict(setup.recipe.parameter_counts)
        chosen = levers(base, config) if args.levers else []
        arms = [base, *(arm for lever in chosen for arm in (lever.off, lever.on))]
        built = {base.variant: setup}
        del setup
        results = run_arms(config, arms, args, root, built)
        baseline = results[base]
        roof = roofline(shape, max(1, round(baseline["positions_per_step"])),
                        max(1, round(baseline["head_positions_per_step"])), args.threads, progress)  # fmt: skip
    flops = {"formula": FLOP_FORMULA, "per_step": baseline["llm_flops_per_step"], **achieved(baseline, base, roof)}
    other = next((a for a in results if a.bf16 != base.bf16 and a.variant == base.variant and a.head_on_labels
                  and a.threads == base.threads), None)  # the bf16 lever's other arm  # fmt: skip
    if other is not None:
        flops["other_precision"] = achieved(results[other], other, roof)
    return {
        "config": str(args.config),
        "overrides": overrides,
        "stage": config.stage.name,
        "notes": notes,
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "steps": args.steps,
        "warmup": args.warmup,
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "parameters": parameters,
        "llm_shape": shape,
        "tokens": tokens,
        "step": baseline,
        "flops": flops,
        "roofline": roof,
        "levers": lever_table(chosen, results, base) if chosen else {},
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for mico-chat train")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="stage config (default: %(default)s)")
    parser.add_argument("--records", type=Path, help="records file (default: a small synthetic world)")
    parser.add_argument("--init-from", type=Path, help="a MiCo-Chat model folder (default: the config's model)")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per setting")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the baseline")
    parser.add_argument("--levers", action="store_true", help="also measure the five throughput levers")
    parser.add_argument("--world-clips", type=int, default=16, help="clips of the generated world (no --records)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model and world: seconds")
    parser.add_argument("--out", type=Path, help="write every number to this JSON file")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    result = profile(args)
    print_report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``MiCoTrainer``: the Hugging Face ``Trainer`` with what staged multimodal training needs.

What it changes, each by overriding a method ``Trainer`` documents for subclassing:

- ``training_step``: pops the collator's ``meta``, counts real tokens (``state.num_input_tokens_seen``,
  so the count survives a resume) and stops with :class:`NonFiniteLossError` when the loss is NaN
  or infinite, *before* the optimizer applies that step, so the last checkpoint stays good.
- ``_save_checkpoint``: atomic. Everything is written to ``.checkpoint-N.partial`` first, flushed
  to disk, then renamed to ``checkpoint-N`` in one ``rename``; a kill mid-save leaves at most a
  ``.partial`` folder that ``get_last_checkpoint`` never picks (it is removed on the next start).
- ``_save`` / ``_load_from_checkpoint``: a checkpoint's model part holds only the trainable
  parameters (``trainable.safetensors``): the frozen LLM and encoder are rebuilt from their source,
  so a stage-1 checkpoint of a 7B model is megabytes, not 13 GB. Under DeepSpeed the engine's own
  checkpoint (all states, sharded) is what resumes.
- ``_get_train_sampler``: length grouping from the lengths the scan measured (transformers' own
  would decode every sample's media to measure it), seeded per epoch so a resume replays the order.
- ``create_optimizer``: an optional separate learning rate for the connectors.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .data import LengthGroupedSampler
from .errors import NonFiniteLossError, TrainingError
from .lexical import lexical_alignment_loss
from .stages import base_name

logger = logging.getLogger(__name__)

TRAINABLE_WEIGHTS = "trainable.safetensors"
PARTIAL_SUFFIX = ".partial"
TRAINER_STATE = "trainer_state.json"


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_partial_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """Delete ``.checkpoint-N.partial`` folders a killed save left behind; returns their names."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(f".{PREFIX_CHECKPOINT_DIR}-*{PARTIAL_SUFFIX}"):
        shutil.rmtree(path)
        removed.append(path.name)
    return removed


class MiCoTrainer(Trainer):
    """``Trainer`` for MiCo-Chat stages (see the module docstring).

    Extra args:
        lengths: per-sample token counts from the scan (for length grouping).
        connector_lr: learning rate of ``connectors.*`` parameters (``None``: the main one).
        encoder_lr: learning rate of ``encoder.*`` parameters when a stage trains them (``None``: the main one).
        content_tokens: ``(vocab,)`` bool mask of caption words: train with the lexical alignment
            loss (:func:`.lexical.lexical_alignment_loss`) instead of the LLM's next-token loss.
    """

    def __init__(
        self,
        *args: Any,
        lengths: list[int] | None = None,
        connector_lr: float | None = None,
        encoder_lr: float | None = None,
        content_tokens: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.content_tokens = content_tokens  # set: the lexical objective (see .lexical) instead of the LM loss
        self.lengths = lengths
        self.connector_lr = connector_lr
        self.encoder_lr = encoder_lr
        self.session_tokens = 0  # real (non-padding) tokens, this session, all processes
        self.num_labels_seen = 0  # trained tokens, this session, all processes

    # ------------------------------------------------------------------ steps
    def training_step(self, model, inputs, num_items_in_batch=None):
        meta = inputs.pop("meta", None) or {}
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            last = self._last_checkpoint()
            where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.state.global_step + 1} (records {meta.get('ids')}); stopped "
                f"before the optimizer step; {where}. Lower train.learning_rate or check those records, then "
                "run again (train.resume=auto resumes from that checkpoint)"
            )
        counts = torch.tensor([meta.get("num_tokens", 0), meta.get("num_labels", 0)], device=self.args.device)
        tokens, labels = (int(x) for x in self.accelerator.gather(counts).view(-1, 2).sum(dim=0))  # all ranks
        self.state.num_input_tokens_seen += tokens
        self.session_tokens += tokens
        self.num_labels_seen += labels
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.content_tokens is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, _ = lexical_alignment_loss(self.accelerator.unwrap_model(model), inputs, self.content_tokens)
        return (loss, None) if return_outputs else loss

    def _last_checkpoint(self) -> str | None:
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None

    # ------------------------------------------------------------------ sampling / optimizer
    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy == "group_by_length":
            if self.lengths is None:
                raise TrainingError("length grouping needs the scanned sample lengths")
            group = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedSampler(self.lengths, group, seed=self.args.data_seed or self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def create_optimizer(self, model=None):
        if (self.connector_lr is None and self.encoder_lr is None) or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        rates = {"connectors.": self.connector_lr, "encoder.": self.encoder_lr}
        groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
        for name, param in opt_model.named_parameters():
            if param.requires_grad:
                part = next((p for p in rates if base_name(name).startswith(p) and rates[p] is not None), "")
                groups.setdefault((part, name in decay), []).append(param)
        param_groups = [
            {
                "params": params,
                "weight_decay": self.args.weight_decay if decayed else 0.0,
                **({"lr": rates[part]} if part else {}),
            }
            for (part, decayed), params in sorted(groups.items())
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------ checkpoints
    def _trainable_names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if p.requires_grad]

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write the trainable parameters (and the processor) to ``output_dir``."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        names = self._trainable_names()
        if state_dict is None:
            own = dict(self.model.named_parameters())
            tensors = {n: own[n].detach() for n in names}
        else:
            missing = [n for n in names if n not in state_dict]
            if missing:
                raise TrainingError(
                    f"the gathered state dict lacks {len(missing)} trainable tensors (e.g. {missing[0]}); under "
                    "ZeRO-3 set stage3_gather_16bit_weights_on_model_save: true in the DeepSpeed config"
                )
            tensors = {n: state_dict[n] for n in names}
        tensors = {n: t.to("cpu").contiguous() for n, t in tensors.items()}
        save_file(tensors, os.path.join(output_dir, TRAINABLE_WEIGHTS), metadata={"format": "pt"})

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.model if model is None else model
        path = os.path.join(resume_from_checkpoint, TRAINABLE_WEIGHTS)
        if not os.path.isfile(path):
            raise TrainingError(f"{path}: missing; {resume_from_checkpoint} is not a MiCo-Chat training checkpoint")
        tensors = load_file(path)
        own = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if set(tensors) != set(own):
            extra, missing = sorted(set(tensors) - set(own)), sorted(set(own) - set(tensors))
            raise TrainingError(
                f"{path} was written by a different stage or model: {len(extra)} unexpected tensors "
                f"{extra[:2]}, {len(missing)} missing {missing[:2]}"
            )
        with torch.no_grad():
            for name, tensor in tensors.items():
                if own[name].shape != tensor.shape:
                    raise TrainingError(
                        f"{path}: {name} has shape {tuple(tensor.shape)}, the model {tuple(own[name].shape)}"
                    )
                own[name].copy_(tensor)

    def _save_checkpoint(self, model, trial) -> None:
        """Save model, optimizer, scheduler, RNG and trainer state into ``checkpoint-N``, atomically."""
        if trial is not None or self.args.push_to_hub or self.args.load_best_model_at_end:
            raise TrainingError("hyper-parameter search, hub pushes and best-model tracking are not supported here")
        from transformers.trainer_callback import ExportableState
        from transformers.trainer_utils import rotate_checkpoints

        self.store_flos()
        run_dir = Path(self._get_output_dir(trial=trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = run_dir / name
        staging = run_dir / f".{name}{PARTIAL_SUFFIX}"
        if self.args.should_save and staging.exists():
            shutil.rmtree(staging)
        self.accelerator.wait_for_everyone()
        self.save_model(str(staging), _internal_call=True)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(staging))
            self._save_scaler(str(staging))
            self._save_rng_state(str(staging))
        self.accelerator.wait_for_everyone()  # every rank's shards are in before the rename
        if not self.args.should_save:
            return
        for callback in [
            cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)
        ]:
            key = callback.__class__.__name__
            if isinstance(self.state.stateful_callbacks.get(key), list):
                self.state.stateful_callbacks[key].append(callback.state())
            else:
                self.state.stateful_callbacks[key] = callback.state()
        self.state.save_to_json(str(staging / TRAINER_STATE))
        _fsync_tree(staging)
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            old = run_dir / f".{name}.old"
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old)
        else:
            staging.rename(final)
        _fsync_dir(run_dir)
        rotate_checkpoints(
            output_dir=str(run_dir),
            save_total_limit=self.args.save_total_limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
            use_mtime=False,
        )

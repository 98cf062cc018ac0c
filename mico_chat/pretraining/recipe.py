"""The MiCo pretraining recipe: ``setup`` / ``train`` / ``save_checkpoint`` / ``export``.

Runs on CPU for tiny configs and on GPUs under ``accelerate launch`` (DDP or DeepSpeed through
accelerate). A step is a pure function of ``(seed, step)`` plus the model state (the batch, the
hard-negative draws and the caption masks are seeded per step; dropout uses the global RNG, seeded
with ``train.seed`` once set-up is done and stored in checkpoints), so resuming from
``checkpoint-N`` continues exactly as the uninterrupted run.

Files in ``train.output_dir``::

    config.yaml            the resolved config
    loss.jsonl             one line per step: losses per objective, dataset, lr, temperature
    loss.png               loss curves (smoothed), rewritten at every checkpoint
    eval.jsonl             held-out retrieval during training (when an evaluator is given)
    checkpoint-N/          model.safetensors, optimizer.pt, scheduler.json, rng.safetensors, state.json
    model/                 the final MiCoForPretraining (+ tokenizer, media_settings.json)
    encoder/               the exported MiCoEncoder for the chat model (+ media_settings.json)
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mico_chat.encoders import MiCoForPretraining, build_pretraining_model, group_key, parse_group
from mico_chat.preprocess import MediaSettings

from .config import PretrainConfig, PretrainConfigError
from .data import MediaTable, PretrainingMixture, build_media_table
from .plots import plot_losses

Evaluator = Callable[[MiCoForPretraining, Any, int], dict[str, Any]]
"""``(model, tokenizer, step) -> metrics`` run every ``eval.every`` steps (see the ``pretrain`` command)."""

NO_DECAY = ("bias", "LayerNorm", "layer_norm", "norm.", "embedding", "class_embedding", "logit_scale")


def _lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor


class PretrainRecipe:
    """One pretraining run (see the module docstring).

    Args:
        config: the run's configuration.
        evaluator: optional held-out evaluation, called with ``(model, tokenizer, step)``.
        progress: show progress bars.
    """

    def __init__(self, config: PretrainConfig, *, evaluator: Evaluator | None = None, progress: bool = True):
        self.config = config
        self.evaluator = evaluator
        self.progress = progress
        self.output_dir = Path(config.train.output_dir)
        self.step = 0
        self.model: MiCoForPretraining | None = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build tokenizer, model, data, optimizer and schedule; resume when a checkpoint is found."""
        from accelerate import Accelerator
        from accelerate.utils import DeepSpeedPlugin, set_seed

        cfg = self.config
        plugin = DeepSpeedPlugin(hf_ds_config=cfg.train.deepspeed) if cfg.train.deepspeed else None
        self.accelerator = Accelerator(
            mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available(), deepspeed_plugin=plugin
        )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        resume_from = self._resume_point()
        self.model, self.tokenizer = self._build_model()
        self.settings = MediaSettings.from_dict(cfg.data.media)
        self.tables = self._build_tables()
        specs = cfg.data.datasets
        if cfg.train.objectives is not None:
            specs = [replace(s, objectives=[o for o in s.objectives if o in cfg.train.objectives]) for s in specs]
        self.mixture = PretrainingMixture(
            [(spec, self.tables[i]) for i, spec in enumerate(specs)],
            self.tokenizer,
            batch_size=cfg.data.batch_size,
            max_text_length=self.model.config.max_text_length,
            seed=cfg.train.seed,
            sampling_contexts=self.model.config.encoder_config.num_sampling_contexts > 0,
            word_swaps=cfg.data.word_swaps,
            image_mean=self.settings.image_mean,
            image_std=self.settings.image_std,
        )
        for prefix in cfg.model.freeze:
            hits = [p for n, p in self.model.named_parameters() if n.startswith(prefix)]
            if not hits:
                raise PretrainConfigError(f"model.freeze: no parameter starts with {prefix!r}")
            for p in hits:
                p.requires_grad_(False)
        if cfg.train.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.optimizer = torch.optim.AdamW(
            self._param_groups(), lr=cfg.train.learning_rate, betas=(cfg.train.adam_beta1, cfg.train.adam_beta2)
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(cfg.train.schedule, cfg.train.warmup_steps, cfg.train.max_steps)
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            self.model, self.optimizer, self.scheduler
        )
        (self.output_dir / "config.yaml").write_text(cfg.to_yaml())
        # Dropout draws from the global RNG. Building the model leaves it in a state that varies
        # from process to process (weight loading consumes random numbers unevenly), so seed it
        # here: two fresh runs of one config then log identical losses from step 1.
        set_seed(cfg.train.seed)
        if resume_from is not None:
            self.load_checkpoint(resume_from)

    def _param_groups(self) -> list[dict]:
        """AdamW groups: weight decay or not (biases, norms, embeddings, temperature), times each
        ``train.lr_multipliers`` factor (the longest matching name prefix wins)."""
        train = self.config.train
        multipliers = sorted(train.lr_multipliers.items(), key=lambda kv: -len(kv[0]))
        unused = set(train.lr_multipliers)
        groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            factor = 1.0
            for prefix, value in multipliers:
                if name.startswith(prefix):
                    factor = float(value)
                    unused.discard(prefix)
                    break
            decay = not any(k in name for k in NO_DECAY)
            groups.setdefault((decay, factor), []).append(p)
        if unused:
            raise PretrainConfigError(f"train.lr_multipliers: no trainable parameter starts with {sorted(unused)}")
        return [
            {"params": params, "weight_decay": train.weight_decay if decay else 0.0, "lr": train.learning_rate * factor}
            for (decay, factor), params in sorted(groups.items())
        ]

    def _resume_point(self) -> Path | None:
        resume = self.config.train.resume
        if isinstance(resume, str) and resume != "auto":
            return Path(resume)
        found = self.checkpoints()
        if resume is False and found:
            raise PretrainConfigError(
                f"{self.output_dir} already has {found[-1].name}; use train.resume=auto to continue or a new output_dir"
            )
        return found[-1] if found and resume == "auto" else None

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints in ``output_dir``, oldest first."""
        found = [
            p for p in self.output_dir.glob("checkpoint-*") if (p / "state.json").is_file() and p.name[11:].isdigit()
        ]
        return sorted(found, key=lambda p: int(p.name[11:]))

    def _build_model(self):
        from transformers import AutoTokenizer

        cfg = self.config.model
        if cfg.init_from is not None:
            model = MiCoForPretraining.from_pretrained(cfg.init_from)
            return model.train(), AutoTokenizer.from_pretrained(cfg.init_from)
        from mico_chat.weights import resolve_model_path

        text_path = resolve_model_path(cfg.text, kind="text-encoder")
        tokenizer = AutoTokenizer.from_pretrained(text_path)
        datasets = self.config.data.datasets
        contexts = len(datasets) if cfg.sampling_contexts else 0
        group_contexts: dict[str, int] = {}
        for i, spec in enumerate(datasets):
            if not spec.cross_sample:
                group_contexts.setdefault(group_key(parse_group(spec.group)), i)
        model = build_pretraining_model(
            {**cfg.encoder, "num_sampling_contexts": contexts},
            text_path,
            tokenizer=tokenizer,
            text_overrides={**cfg.text_overrides, "num_sampling_contexts": contexts},
            seed=cfg.seed,
            contrastive_dim=cfg.contrastive_dim,
            temperature=cfg.temperature,
            label_smoothing=cfg.label_smoothing,
            fusion_groups=cfg.fusion_groups,
            joint_context=cfg.joint_context,
            text_pooling=cfg.text_pooling,
            matching_pooling=cfg.matching_pooling,
            matching_negatives=cfg.matching_negatives,
            condition_tokens=cfg.condition_tokens,
            generation_mask_prob=cfg.generation_mask_prob,
            max_text_length=cfg.max_text_length,
            group_sampling_contexts=group_contexts if contexts else {},
        )
        return model.train(), tokenizer

    def _build_tables(self) -> list[MediaTable]:
        cfg = self.config
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else self.output_dir / "cache"
        built: dict[tuple, MediaTable] = {}
        tables = []
        for spec in cfg.data.datasets:
            key = (spec.records, spec.media_root, group_key(parse_group(spec.group)), spec.limit)
            if key not in built:
                built[key] = build_media_table(
                    spec.records,
                    spec.group,
                    self.settings,
                    self.model.config.encoder_config,
                    media_root=spec.media_root,
                    cache_dir=cache,
                    limit=spec.limit,
                    strict=cfg.data.strict,
                    progress=self.progress,
                )
                if built[key].skipped:
                    print(f"{spec.records}: skipped {len(built[key].skipped)} records, e.g. {built[key].skipped[0]}")
            tables.append(built[key])
        return tables

    # ------------------------------------------------------------------ training
    def train(self, *, until: int | None = None) -> dict[str, float]:
        """Train to ``train.max_steps`` (or stop after step ``until``, saving a checkpoint there,
        as an interrupted run would). Returns the mean losses of the last logging window.

        ``train.torch_threads`` applies to this call only: the process's thread count is restored
        afterwards, so later work in the same process (a pipeline's next stage, other tests) keeps
        its own, and its results do not depend on what ran before it."""
        before = torch.get_num_threads()
        if self.config.train.torch_threads:
            torch.set_num_threads(self.config.train.torch_threads)
        try:
            return self._train(until)
        finally:
            torch.set_num_threads(before)

    def _train(self, until: int | None) -> dict[str, float]:
        cfg = self.config.train
        stop = cfg.max_steps if until is None else min(until, cfg.max_steps)
        model, device = self.model, self.accelerator.device
        model.train()
        log_path = self.output_dir / "loss.jsonl"
        window: dict[str, list[float]] = {}
        last_window: dict[str, list[float]] = {}
        bar = tqdm(
            total=stop,
            initial=self.step,
            desc="pretrain",
            disable=not self.progress or not self.accelerator.is_main_process,
        )
        with log_path.open("a", encoding="utf-8") as log:
            while self.step < stop:
                started = time.perf_counter()
                dataset, batch = self.mixture.batch(self.step)
                generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
                with self.accelerator.autocast():
                    out = model(batch.to(device), generator=generator)
                if not torch.isfinite(out.loss):
                    raise FloatingPointError(
                        f"step {self.step}: loss is {out.loss.item()} ({ {k: v.item() for k, v in out.losses.items()} })"
                    )
                self.accelerator.backward(out.loss)
                if cfg.max_grad_norm > 0:
                    self.accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                row = {
                    "step": self.step,
                    "dataset": self.mixture.names[dataset],
                    "loss": out.loss.item(),
                    **{k: v.item() for k, v in out.losses.items()},
                    "lr": self.scheduler.get_last_lr()[0],
                    "temperature": math.exp(-self.accelerator.unwrap_model(model).logit_scale.item()),
                    "seconds": round(time.perf_counter() - started, 4),
                }
                if self.accelerator.is_main_process:
                    log.write(json.dumps(row) + "\n")
                for k in ("loss", "contrastive", "matching", "generation"):
                    if k in row:
                        window.setdefault(k, []).append(row[k])
                if self.step % cfg.logging_steps == 0:
                    log.flush()
                    bar.set_postfix({k: f"{sum(v) / len(v):.3f}" for k, v in window.items()})
                    last_window, window = window, {}
                bar.update(1)
                if self.evaluator is not None and self.config.eval.records and self.step % self.config.eval.every == 0:
                    self._evaluate()
                if self.step % cfg.save_steps == 0 or self.step == stop:
                    log.flush()
                    self.save_checkpoint()
        bar.close()
        return {k: sum(v) / len(v) for k, v in (window or last_window).items()}

    def _evaluate(self) -> dict[str, Any]:
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        metrics = self.evaluator(model, self.tokenizer, self.step)
        model.train()
        if self.accelerator.is_main_process:
            with (self.output_dir / "eval.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": self.step, **metrics}) + "\n")
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` atomically (a temporary folder renamed when complete), keep
        the newest ``save_total_limit``, redraw the loss plot."""
        from safetensors.torch import save_file

        final = self.output_dir / f"checkpoint-{self.step}"
        tmp = self.output_dir / f".checkpoint-{self.step}.tmp"
        main = self.accelerator.is_main_process
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        if self.config.train.deepspeed:  # the engine owns the sharded model and optimizer states
            self.accelerator.save_state(str(tmp / "accelerate"))
        if main:
            if not self.config.train.deepspeed:
                model = self.accelerator.unwrap_model(self.model)
                state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
                save_file(state, str(tmp / "model.safetensors"))
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "scheduler.json").write_text(json.dumps(self.scheduler.state_dict()))
            rng = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
            save_file(rng, str(tmp / "rng.safetensors"))
            (tmp / "state.json").write_text(json.dumps({"step": self.step, "max_steps": self.config.train.max_steps}))
            if final.exists():
                shutil.rmtree(final)
            tmp.replace(final)
            for old in self.checkpoints()[: -self.config.train.save_total_limit]:
                shutil.rmtree(old)
            plot_losses(self.output_dir / "loss.jsonl", self.output_dir / "loss.png")
        self.accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        """Restore model, optimizer, scheduler, RNG and step from ``path``; truncate ``loss.jsonl`` to it."""
        from safetensors.torch import load_file

        state = json.loads((path / "state.json").read_text())
        if state["max_steps"] != self.config.train.max_steps:
            raise PretrainConfigError(
                f"{path} belongs to a run of {state['max_steps']} steps; train.max_steps={self.config.train.max_steps} "
                "would change its learning-rate schedule"
            )
        model = self.accelerator.unwrap_model(self.model)
        if self.config.train.deepspeed:
            self.accelerator.load_state(str(path / "accelerate"))
        else:
            model.load_state_dict(load_file(str(path / "model.safetensors")))
            self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
        self.scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
        rng = load_file(str(path / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and "cuda0" in rng:
            torch.cuda.set_rng_state_all(
                [rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng]
            )
        self.step = int(state["step"])
        log = self.output_dir / "loss.jsonl"
        if log.is_file():
            keep = [line for line in log.read_text().splitlines() if line and json.loads(line)["step"] <= self.step]
            log.write_text("".join(line + "\n" for line in keep))

    # ------------------------------------------------------------------ export
    def export(self) -> tuple[Path, Path]:
        """Write ``model/`` (pretraining model + tokenizer) and ``encoder/`` (for the chat model)."""
        self.accelerator.wait_for_everyone()
        model_dir, encoder_dir = self.output_dir / "model", self.output_dir / "encoder"
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model).eval()
            model.save_pretrained(model_dir)
            self.tokenizer.save_pretrained(model_dir)
            model.export_encoder().save_pretrained(encoder_dir)
            for folder in (model_dir, encoder_dir):
                (folder / "media_settings.json").write_text(json.dumps(self.settings.to_dict(), indent=2))
            plot_losses(self.output_dir / "loss.jsonl", self.output_dir / "loss.png")
        return model_dir, encoder_dir

"""``TrainRecipe``: one training run, ``setup -> train -> save -> cleanup``.

A recipe reads a :class:`~mico_chat.training.config.TrainConfig` and owns the run's parts:

- ``setup``: build the model (a preset, or a saved MiCo-Chat folder; the LLM 4/8-bit quantized
  for QLoRA), apply the stage (freeze, add LoRA, mark trainable), scan the records, optionally
  cache the frozen encoder's outputs, and create the :class:`MiCoTrainer` with its collator.
- ``train``: run the Trainer, resuming from the newest complete checkpoint when asked.
- ``save``: export the trained model (LoRA merged) to ``output_dir/model``, a folder
  ``ChatModel.load`` reads.
- ``cleanup``: loss / learning-rate plots and ``summary.json``.

Run folder::

    output_dir/
      config.yaml            the resolved config
      checkpoint-N/          trainable weights, optimizer, scheduler, RNG, trainer state (atomic)
      model/                 the exported model (config, safetensors, tokenizer, processor config)
      loss.png  lr.png  grad_norm.png
      summary.json           tokens seen, throughput, peak memory, data counts, status
      skipped_records.jsonl  every record the scan skipped, with the reason
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from mico_chat.modality import Modality

from .collator import PackingCollator, PaddingCollator
from .config import TrainConfig
from .data import (
    SampleDataset,
    ScanReport,
    cache_encoder_features,
    sample_labels,
    scan_records,
    stored_encoder_features,
)
from .errors import NonFiniteLossError, TrainConfigError, TrainingError
from .lexical import content_token_mask
from .reports import peak_memory, plot_run, write_json
from .stages import Stage, expand_patterns, get_stage, lora_target_regex, mark_trainable, trainable_parameter_names
from .trainer import MiCoTrainer, remove_partial_checkpoints

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX): there bf16 autocast made
    stage 2 1.67x faster (docs/benchmarks.md); on an AVX2 CPU oneDNN converts every matmul and
    autocast is slower than float32 (docs/default_model.md, run 14)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch.cpu helpers
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


class TrainRecipe:
    """One run of one stage (see the module docstring).

    Args:
        config: the run's config.
        progress: show progress bars (scan, feature cache, training).
        trainer_cls: the trainer class (a :class:`MiCoTrainer` subclass to customise steps or saving).
        callbacks: ``transformers.TrainerCallback`` objects added to the trainer.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        progress: bool = True,
        trainer_cls: type[MiCoTrainer] = MiCoTrainer,
        callbacks: Sequence[Any] = (),
    ):
        self.config = config
        self.progress = progress
        self.trainer_cls = trainer_cls
        self.callbacks = list(callbacks)
        self.stage: Stage = get_stage(config.stage.name)
        self.output_dir = Path(config.train.output_dir)
        self.model: nn.Module | None = None
        self.processor = None
        self.trainer: MiCoTrainer | None = None
        self.scan: ScanReport | None = None
        self.trainable_names: list[str] = []
        self.parameter_counts: dict[str, int] = {}
        self.resumed_from: str | None = None
        self.status = "not started"
        self.train_metrics: dict[str, Any] = {}
        self.export_dir: Path | None = None
        self._wall = 0.0

    # ================================================================== setup
    def setup(self) -> None:
        """Build model, stage, data and trainer (see the module docstring)."""
        cfg = self.config
        if cfg.train.deepspeed:
            from .launch import prepare_deepspeed_environment

            if not Path(cfg.train.deepspeed).is_file():
                raise TrainConfigError(f"train.deepspeed: {cfg.train.deepspeed} is not a file")
            added = prepare_deepspeed_environment()
            if added:
                logger.info("one-process DeepSpeed run: set %s", ", ".join(f"{k}={v}" for k, v in added.items()))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        removed = remove_partial_checkpoints(self.output_dir)
        if removed:
            logger.warning("removed unfinished checkpoint save(s) of a killed run: %s", ", ".join(removed))
        (self.output_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        transformers.set_seed(cfg.train.seed)

        model, processor = self.build_model(quantize=self.stage.quantize)
        self.processor = processor
        self.model = self.apply_stage(model)
        if not cfg.train.deepspeed:
            # The optimizer updates trainable weights in float32 (DeepSpeed keeps its own fp32 copy);
            # frozen weights stay in model.dtype, and autocast runs the matmuls in bf16/fp16.
            for param in self.model.parameters():
                if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
                    param.data = param.data.float()
        self.trainable_names = trainable_parameter_names(self.model)
        self.parameter_counts = {
            "total": sum(p.numel() for p in self.model.parameters()),
            "trainable": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "trainable_tensors": len(self.trainable_names),
        }
        logger.info(
            "stage %s: %d trainable tensors, %s of %s parameters",
            self.stage.name,
            len(self.trainable_names),
            f"{self.parameter_counts['trainable']:,}",
            f"{self.parameter_counts['total']:,}",
        )

        data = cfg.data
        self.scan = scan_records(
            data.train,
            processor,
            media_root=data.media_root,
            caption_kinds=data.caption_kinds,
            instruction=data.instruction,
            max_length=data.max_length,
            strict=data.strict,
            probe_media=data.probe_media,
            limit=data.limit,
            merge=data.merge_turns,
            progress=self.progress,
        )
        self._write_skipped()
        if not self.scan.samples:
            raise TrainingError(
                f"no usable samples in {', '.join(data.train)}: {len(self.scan.skipped)} of {self.scan.num_records} "
                f"records were skipped (reasons in {self.output_dir / 'skipped_records.jsonl'})"
            )
        if self.scan.skipped:
            logger.warning(
                "%d of %d records skipped (see skipped_records.jsonl)", len(self.scan.skipped), self.scan.num_records
            )
        features = None
        if data.cache_encoder_features:
            encoder = self._unwrapped().encoder
            encoder.to(self._device())  # the Trainer moves the rest of the model later
            grey_views = self._unwrapped().config.grey_views
            if data.feature_store and grey_views:
                raise TrainConfigError("data.feature_store holds no grey views; unset it for a model with grey_views")
            if data.feature_store:
                features = stored_encoder_features(
                    data.feature_store, self.scan.samples, encoder, processor, dtype=DTYPES[data.cache_dtype]
                )
            else:
                features = cache_encoder_features(
                    SampleDataset(self.scan.samples, processor),
                    encoder,
                    dtype=DTYPES[data.cache_dtype],
                    progress=self.progress,
                    grey_views=grey_views,
                )
        dataset = SampleDataset(self.scan.samples, processor, features)
        content_tokens = None
        if self.stage.objective == "lexical":
            rows = (sample_labels(spec, processor) for spec in self.scan.samples)  # no media decoded
            vocab = self._unwrapped().get_input_embeddings().weight.shape[0]
            content_tokens = content_token_mask(rows, processor.tokenizer, vocab, max_df=cfg.train.lexical_max_df)
            logger.info("lexical alignment: %d content words in the captions", int(content_tokens.sum()))
        pad = processor.tokenizer.pad_token_id
        collator = PackingCollator(pad, data.pack_length) if data.packing else PaddingCollator(pad)
        self.trainer = self.trainer_cls(
            model=self.model,
            callbacks=self.callbacks or None,
            args=self.training_arguments(),
            train_dataset=dataset,
            data_collator=collator,
            lengths=dataset.lengths,
            connector_lr=cfg.train.connector_lr,
            encoder_lr=cfg.train.encoder_lr,
            content_tokens=content_tokens,
        )
        self.status = "set up"

    # ------------------------------------------------------------------ model
    def model_dtype(self) -> torch.dtype:
        """Parameter dtype: ``model.dtype``, where ``auto`` is bfloat16 for bf16 GPU training (or
        ``train.bf16: true`` set outright), else float32: on a CPU, ``bf16: native`` only autocasts."""
        name = self.config.model.dtype
        if name == "auto":
            bf16_weights = self.config.train.bf16 is True or (self._bf16() and not self._use_cpu())
            return torch.bfloat16 if bf16_weights and not self.stage.quantize else torch.float32
        return DTYPES[name]

    def _bf16(self) -> bool:
        """``train.bf16``; ``auto``: on a GPU with bf16; ``native``: that, or a CPU that computes
        bf16 natively."""
        bf16 = self.config.train.bf16
        if bf16 not in ("auto", "native"):
            return bool(bf16)
        if self._use_cpu():
            return bf16 == "native" and cpu_native_bf16()
        return _cuda_bf16()

    def _use_cpu(self) -> bool:
        use_cpu = self.config.train.use_cpu
        return (not torch.cuda.is_available()) if use_cpu == "auto" else bool(use_cpu)

    def _quantization_config(self, skip: list[str]):
        from mico_chat.loading import bnb_config

        q = self.config.quantization
        compute = q.compute_dtype
        compute_dtype = (torch.bfloat16 if _cuda_bf16() else torch.float32) if compute == "auto" else DTYPES[compute]
        return bnb_config(
            q.bits, compute_dtype=compute_dtype, skip=skip, quant_type=q.quant_type, double_quant=q.double_quant
        )

    def _device(self) -> torch.device:
        if self._use_cpu():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))

    def _device_map(self) -> dict[str, Any]:
        if self._use_cpu():
            return {"": "cpu"}
        return {"": int(os.environ.get("LOCAL_RANK", 0))}

    def build_model(self, *, quantize: bool):
        """The model and processor before the stage is applied: ``(MiCoChatForConditionalGeneration, processor)``."""
        from mico_chat.loading import load_folder
        from mico_chat.modeling import MiCoChatForConditionalGeneration
        from mico_chat.processing import MiCoChatProcessor

        cfg = self.config.model
        dtype = self.model_dtype()
        if cfg.init_from is not None:
            folder = Path(cfg.init_from)
            if quantize:
                if not (folder / "config.json").is_file():
                    raise TrainConfigError(f"model.init_from: {folder} is not a saved MiCo-Chat model folder")
                model = MiCoChatForConditionalGeneration.from_pretrained(
                    folder,
                    dtype=torch.float32,
                    quantization_config=self._quantization_config(["encoder", "connectors", "lm_head"]),
                    device_map=self._device_map(),
                )
                processor = MiCoChatProcessor.from_pretrained(folder, config=model.config)
            else:
                model, processor = load_folder(folder, dtype=dtype)
        else:
            model, processor = self._build_from_preset(dtype, quantize)
        if cfg.attn_implementation != model.language_model.config._attn_implementation:
            model.language_model.set_attn_implementation(cfg.attn_implementation)
        if cfg.encoder_weights:
            _load_encoder_weights(model, Path(cfg.encoder_weights))
        template = cfg.chat_template or self.stage.chat_template
        settings = processor.settings
        if self.config.data.media_settings:
            from mico_chat.preprocess import MediaSettings

            settings = MediaSettings.from_dict({**settings.to_dict(), **self.config.data.media_settings})
        if template is not None and template != model.config.chat_template:
            model.config.chat_template = template
        if cfg.system_prompt is not None:
            model.config.system_prompt = cfg.system_prompt
        if cfg.grey_views is not None:
            try:
                model.config.set_grey_views(cfg.grey_views)
            except ValueError as err:
                raise TrainConfigError(f"model.{err}") from None  # "model.grey_views: ..."
        processor = MiCoChatProcessor(processor.tokenizer, model.config, settings)
        return model, processor

    def _build_from_preset(self, dtype: torch.dtype, quantize: bool):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mico_chat.builder import build_model, load_extra_weights
        from mico_chat.preprocess import MediaSettings
        from mico_chat.presets import read_preset
        from mico_chat.weights import resolve_model_path

        cfg = self.config.model
        spec = read_preset(cfg.preset)
        llm_name = cfg.llm or spec.llm
        path = resolve_model_path(llm_name)
        load_kwargs: dict[str, Any] = {
            "dtype": torch.float32 if quantize else dtype,
            "attn_implementation": cfg.attn_implementation,
        }
        if quantize:
            load_kwargs.update(
                quantization_config=self._quantization_config(["lm_head"]), device_map=self._device_map()
            )
        llm = AutoModelForCausalLM.from_pretrained(path, **load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        connectors = dict(spec.connectors)
        for modality, override in cfg.connectors.items():
            connectors[modality] = {**connectors.get(modality, {}), **override}
        if "pretrained" in cfg.encoder:
            # The preset's connectors are a menu: keep those of the modalities the pretrained encoder reads.
            from mico_chat.encoders import MiCoEncoderConfig

            reads = set(MiCoEncoderConfig.from_pretrained(cfg.encoder["pretrained"]).modalities)
            connectors = {m: c for m, c in connectors.items() if m in reads}
        model, processor = build_model(
            llm,
            tokenizer=tokenizer,
            # A pretrained encoder folder brings its own config: the preset's shape does not apply.
            encoder=cfg.encoder if "pretrained" in cfg.encoder else {**spec.encoder, **cfg.encoder},
            connectors=connectors,
            chat_template=spec.chat_template,
            system_prompt=spec.system_prompt,
            settings=MediaSettings.from_dict(spec.media_settings),
            dtype=torch.float32 if quantize else dtype,
            seed=spec.seed,
            llm_name=llm_name,
            gated_xattn=cfg.gated_xattn,
        )
        if spec.weights:
            if cfg.llm is not None or cfg.encoder or cfg.connectors:
                raise TrainConfigError(
                    f"preset {cfg.preset!r} ships trained weights for its own LLM, encoder and connectors; "
                    "model.llm/encoder/connectors cannot change them"
                )
            load_extra_weights(model, spec.weights_file())
        return model, processor

    def apply_stage(self, model: nn.Module) -> nn.Module:
        """Freeze everything, add LoRA adapters if the stage has them, mark the stage's parameters
        trainable; returns the model to train (a ``peft`` model for the LoRA stages)."""
        model.requires_grad_(False)
        stage_cfg = self.config.stage
        own = [m.value for m in model.config.modalities]
        modalities = stage_cfg.modalities or own
        unknown = sorted(set(modalities) - set(own))
        if unknown:
            raise TrainConfigError(
                f"stage.modalities names {unknown}, but this model has connectors for {own} only; "
                "add the modality to the encoder's modalities first"
            )
        for modality in modalities:
            Modality.parse(modality)
        # Gated cross-attention adapters take the connectors' place: they train wherever the connectors do.
        adapters = ["gated_xattn.*"] if getattr(model, "gated_xattn", None) is not None else []
        if self.stage.lora:
            from peft import LoraConfig, get_peft_model

            lora = self.config.lora
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=lora_target_regex(lora.target_modules),
                    bias=lora.bias,
                ),
            )
        mark_trainable(model, expand_patterns(self.stage, modalities, [*adapters, *stage_cfg.extra_trainable]))
        if (
            any(name.startswith("encoder.") for name in trainable_parameter_names(model))
            and self.config.data.cache_encoder_features
        ):
            raise TrainConfigError(
                "data.cache_encoder_features needs a frozen encoder, but stage.extra_trainable trains part of it"
            )
        return model

    def _unwrapped(self) -> nn.Module:
        model = self.model
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    # ------------------------------------------------------------------ trainer arguments
    def training_arguments(self):
        from transformers import TrainingArguments

        t = self.config.train
        if (t.connector_lr is not None or t.encoder_lr is not None) and t.deepspeed:
            ds = json.loads(Path(t.deepspeed).read_text())
            if "optimizer" in ds:
                raise TrainConfigError(
                    f"train.connector_lr / encoder_lr need the Trainer's optimizer, but {t.deepspeed} defines its "
                    "own; remove its 'optimizer' section or those keys"
                )
        return TrainingArguments(
            output_dir=str(self.output_dir),
            max_steps=t.max_steps,
            num_train_epochs=t.num_train_epochs,
            per_device_train_batch_size=t.per_device_train_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=t.learning_rate,
            weight_decay=t.weight_decay,
            # transformers 5 has no warmup_ratio: a warmup_steps in [0, 1) is that fraction of the total
            # steps (config checks the range; 1 or more would be read as a count of steps).
            warmup_steps=t.warmup_ratio,
            lr_scheduler_type=t.lr_scheduler_type,
            max_grad_norm=t.max_grad_norm,
            optim=t.optim,
            adam_beta1=t.adam_beta1,
            adam_beta2=t.adam_beta2,
            bf16=self._bf16(),
            fp16=t.fp16,
            gradient_checkpointing=t.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
            train_sampling_strategy="group_by_length" if t.group_by_length else "random",
            logging_steps=t.logging_steps,
            logging_first_step=True,
            logging_nan_inf_filter=False,
            save_strategy="steps",
            save_steps=t.save_steps,
            save_total_limit=t.save_total_limit,
            seed=t.seed,
            data_seed=t.seed,
            deepspeed=t.deepspeed,
            dataloader_num_workers=t.dataloader_num_workers,
            dataloader_pin_memory=not self._use_cpu(),
            use_cpu=self._use_cpu(),
            remove_unused_columns=False,
            report_to=t.report_to,
            disable_tqdm=not self.progress,
        )

    # ================================================================== train
    def resume_checkpoint(self) -> str | None:
        """The checkpoint to resume from, per ``train.resume`` (see :class:`TrainSection`)."""
        from transformers.trainer_utils import get_last_checkpoint

        resume = self.config.train.resume
        last = get_last_checkpoint(str(self.output_dir)) if self.output_dir.is_dir() else None
        if last is not None and resume in ("auto", True):
            readable = newest_readable_checkpoint(self.output_dir)
            if readable is None:
                raise TrainConfigError(
                    f"no checkpoint in {self.output_dir} can be resumed from (each is cut short or unreadable; "
                    "see the warnings above); remove them to start afresh, or choose another train.output_dir"
                )
            last = readable
        if resume is False:
            if last is not None:
                raise TrainConfigError(
                    f"{self.output_dir} holds checkpoints of an earlier run ({Path(last).name}); continue it with "
                    "train.resume=auto, or choose another train.output_dir"
                )
            return None
        if resume in ("auto", True):
            if resume is True and last is None:
                raise TrainConfigError(f"train.resume=true but {self.output_dir} has no checkpoint")
            return last
        path = Path(str(resume))
        if not (path / "trainer_state.json").is_file():
            raise TrainConfigError(f"train.resume: {path} is not a complete checkpoint (no trainer_state.json)")
        return str(path)

    def train(self) -> dict[str, Any]:
        """Run the Trainer; returns its metrics. A NaN/inf loss stops the run (reports are still written)."""
        if self.trainer is None:
            raise TrainingError("call setup() before train()")
        self.resumed_from = self.resume_checkpoint()
        if self.resumed_from:
            logger.info("resuming from %s", self.resumed_from)
        start = time.perf_counter()
        try:
            result = self.trainer.train(resume_from_checkpoint=self.resumed_from)
        except NonFiniteLossError:
            self.status = "stopped: non-finite loss"
            self._wall = time.perf_counter() - start
            self.cleanup()
            raise
        self._wall = time.perf_counter() - start
        self.train_metrics = dict(result.metrics)
        self.status = "completed"
        return self.train_metrics

    # ================================================================== save
    def save(self) -> Path | None:
        """Export the trained model to ``output_dir/model`` (LoRA merged); returns the folder."""
        if not self.config.train.export:
            return None
        trainer = self.trainer
        target = self.output_dir / "model"
        staging = self.output_dir / ".model.partial"
        zero3 = trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
        if zero3:
            state = trainer.accelerator.get_state_dict(trainer.deepspeed)
            trainable = {n: state[n] for n, p in self.model.named_parameters() if p.requires_grad} if state else {}
        else:
            trainable = {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}
        if not trainer.args.should_save:
            return None
        if staging.exists():
            shutil.rmtree(staging)
        if self.stage.quantize or zero3:
            model = self._rebuild_trained(trainable)
        else:
            model = self.model
            if hasattr(model, "merge_and_unload"):
                model = model.merge_and_unload()
        model.save_pretrained(staging)
        self.processor.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        self.export_dir = target
        logger.info("exported the trained model to %s", target)
        return target

    def _rebuild_trained(self, trainable: dict[str, torch.Tensor]) -> nn.Module:
        """A full-precision copy of the model with the trained tensors, LoRA merged.

        QLoRA adapters were trained against a quantized LLM; they are merged into the LLM's
        original (unquantized) weights, as QLoRA's authors do for release.
        """
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()  # the copy is an ordinary model, not ZeRO-3 partitioned
        model, _ = self.build_model(quantize=False)
        model = self.apply_stage(model)
        own = dict(model.named_parameters())
        missing = sorted(set(trainable) - set(own))
        if missing:
            raise TrainingError(f"the rebuilt model lacks trained tensors {missing[:3]}")
        with torch.no_grad():
            for name, tensor in trainable.items():
                own[name].copy_(tensor.to(own[name].dtype))
        return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model

    # ================================================================== cleanup
    def summary(self) -> dict[str, Any]:
        """The run summary written to ``summary.json``."""
        trainer = self.trainer
        state = trainer.state if trainer is not None else None
        runtime = self.train_metrics.get("train_runtime") or self._wall or None
        session_tokens = trainer.session_tokens if trainer is not None else 0
        losses = [e["loss"] for e in (state.log_history if state else []) if "loss" in e]
        return {
            "status": self.status,
            "stage": self.stage.name,
            "output_dir": str(self.output_dir),
            "resumed_from": self.resumed_from,
            "export": str(self.export_dir) if self.export_dir else None,
            "steps": state.global_step if state else 0,
            "epochs": state.epoch if state else 0,
            "tokens_seen": state.num_input_tokens_seen if state else 0,
            "tokens_this_session": session_tokens,
            "label_tokens_this_session": trainer.num_labels_seen if trainer is not None else 0,
            "train_runtime_s": runtime,
            "tokens_per_second": (session_tokens / runtime) if runtime else None,
            "samples_per_second": self.train_metrics.get("train_samples_per_second"),
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "peak_memory": peak_memory(),
            "parameters": self.parameter_counts,
            "data": self.scan.summary() if self.scan else None,
            "packing": self.config.data.packing,
            "deepspeed": self.config.train.deepspeed,
            "device": "cuda" if torch.cuda.is_available() and not self._use_cpu() else "cpu",
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
        }

    def cleanup(self) -> dict[str, Any]:
        """Write plots and ``summary.json``; returns the summary."""
        summary = self.summary()
        if self.trainer is not None and self.trainer.args.should_save:
            summary["plots"] = plot_run(self.trainer.state.log_history, self.output_dir, self.stage.name)
            write_json(self.output_dir / "summary.json", summary)
        return summary

    def _write_skipped(self) -> None:
        path = self.output_dir / "skipped_records.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for bad in self.scan.skipped:
                handle.write(
                    json.dumps({"source": bad.source, "line": bad.line, "id": bad.id, "reason": bad.reason}) + "\n"
                )

    # ================================================================== all of it
    def run(self) -> dict[str, Any]:
        """``setup``, ``train``, ``save``, ``cleanup``; returns the summary."""
        self.setup()
        self.train()
        self.save()
        return self.cleanup()


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be resumed from (its trainable weights or trainer state unreadable:
    a disk that filled up, a copy cut short), or ``None``. Reads headers only, no tensor data."""
    from safetensors import safe_open

    from .trainer import TRAINABLE_WEIGHTS, TRAINER_STATE

    folder = Path(folder)
    weights = folder / TRAINABLE_WEIGHTS
    if weights.is_file():  # DeepSpeed checkpoints keep the engine's own files instead
        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises its own SafetensorError for a cut file
            return f"{weights.name} is unreadable ({err})"
    try:
        json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"{TRAINER_STATE} is unreadable ({err})"
    return None


def newest_readable_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that :func:`checkpoint_problem` passes; each
    newer one it skips is named in a warning (and left on disk for inspection)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    found = []
    for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name.rsplit("-", 1)[-1]
        if path.is_dir() and step.isdigit():
            found.append((int(step), path))
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        logger.warning("not resuming from %s: %s; trying the previous checkpoint", path, problem)
    return None


def _load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load pretrained encoder weights (keys with or without ``encoder.``); every key must fit."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise TrainConfigError(f"model.encoder_weights: {path} is not a file")
    tensors = {(k if k.startswith("encoder.") else f"encoder.{k}"): v for k, v in load_file(path).items()}
    own = model.state_dict()
    wrong = [k for k in tensors if k not in own or tuple(own[k].shape) != tuple(tensors[k].shape)]
    if wrong:
        k = wrong[0]
        have = tuple(own[k].shape) if k in own else "no such tensor"
        raise TrainConfigError(
            f"{path}: {len(wrong)} tensors do not fit this encoder, e.g. {k} ({tuple(tensors[k].shape)} vs {have})"
        )
    model.load_state_dict(tensors, strict=False)
    logger.info("loaded %d encoder tensors from %s", len(tensors), path)

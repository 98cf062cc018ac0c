"""Linear probes on a frozen MiCo encoder: which factors of the synthetic world can a linear
classifier read from its features, and does that hold for combinations training never showed?

    python -m mico_chat.eval.probes --encoder runs/default-model/pretrain/encoder \
        --train world/train --heldout world/heldout --out probes.json

Both worlds come from ``mico-chat data synth`` (:mod:`mico_chat.instruct_data.synth`). A held-out
world shows only (shape, colour) and (sound class, motion) pairs that no training clip shows, so
a probe trained on train-split clips and scored on held-out clips is right only where the
features encode each factor apart from the others.

Features per clip (:func:`encode_world`; video and audio encoded separately, so audio features
cannot carry the picture and vice versa):

=========  ====================================================================================
video      ``[mean CLS over frames, mean patch token, max patch token, CLS of frame 1, ..., CLS
           of frame T]``, ``(3 + T) * D``: the per-frame CLS tokens keep the order in time that
           pooling loses; the max keeps a small object that the mean dilutes
audio      ``[mean CLS over clips, mean patch token, max patch token]``, ``3 * D``
=========  ====================================================================================

Vision factors are probed on video features, audio factors on audio features
(:data:`FACTOR_MODALITY`). A probe (:func:`fit_probe`) is a multinomial logistic regression on
standardised features with an L2 penalty, fitted full-batch by L-BFGS in float64 from zeros, so
the same features give the same probe.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mico_chat.encoders import MiCoEncoder, MiCoEncoderConfig
from mico_chat.instruct_data.synth import Scene, read_world
from mico_chat.media import MediaError
from mico_chat.modality import MediaLayout, Modality
from mico_chat.preprocess import MediaSettings, grayscale, preprocess
from mico_chat.processing import MiCoChatProcessor

VISION_FACTORS: tuple[str, ...] = (
    "shape", "colour", "size", "count", "background", "motion", "speed", "visual_event",
)  # fmt: skip
AUDIO_FACTORS: tuple[str, ...] = ("sound_class", "pitch", "chirp_direction", "num_events", "onset")
FACTOR_MODALITY: Mapping[str, str] = MappingProxyType(
    {**{f: "video" for f in VISION_FACTORS}, **{f: "audio" for f in AUDIO_FACTORS}}
)
"""Which modality's features each factor is probed on."""
ENCODER_FOLDER_MEDIA: Mapping[str, int] = MappingProxyType({"num_frames": 8, "audio_clips": 1})
"""Media settings (the rest: :class:`MediaSettings` defaults) for an encoder folder without a
``media_settings.json`` beside it."""
DEFAULT_L2 = 1e-3

Labels = dict[str, list[str | None]]
"""``{factor: one label per clip}``; ``None`` where the factor is not defined for that clip."""


def factor_labels(scene: Scene) -> dict[str, str | None]:
    """Every probed factor of one clip as a string label, ``None`` where it is undefined.

    Undefined: ``speed`` for still objects; ``pitch`` except for beeps and noise;
    ``chirp_direction`` except for chirps; ``num_events`` except for beeps, chirps and noise
    bursts (speech is always one utterance, silence has none); ``onset`` for silence.
    """
    sound = scene.sound
    return {
        "shape": scene.shape,
        "colour": scene.colour,
        "size": scene.size,
        "count": str(scene.count),
        "background": scene.background,
        "motion": scene.motion,
        "speed": scene.speed,
        "visual_event": scene.visual_event,
        "sound_class": sound.sound_class,
        "pitch": sound.pitch if sound.sound in ("beeps", "noise") else None,
        "chirp_direction": sound.direction if sound.sound == "chirp" else None,
        "num_events": str(sound.count) if sound.sound in ("beeps", "chirp", "noise") else None,
        "onset": sound.onset if sound.sound != "silence" else None,
    }


def readout(encoded: torch.Tensor, layout: MediaLayout, *, per_segment: bool, grid: int = 0) -> torch.Tensor:
    """Encoder output ``(N, S*(1+P), D)`` -> clip features ``(N, 3*D)``, or ``(N, (3+S)*D)`` with
    ``per_segment``: mean CLS over segments, mean and max patch token, then each segment's CLS in order.

    ``grid`` > 0 (with ``per_segment``) appends each segment's patches average-pooled to a
    ``grid x grid`` map, in order, ``(N, S*grid*grid*D)`` more: where things are in each frame, as
    the chat model's connector (``pool: 2``) hands them to the LLM."""
    n = encoded.shape[0]
    tokens = encoded.view(n, layout.num_segments, layout.tokens_per_segment, -1)  # (N, S, 1+P, D)
    cls = tokens[:, :, 0]  # (N, S, D)
    patches = tokens[:, :, 1:]  # (N, S, P, D)
    parts = [cls.mean(dim=1), patches.mean(dim=(1, 2)), patches.amax(dim=(1, 2))]  # 3 x (N, D)
    if per_segment:
        parts.append(cls.flatten(1))  # (N, S*D)
        if grid:
            maps = patches.reshape(n * layout.num_segments, layout.grid_h, layout.grid_w, -1).permute(0, 3, 1, 2)
            pooled = F.adaptive_avg_pool2d(maps, grid)  # (N*S, D, grid, grid)
            parts.append(pooled.reshape(n, -1))
    return torch.cat(parts, dim=1)


def _settings_of(processor_or_settings: MiCoChatProcessor | MediaSettings) -> MediaSettings:
    if isinstance(processor_or_settings, MiCoChatProcessor):
        return processor_or_settings.settings
    if isinstance(processor_or_settings, MediaSettings):
        return processor_or_settings
    raise TypeError(f"expected a MiCoChatProcessor or MediaSettings, got {type(processor_or_settings).__name__}")


@torch.no_grad()
def encode_world(
    encoder: MiCoEncoder,
    processor_or_settings: MiCoChatProcessor | MediaSettings,
    world_dir: str | os.PathLike,
    limit: int | None = None,
    progress: bool = True,
    *,
    batch_size: int = 8,
    recolour_seed: int | None = None,
    grey: bool = False,
    grid: int = 0,
) -> tuple[dict[str, torch.Tensor], Labels]:
    """Encode the clips of a synthetic world (the first ``limit``) with a frozen encoder.

    Args:
        encoder: reads ``video`` and ``audio``; used in eval mode on its own device and dtype.
        processor_or_settings: the media settings (a chat model's processor carries them).
        world_dir: a folder holding ``world.jsonl`` (``mico-chat data synth --out``).
        batch_size: clips encoded together.
        recolour_seed: show each clip's frames with their RGB channels in one of the five other
            orders (drawn per clip from this seed; :func:`mico_chat.pretraining.data.shuffle_channels`),
            so that colour labels no longer follow the pixels; ``None``: as they are.
        grey: show the frames in grey (:func:`mico_chat.preprocess.grayscale`, as the
            pretraining's colour-free view does), after any recolouring.
        grid: add each frame's patches pooled to a ``grid x grid`` map to the video features
            (:func:`readout`).

    Returns:
        ``(features, labels)``: ``features["video"]`` is ``(N, (3 + T) * D)`` float32 with
        ``T = settings.num_frames`` (``(N, (3 + T + T * grid**2) * D)`` with ``grid``),
        ``features["audio"]`` is ``(N, 3 * D)`` (see :func:`readout`);
        ``labels`` maps every factor of :data:`FACTOR_MODALITY` to N labels (:func:`factor_labels`).

    A clip whose media cannot be read raises ``ValueError`` naming it: a probe over a silently
    shrunk world would not be comparable with another run's.
    """
    settings = _settings_of(processor_or_settings)
    config: MiCoEncoderConfig = encoder.config
    missing = [m for m in ("video", "audio") if m not in config.modalities]
    if missing:
        raise ValueError(f"the encoder reads {', '.join(config.modalities)}; probes need {', '.join(missing)} too")
    world = Path(world_dir)
    entries = read_world(world)[:limit]
    if not entries:
        raise ValueError(f"{world / 'world.jsonl'}: no clips")
    was_training = encoder.training
    encoder.eval()
    param = next(encoder.parameters())
    columns: dict[str, list[torch.Tensor]] = {"video": [], "audio": []}
    bar = tqdm(total=len(entries), desc=f"encoding {world.name}", unit="clip", disable=not progress)
    for start in range(0, len(entries), batch_size):
        batch = entries[start : start + batch_size]
        inputs: dict[str, list[torch.Tensor]] = {"video": [], "audio": []}
        for entry in batch:
            path = world / entry["media"]["video"]  # the mp4 carries the clip's audio track
            try:
                for modality in inputs:
                    inputs[modality].append(preprocess(Modality(modality), path, settings, config))
            except (MediaError, FileNotFoundError, ValueError) as err:
                raise ValueError(f"{world}: clip {entry['id']}: {err}") from err
        if recolour_seed is not None:
            from mico_chat.pretraining.data import CHANNEL_ORDERS, shuffle_channels

            picks = np.random.default_rng([recolour_seed, start]).integers(len(CHANNEL_ORDERS), size=len(batch))
            video = torch.stack(inputs["video"])  # (B, S, 3, H, W)
            orders = [CHANNEL_ORDERS[int(i)] for i in picks]
            inputs["video"] = list(shuffle_channels(video, orders, settings.image_mean, settings.image_std))
        if grey:
            inputs["video"] = [grayscale(v) for v in inputs["video"]]
        for modality, tensors in inputs.items():
            values = torch.stack(tensors).to(param.device, param.dtype)  # (B, S, ...)
            encoded = encoder({modality: values})[Modality(modality)]  # (B, S*(1+P), D)
            layout = encoder.layout(modality, values.shape[1])
            video = modality == "video"
            columns[modality].append(readout(encoded, layout, per_segment=video, grid=grid if video else 0).float().cpu())
        bar.update(len(batch))
    bar.close()
    encoder.train(was_training)
    features = {m: torch.cat(c) for m, c in columns.items()}
    per_clip = [factor_labels(entry["scene"]) for entry in entries]
    labels = {factor: [clip[factor] for clip in per_clip] for factor in FACTOR_MODALITY}
    return features, labels


# ------------------------------------------------------------------------------------------ probes


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: ``classes[argmax(((x - mean) / std) @ weight + bias)]``.

    Attributes:
        mean, std: ``(D,)`` standardisation of the training features.
        weight: ``(D, C)``; bias: ``(C,)``; classes: the ``C`` training labels, sorted.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    classes: tuple[str, ...]

    def predict(self, features: torch.Tensor) -> list[str]:
        """``(N, D)`` features -> N labels."""
        x = (features.double() - self.mean) / self.std  # (N, D)
        return [self.classes[i] for i in (x @ self.weight + self.bias).argmax(dim=1).tolist()]


def fit_probe(
    features: torch.Tensor, labels: Sequence[str], *, l2: float = DEFAULT_L2, max_iter: int = 500
) -> LinearProbe:
    """Fit a multinomial logistic regression to ``(N, D)`` features and N labels.

    Minimises ``mean cross-entropy + l2 / 2 * ||weight||^2`` over standardised features (a
    feature constant in training keeps scale 1) with full-batch L-BFGS in float64, starting from
    zeros: deterministic for the same inputs. One class gives a probe that always predicts it.
    """
    if features.dim() != 2 or features.shape[0] != len(labels) or not len(labels):
        raise ValueError(
            f"need (N, D) features with N = len(labels) > 0, got {tuple(features.shape)} and {len(labels)} labels"
        )
    x = features.double()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    x = (x - mean) / std  # (N, D)
    classes = tuple(sorted(set(labels)))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[label] for label in labels])
    weight = torch.zeros(x.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    if len(classes) > 1:
        optimizer = torch.optim.LBFGS(
            [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
            tolerance_grad=1e-9, tolerance_change=1e-12,
        )  # fmt: skip

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weight + bias, y) + 0.5 * l2 * weight.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():  # callers may hold no_grad
            optimizer.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach(), classes)


@dataclass(frozen=True)
class ProbeResult:
    """One factor's probe.

    Attributes:
        factor, modality: what was probed, on which features.
        heldout_accuracy: on held-out clips where the factor is defined (nan when there are none).
        majority: the rate of the most frequent held-out label (what a constant guess at best gets).
        n_heldout: held-out clips with the factor defined.
        train_accuracy: on the training clips the probe was fitted to.
        n_train: training clips with the factor defined.
        classes: the labels seen in training (a held-out label outside them is always wrong).
    """

    factor: str
    modality: str
    heldout_accuracy: float
    majority: float
    n_heldout: int
    train_accuracy: float
    n_train: int
    classes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """As a JSON-ready dict (nan becomes ``None``)."""
        out = asdict(self)
        out["classes"] = list(self.classes)
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def _accuracy(predicted: Sequence[str], labels: Sequence[str]) -> float:
    return sum(p == t for p, t in zip(predicted, labels)) / len(labels) if labels else math.nan


def _defined(features: torch.Tensor, labels: Sequence[str | None]) -> tuple[torch.Tensor, list[str]]:
    keep = [i for i, label in enumerate(labels) if label is not None]
    return features[keep], [labels[i] for i in keep]


def probe_factors(
    train: tuple[Mapping[str, torch.Tensor], Mapping[str, Sequence[str | None]]],
    heldout: tuple[Mapping[str, torch.Tensor], Mapping[str, Sequence[str | None]]],
    *,
    factors: Sequence[str] | None = None,
    l2: float = DEFAULT_L2,
) -> list[ProbeResult]:
    """Fit one probe per factor on ``train`` and score it on ``heldout``.

    Args:
        train, heldout: ``(features, labels)`` as :func:`encode_world` returns them.
        factors: which to probe (default: every factor of :data:`FACTOR_MODALITY` in ``train``'s
            labels); each is probed on the features of its modality.
        l2: the L2 penalty of :func:`fit_probe`.

    A factor defined on no training clip gets nan accuracies.
    """
    (train_x, train_y), (held_x, held_y) = train, heldout
    names = list(factors) if factors is not None else [f for f in FACTOR_MODALITY if f in train_y]
    results = []
    for factor in names:
        if factor not in FACTOR_MODALITY:
            raise ValueError(f"unknown factor {factor!r}; known: {', '.join(FACTOR_MODALITY)}")
        modality = FACTOR_MODALITY[factor]
        for split, (x, y) in (("train", train), ("heldout", heldout)):
            if modality not in x or factor not in y:
                raise KeyError(f"{split} has no {modality} features or no {factor} labels")
        fit_x, fit_y = _defined(train_x[modality], train_y[factor])
        test_x, test_y = _defined(held_x[modality], held_y[factor])
        majority = Counter(test_y).most_common(1)[0][1] / len(test_y) if test_y else math.nan
        if not fit_y:
            results.append(ProbeResult(factor, modality, math.nan, majority, len(test_y), math.nan, 0, ()))
            continue
        probe = fit_probe(fit_x, fit_y, l2=l2)
        results.append(
            ProbeResult(
                factor=factor,
                modality=modality,
                heldout_accuracy=_accuracy(probe.predict(test_x), test_y) if test_y else math.nan,
                majority=majority,
                n_heldout=len(test_y),
                train_accuracy=_accuracy(probe.predict(fit_x), fit_y),
                n_train=len(fit_y),
                classes=probe.classes,
            )
        )
    return results


def format_table(results: Sequence[ProbeResult]) -> str:
    """A markdown table: one row per factor, accuracies in percent."""

    def pct(value: float) -> str:
        return "-" if math.isnan(value) else f"{100 * value:.1f}"

    lines = [
        "| factor | features | held-out acc | majority | n held-out | train acc | n train |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.factor} | {r.modality} | {pct(r.heldout_accuracy)} | {pct(r.majority)} | {r.n_heldout} "
            f"| {pct(r.train_accuracy)} | {r.n_train} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ loading


def load_encoder(
    name_or_path: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[MiCoEncoder, MediaSettings]:
    """``(encoder in eval mode, media settings)`` from an encoder folder or a MiCo-Chat model.

    An encoder folder (``config.json`` of model type ``mico_encoder``, as a pretraining run
    exports to ``encoder/``) brings the media settings saved beside it in ``media_settings.json``,
    else :data:`ENCODER_FOLDER_MEDIA`. Anything else is loaded with
    :meth:`mico_chat.api.ChatModel.load` (a saved model folder or a preset name), whose encoder and
    processor settings are used.
    """
    folder = Path(name_or_path)
    config_file = folder / "config.json"
    if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == MiCoEncoderConfig.model_type:
        encoder = MiCoEncoder.from_pretrained(folder)
        settings_file = folder / "media_settings.json"
        settings = (
            MediaSettings.from_dict(json.loads(settings_file.read_text()))
            if settings_file.is_file()
            else MediaSettings(**ENCODER_FOLDER_MEDIA)
        )
        return encoder.to(device).eval(), settings
    from mico_chat.api import ChatModel  # deferred: it brings in the LLM machinery

    chat = ChatModel.load(name_or_path, device=device, dtype=torch.float32)
    return chat.model.encoder.eval(), chat.processor.settings


# ------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mico_chat.eval.probes``: encode both worlds, probe every factor, print the table."""
    parser = argparse.ArgumentParser(prog="python -m mico_chat.eval.probes", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--encoder", required=True, help="an encoder folder (model_type mico_encoder), a model folder or a preset name"
    )
    parser.add_argument("--train", required=True, type=Path, help="a train-split world folder (holds world.jsonl)")
    parser.add_argument("--heldout", required=True, type=Path, help="a held-out-split world folder")
    parser.add_argument("--train-limit", type=int, help="use the first N training clips")
    parser.add_argument("--heldout-limit", type=int, help="use the first N held-out clips")
    parser.add_argument("--num-frames", type=int, help="override the media settings' frames per video")
    parser.add_argument("--l2", type=float, default=DEFAULT_L2, help=f"L2 penalty of the probes (default {DEFAULT_L2})")
    parser.add_argument("--batch-size", type=int, default=8, help="clips encoded together")
    parser.add_argument(
        "--recolour-train", action="store_true",
        help="fit the probes on training clips with their RGB channels shuffled (one of five other orders "
        "per clip), so colour cannot stand in for shape: does the encoder hold shape apart from colour?",
    )  # fmt: skip
    parser.add_argument(
        "--grey", choices=("train", "heldout", "both"),
        help="show these clips' frames in grey (the pretraining's colour-free view): do the encoder's features "
        "of grey frames hold shape for held-out pairs (both), and do they transfer to colour frames (train)?",
    )  # fmt: skip
    parser.add_argument(
        "--grid", type=int, default=0,
        help="add each frame's patches pooled to a GRID x GRID map (2: what the default connector keeps)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    encoder, settings = load_encoder(args.encoder, device=args.device)
    if args.num_frames is not None:
        settings = MediaSettings.from_dict({**settings.to_dict(), "num_frames": args.num_frames})
    common = dict(progress=not args.no_progress, batch_size=args.batch_size, grid=args.grid)
    recolour = 0 if args.recolour_train else None
    grey_train, grey_heldout = args.grey in ("train", "both"), args.grey in ("heldout", "both")
    train = encode_world(
        encoder, settings, args.train, limit=args.train_limit, recolour_seed=recolour, grey=grey_train, **common
    )
    heldout = encode_world(encoder, settings, args.heldout, limit=args.heldout_limit, grey=grey_heldout, **common)
    results = probe_factors(train, heldout, l2=args.l2)
    print(format_table(results))
    if args.out:
        payload = {
            "encoder": str(args.encoder),
            "train": str(args.train),
            "heldout": str(args.heldout),
            "n_train_clips": len(train[0]["video"]),
            "n_heldout_clips": len(heldout[0]["video"]),
            "media_settings": settings.to_dict(),
            "l2": args.l2,
            "recolour_train": args.recolour_train,
            "grey": args.grey,
            "grid": args.grid,
            "results": [r.to_json() for r in results],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A clip's ground truth (:class:`Scene`) and how one is drawn from a seeded random generator.

A scene is everything needed to render the clip and to state facts about it: the factors
(shape, colour, ...), the objects' tracks in pixels, when the visual event happens, and every sound
event's time window. Rendering is a pure function of the scene, so the labels cannot drift from the
media (the tests check them against decoded pixels and samples).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import factors as F


@dataclass(frozen=True)
class ObjectTrack:
    """One object's top-left corner in pixels at the first and at the last instant of the clip.

    The object rests at ``start`` until ``start_s`` (0: it moves from the first instant), then moves
    on a straight line at constant speed to ``end``, reached at the clip's end: see :meth:`Scene.boxes`.
    """

    start: tuple[float, float]
    end: tuple[float, float]
    start_s: float = 0.0

    def at(self, t: float, duration_s: float) -> tuple[float, float]:
        """The top-left corner at time ``t`` (unrounded pixels)."""
        a = min(max((t - self.start_s) / (duration_s - self.start_s), 0.0), 1.0)
        return (self.start[0] + (self.end[0] - self.start[0]) * a, self.start[1] + (self.end[1] - self.start[1]) * a)


@dataclass(frozen=True)
class SoundSpec:
    """What the audio track holds.

    Attributes:
        sound: ``beeps``, ``chirp``, ``noise``, ``silence`` or ``speech``.
        pitch: ``low``/``high`` for beeps and noise, else ``None``.
        direction: ``rising``/``falling`` for chirps, else ``None``.
        count: how many beeps / chirps / noise bursts (1 for speech, 0 for silence).
        onset: ``early`` (starts within 0.5 s) or ``late`` (after a pause of at least 1.2 s).
        events: ``(start_s, end_s)`` of every beep, chirp, burst or utterance, in order.
        frequency_hz: the beep frequency, or the chirp's (start, end) frequencies.
        phrase: the words spoken (speech only).
    """

    sound: str
    pitch: str | None = None
    direction: str | None = None
    count: int = 0
    onset: str | None = None
    events: tuple[tuple[float, float], ...] = ()
    frequency_hz: float | tuple[float, float] | None = None
    phrase: str | None = None

    @property
    def sound_class(self) -> str:
        return F.sound_class(self.sound, self.pitch, self.direction)

    @property
    def onset_s(self) -> float | None:
        return self.events[0][0] if self.events else None


@dataclass(frozen=True)
class Scene:
    """The ground truth of one clip. Times are in seconds, positions in pixels of the rendered frame."""

    id: str
    split: str
    seed: int
    index: int
    width: int
    height: int
    fps: int
    duration_s: float
    background: str
    shape: str
    colour: str
    size: str
    side: int
    count: int
    motion: str
    speed: str | None
    visual_event: str
    event_time_s: float | None
    still_time_s: float
    objects: tuple[ObjectTrack, ...]
    sound: SoundSpec
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * self.fps))

    def frame_time(self, i: int) -> float:
        """Presentation time of frame ``i`` (frame ``i`` is shown during ``[i/fps, (i+1)/fps)``)."""
        return i / self.fps

    def visible(self, t: float) -> bool:
        """Whether the objects are on screen at time ``t``."""
        if self.visual_event == "appear":
            return t >= self.event_time_s - 1e-9
        if self.visual_event == "disappear":
            return t < self.event_time_s - 1e-9
        return True

    def boxes(self, t: float) -> list[tuple[int, int, int]]:
        """``(x, y, side)`` of every object's bounding square at time ``t`` (empty when not visible)."""
        if not self.visible(t):
            return []
        out = []
        for obj in self.objects:
            x, y = obj.at(t, self.duration_s)
            out.append((int(round(x)), int(round(y)), self.side))
        return out

    @property
    def staggered(self) -> bool:
        """Whether the objects start moving one after another (or a single object after a delay)."""
        return any(obj.start_s > 0 for obj in self.objects)

    def places(self) -> tuple[str, ...]:
        """Each object's place in the row, in :attr:`objects` order (``("top", "bottom")``); needs two or
        more moving objects, whose row runs across the motion axis."""
        if self.motion == "still" or self.count < 2:
            raise ValueError(f"{self.id}: only a row of two or more moving objects has places")
        across = 1 if self.motion in ("left", "right") else 0  # the coordinate that stays fixed
        order = sorted(range(self.count), key=lambda i: self.objects[i].start[across])
        names = F.row_positions(self.motion, self.count)
        return tuple(names[order.index(i)] for i in range(self.count))

    @property
    def leader(self) -> str | None:
        """The place of the object that starts moving first, in a staggered row; else ``None``."""
        if not self.staggered or self.count < 2:
            return None
        first = min(range(self.count), key=lambda i: self.objects[i].start_s)
        return self.places()[first]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        # start_s only when the object waits: a world without staggered starts keeps its old files.
        out["objects"] = [
            {"start": list(o.start), "end": list(o.end), **({"start_s": o.start_s} if o.start_s else {})}
            for o in self.objects
        ]
        out["sound"]["events"] = [list(e) for e in self.sound.events]
        out["sound"]["sound_class"] = self.sound.sound_class
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scene:
        data = dict(data)
        sound = {k: v for k, v in data.pop("sound").items() if k != "sound_class"}
        sound["events"] = tuple(tuple(e) for e in sound["events"])
        if isinstance(sound.get("frequency_hz"), list):
            sound["frequency_hz"] = tuple(sound["frequency_hz"])
        objects = tuple(
            ObjectTrack(tuple(o["start"]), tuple(o["end"]), o.get("start_s", 0.0)) for o in data.pop("objects")
        )
        return cls(**data, objects=objects, sound=SoundSpec(**sound))


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn: frame size and rate, durations, and which sounds are possible.

    Args:
        size: frame width and height in pixels (128-224; even).
        fps: frames per second.
        durations_s: clip lengths to choose from.
        speech: allow the ``speech`` sound class (needs a speech synthesizer at render time).
    """

    size: int = 128
    fps: int = 25
    durations_s: tuple[float, ...] = F.DURATIONS_S
    speech: bool = False

    def __post_init__(self) -> None:
        if not 128 <= self.size <= 224 or self.size % 2:
            raise ValueError(f"size must be an even number of pixels in 128..224, got {self.size}")
        if self.fps < 1 or not self.durations_s or min(self.durations_s) < 2.0 or max(self.durations_s) > 6.0:
            raise ValueError(f"need fps >= 1 and durations within 2..6 s, got {self.fps}, {self.durations_s}")

    @property
    def sound_classes(self) -> tuple[str, ...]:
        return tuple(c for c in F.SOUND_CLASSES if self.speech or c != "speech")


def _pick(rng: np.random.Generator, values, p=None):
    values = list(values)
    return values[int(rng.choice(len(values), p=p))]


def _layout(
    rng: np.random.Generator, size: int, side: int, count: int, motion: str, speed: str | None
) -> tuple[ObjectTrack, ...]:
    """Objects in formation: side by side across the motion axis, all moving together along it."""
    margin, gap = 2, max(4, size // 32)
    axis = {"left": 0, "right": 0, "up": 1, "down": 1}.get(motion, int(rng.integers(2)))  # 0: x moves
    # Across the motion axis: spread the objects with random spacing (never touching).
    slack = size - 2 * margin - count * side - (count - 1) * gap
    cuts = np.sort(rng.uniform(0, slack, size=count))
    across = [margin + i * (side + gap) + float(cuts[i]) for i in range(count)]
    # Along it: travel a fraction of the room, starting anywhere that keeps the objects in frame.
    room = size - 2 * margin - side
    travel = F.SPEEDS[speed] * room if speed else 0.0
    lo = margin + float(rng.uniform(0, room - travel))
    a, b = (lo + travel, lo) if motion in ("left", "up") else (lo, lo + travel)
    tracks = []
    for c in across:
        start, end = ((a, c), (b, c)) if axis == 0 else ((c, a), (c, b))
        tracks.append(ObjectTrack(start, end))
    return tuple(tracks)


def _sound(
    rng: np.random.Generator, cls: str, duration: float, speech_seconds: Callable[[str], float] | None
) -> SoundSpec:
    if cls == "silence":
        return SoundSpec("silence")
    kind, _, variant = cls.partition("-")
    phrase = None
    if kind == "beeps":
        count = _pick(rng, F.BEEP_COUNTS)
        lengths, gap = [F.BEEP_ON_S] * count, F.BEEP_OFF_S
    elif kind == "chirp":
        count = _pick(rng, F.BURST_COUNTS)
        lengths, gap = [F.CHIRP_S] * count, F.CHIRP_GAP_S
    elif kind == "noise":
        count = _pick(rng, F.BURST_COUNTS)
        lengths, gap = [F.NOISE_S] * count, F.NOISE_GAP_S
    elif kind == "speech":
        if speech_seconds is None:
            raise ValueError("the speech sound class needs a speech synthesizer")
        phrase = _pick(rng, F.SPEECH_PHRASES)
        count, lengths, gap = 1, [speech_seconds(phrase)], 0.0
    else:
        raise ValueError(f"unknown sound class {cls!r}")
    total = sum(lengths) + gap * (count - 1)
    late_hi = duration - total - 0.2
    onset = _pick(rng, F.ONSETS) if late_hi > F.LATE_ONSET_MIN_S else "early"
    lo, hi = F.EARLY_ONSET_S if onset == "early" else (F.LATE_ONSET_MIN_S, late_hi)
    t = round(float(rng.uniform(lo, hi)), 2)
    events = []
    for length in lengths:
        events.append((round(t, 4), round(t + length, 4)))
        t += length + gap
    pitch = variant if kind in ("beeps", "noise") else None
    direction = variant if kind == "chirp" else None
    if kind == "beeps":
        freq: float | tuple[float, float] | None = F.BEEP_HZ[pitch]
    elif kind == "chirp":
        freq = F.CHIRP_HZ if direction == "rising" else F.CHIRP_HZ[::-1]
    else:
        freq = None
    return SoundSpec(kind, pitch, direction, count, onset, tuple(events), freq, phrase)


def _stagger(
    rng: np.random.Generator, objects: tuple[ObjectTrack, ...], *, split: str, motion: str, duration: float, fps: int
) -> tuple[ObjectTrack, ...]:
    """Maybe make the objects start moving one after another (a single object: after a delay).

    Each object keeps its velocity (so the speed label holds) and starts at a frame time; starts are
    :data:`F.START_GAP_S` apart or more and the last leaves :data:`F.MIN_MOVING_S` of motion. The
    first to start (the leader) takes a place the split allows (:func:`F.allowed_leaders`).
    """
    if rng.random() >= F.STAGGER_P:
        return objects
    k = len(objects)
    lead_in = F.START_GAP_S if k == 1 else 0.0  # a lone object visibly waits before it moves
    gap = int(round(F.START_GAP_S * fps))  # frames
    span = duration - F.MIN_MOVING_S - lead_in - (k - 1) * F.START_GAP_S
    if span < 0:
        return objects
    offsets = np.sort(rng.uniform(0, span, size=k))
    starts = [(int(round((lead_in + float(offsets[i])) * fps)) + i * gap) / fps for i in range(k)]
    order = list(range(k))  # order[j]: the object that starts j-th
    if k > 1:
        across = 1 if motion in ("left", "right") else 0
        by_place = sorted(range(k), key=lambda i: objects[i].start[across])
        names = F.row_positions(motion, k)
        leader = by_place[names.index(_pick(rng, F.allowed_leaders(split, motion, k)))]
        rest = [i for i in range(k) if i != leader]
        order = [leader] + [rest[j] for j in rng.permutation(len(rest))]
    out = list(objects)
    for j, i in enumerate(order):
        obj, s = objects[i], starts[j]
        keep = (duration - s) / duration  # same velocity as the formation: it travels less
        end = (obj.start[0] + (obj.end[0] - obj.start[0]) * keep, obj.start[1] + (obj.end[1] - obj.start[1]) * keep)
        out[i] = ObjectTrack(obj.start, end, s)
    return tuple(out)


def _event_time(rng: np.random.Generator, duration: float, fps: int, onset_s: float | None) -> float:
    """A visual event time in the middle 40% of the clip, at least 0.6 s from the sound's onset."""
    lo, hi = 0.3 * duration, 0.7 * duration
    for _ in range(32):
        t = round(float(rng.uniform(lo, hi)) * fps) / fps
        if onset_s is None or abs(t - onset_s) >= 0.6:
            return t
    far = max((lo, hi), key=lambda x: abs(x - onset_s))
    return round(far * fps) / fps


def sample_scene(
    rng: np.random.Generator,
    *,
    split: str,
    seed: int,
    index: int,
    config: SceneConfig = SceneConfig(),
    speech_seconds: Callable[[str], float] | None = None,
) -> Scene:
    """Draw one scene of ``split`` (see :func:`factors.in_split`) from ``rng``.

    ``speech_seconds(phrase)`` gives the length of a spoken phrase; it is needed only when
    ``config.speech`` is on.
    """
    shape_colour, sound_motion = F.allowed_pairs(split, config.sound_classes)
    shape, colour = _pick(rng, shape_colour)
    weights = np.array([F.SOUND_CLASS_WEIGHTS[s] for s, _ in sound_motion])
    cls, motion = _pick(rng, sound_motion, p=weights / weights.sum())
    size_name = _pick(rng, F.SIZES)
    count = _pick(rng, F.COUNTS)
    background = _pick(rng, F.BACKGROUNDS)
    duration = float(_pick(rng, config.durations_s))
    speed = None if motion == "still" else _pick(rng, F.SPEEDS)
    visual_event = _pick(rng, F.VISUAL_EVENTS, p=[0.5, 0.25, 0.25])
    sound = _sound(rng, cls, duration, speech_seconds)
    side = int(round(F.SIZES[size_name] * config.size))
    objects = _layout(rng, config.size, side, count, motion, speed)
    event_time = None if visual_event == "none" else _event_time(rng, duration, config.fps, sound.onset_s)
    if visual_event == "appear":
        still = (event_time + duration) / 2
    elif visual_event == "disappear":
        still = event_time / 2
    else:
        still = duration / 2
    still = min(int(still * config.fps), int(round(duration * config.fps)) - 1) / config.fps
    if motion != "still" and visual_event == "none":  # drawn last: the factors above keep their values
        objects = _stagger(rng, objects, split=split, motion=motion, duration=duration, fps=config.fps)
    return Scene(
        id=f"synth-{split}-s{seed}-{index:06d}",
        split=split,
        seed=seed,
        index=index,
        width=config.size,
        height=config.size,
        fps=config.fps,
        duration_s=duration,
        background=background,
        shape=shape,
        colour=colour,
        size=size_name,
        side=side,
        count=count,
        motion=motion,
        speed=speed,
        visual_event=visual_event,
        event_time_s=event_time,
        still_time_s=still,
        objects=objects,
        sound=sound,
    )

"""The synthetic world's vocabulary: every factor, its values, and the train/held-out split rule.

Factors are few and perceptually far apart, so that a tiny encoder reading 112x112 frames and a
4 s log-mel spectrogram can tell every value apart:

=============  ============================================================================
vision         shape (4), colour (6), size (small/large), count (1-3), background (3),
               motion (left/right/up/down/still), speed (slow/fast), visual event
               (none/appear/disappear)
audio          sound (beeps/chirp/noise/silence, speech when espeak-ng is installed), pitch
               (low/high: beeps and noise), chirp direction (rising/falling), how many
               (beeps 1-4, chirps and noise bursts 1-3), onset (at the start / after a pause)
time           staggered motion starts: in some clips of moving objects that stay on screen the
               objects start moving one after another (at least 0.8 s apart); the *leader*
               is the one that starts first, named by its place in the row (top/middle/bottom
               when the objects move sideways, left/middle/right when they move up or down)
=============  ============================================================================

The held-out split uses only the *reserved* (shape, colour) and (sound class, motion) pairs and
the train split never does, whatever the seed: a held-out clip always shows a combination that no
training clip shows, while every single factor value occurs in both splits (tested). A held-out
clip with staggered starts also has a reserved (motion, leader) pair, which a training clip never
has: which object leads while the row moves that way is a combination only held-out clips show.
"""

from __future__ import annotations

from types import MappingProxyType

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
PLURALS: MappingProxyType = MappingProxyType(
    {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
)

# sRGB values far apart in hue; all readable on every background below.
COLOURS: MappingProxyType = MappingProxyType(
    {
        "red": (220, 40, 40),
        "green": (40, 170, 70),
        "blue": (40, 90, 230),
        "yellow": (240, 215, 40),
        "purple": (145, 60, 200),
        "orange": (245, 135, 25),
    }
)
BACKGROUNDS: MappingProxyType = MappingProxyType(
    {"black": (20, 20, 20), "gray": (120, 120, 120), "white": (235, 235, 235)}
)

SIZES: MappingProxyType = MappingProxyType({"small": 0.16, "large": 0.28})
"""Object side as a fraction of the frame side."""
COUNTS: tuple[int, ...] = (1, 2, 3)
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
SPEEDS: MappingProxyType = MappingProxyType({"slow": 0.22, "fast": 0.65})
"""Distance travelled over the whole clip, as a fraction of the room the object has to move in."""
VISUAL_EVENTS: tuple[str, ...] = ("none", "appear", "disappear")
DURATIONS_S: tuple[float, ...] = (3.0, 4.0, 5.0)

SOUNDS: tuple[str, ...] = ("beeps", "chirp", "noise", "silence", "speech")
PITCHES: tuple[str, ...] = ("low", "high")
CHIRP_DIRECTIONS: tuple[str, ...] = ("rising", "falling")
ONSETS: tuple[str, ...] = ("early", "late")
BEEP_COUNTS: tuple[int, ...] = (1, 2, 3, 4)
BURST_COUNTS: tuple[int, ...] = (1, 2, 3)
SPEECH_PHRASES: tuple[str, ...] = ("hello there", "good morning", "look at this", "well done", "see you soon")

# Sound classes: the unit of the (sound, motion) split rule, and of sampling weights. Silence is
# rarer because silent clips cannot be told apart by their audio (text-to-audio retrieval).
SOUND_CLASSES: tuple[str, ...] = (
    "beeps-low", "beeps-high", "chirp-rising", "chirp-falling", "noise-low", "noise-high", "silence", "speech",
)  # fmt: skip
SOUND_CLASS_WEIGHTS: MappingProxyType = MappingProxyType(
    {"beeps-low": 2.0, "beeps-high": 2.0, "chirp-rising": 1.0, "chirp-falling": 1.0, "noise-low": 1.0,
     "noise-high": 1.0, "silence": 0.5, "speech": 1.0}
)  # fmt: skip

# Physical parameters of the sounds (16 kHz audio).
BEEP_HZ: MappingProxyType = MappingProxyType({"low": 500.0, "high": 1500.0})
BEEP_ON_S, BEEP_OFF_S = 0.15, 0.15
CHIRP_HZ: tuple[float, float] = (400.0, 2400.0)
CHIRP_S, CHIRP_GAP_S = 0.6, 0.3
NOISE_BAND_HZ: MappingProxyType = MappingProxyType({"low": (60.0, 400.0), "high": (3000.0, 7000.0)})
NOISE_S, NOISE_GAP_S = 0.5, 0.3
EARLY_ONSET_S: tuple[float, float] = (0.15, 0.5)
LATE_ONSET_MIN_S = 1.2
"""A late sound starts at least this long after the clip starts (an early one within 0.5 s)."""

# Depth of the still's depth map (millimetres): a flat wall behind the objects; large objects
# stand nearer than small ones, as perspective would have it.
WALL_DEPTH_MM = 4000
OBJECT_DEPTH_MM: MappingProxyType = MappingProxyType({"large": 1200, "small": 2400})

# Staggered motion starts (drawn after every other factor, so the earlier draws stay as they were).
STAGGER_P = 0.5
"""Share of eligible scenes (moving, no visual event) whose objects start moving one after another."""
START_GAP_S = 0.8
"""Time between two objects' motion starts (a single object's delay); far more than a frame or two."""
MIN_MOVING_S = 1.0
"""The last object to start still moves for at least this long before the clip ends."""
ROW_POSITIONS: MappingProxyType = MappingProxyType(
    {"across-y": {2: ("top", "bottom"), 3: ("top", "middle", "bottom")},
     "across-x": {2: ("left", "right"), 3: ("left", "middle", "right")}}
)  # fmt: skip
"""Place words of the objects in a row, in increasing pixel order across the motion axis."""

NUMBER_WORDS: MappingProxyType = MappingProxyType({0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"})

# ---------------------------------------------------------------------------------- the split rule
RESERVED_SHAPE_COLOUR: frozenset[tuple[str, str]] = frozenset(
    (SHAPES[i % len(SHAPES)], colour) for i, colour in enumerate(COLOURS)
)
"""(shape, colour) pairs only the held-out split shows: one shape per colour, every shape used."""
RESERVED_SOUND_MOTION: frozenset[tuple[str, str]] = frozenset(
    (sound, MOTIONS[i % len(MOTIONS)]) for i, sound in enumerate(SOUND_CLASSES)
)
"""(sound class, motion) pairs only the held-out split shows: one motion per sound class, every motion used."""
RESERVED_MOTION_LEADER: frozenset[tuple[str, str]] = frozenset(
    {("left", "bottom"), ("right", "top"), ("up", "right"), ("down", "left"), ("up", "middle")}
)
"""(motion, leader) pairs only held-out clips with staggered starts show: one end of the row per
motion (every end used; each reachable with two objects) and the middle for one motion."""
SPLITS: MappingProxyType = MappingProxyType({"train": 0, "heldout": 1})


def sound_class(sound: str, pitch: str | None, direction: str | None) -> str:
    """``("beeps", "low", None) -> "beeps-low"``; the class the split rule and weights use."""
    if sound in ("beeps", "noise"):
        return f"{sound}-{pitch}"
    if sound == "chirp":
        return f"chirp-{direction}"
    return sound


def in_split(split: str, shape: str, colour: str, sound_cls: str, motion: str) -> bool:
    """Whether a combination belongs to ``split`` (held-out: both pairs reserved; train: neither)."""
    reserved = ((shape, colour) in RESERVED_SHAPE_COLOUR, (sound_cls, motion) in RESERVED_SOUND_MOTION)
    if split == "heldout":
        return all(reserved)
    if split == "train":
        return not any(reserved)
    raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")


def allowed_pairs(split: str, sound_classes: tuple[str, ...]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (shape, colour) and (sound class, motion) pairs a split may use, in a fixed order."""
    shape_colour = [(s, c) for s in SHAPES for c in COLOURS]
    sound_motion = [(s, m) for s in sound_classes for m in MOTIONS]
    if split == "heldout":
        return (
            [p for p in shape_colour if p in RESERVED_SHAPE_COLOUR],
            [p for p in sound_motion if p in RESERVED_SOUND_MOTION],
        )
    if split == "train":
        return (
            [p for p in shape_colour if p not in RESERVED_SHAPE_COLOUR],
            [p for p in sound_motion if p not in RESERVED_SOUND_MOTION],
        )
    raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")


def row_positions(motion: str, count: int) -> tuple[str, ...]:
    """Place words of ``count`` objects in a row that moves ``motion`` (``("top", "bottom")``...)."""
    axis = "across-y" if motion in ("left", "right") else "across-x"
    return ROW_POSITIONS[axis][count]


def allowed_leaders(split: str, motion: str, count: int) -> list[str]:
    """The places a split lets the first object to start moving have (a row of ``count`` moving ``motion``)."""
    places = row_positions(motion, count)
    if split == "heldout":
        return [p for p in places if (motion, p) in RESERVED_MOTION_LEADER]
    if split == "train":
        return [p for p in places if (motion, p) not in RESERVED_MOTION_LEADER]
    raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")

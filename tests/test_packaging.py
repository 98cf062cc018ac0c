"""The top-level part folders (encoders/, connectors/, ...) install inside the mico_chat namespace,
editable or not, so the same imports work from a wheel and from a checkout."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["encoders", "connectors", "instruct_data", "instruct_data.synth", "eval", "serve", "media", "presets", "commands", "weights"]
PROBE = "import mico_chat, {mods}; print(mico_chat.__file__); print(mico_chat.encoders.__file__)"


def run_probe(cwd: Path, env: dict[str, str]) -> list[str]:
    mods = ", ".join(f"mico_chat.{name}" for name in SUBPACKAGES)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(mods=mods)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.slow  # a subprocess
def test_editable_install_imports_from_outside_the_repo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    core, encoders = run_probe(tmp_path, env)
    assert Path(core) == REPO / "mico_chat" / "__init__.py"
    assert Path(encoders) == REPO / "encoders" / "__init__.py"


@pytest.mark.slow
def test_wheel_contains_the_namespace_layout_and_imports(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("mico_chat-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sub in SUBPACKAGES:
        assert f"mico_chat/{sub.replace('.', '/')}/__init__.py" in names
    assert "mico_chat/presets/default.json" in names
    assert not any(n.startswith(("encoders/", "tests/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    core, encoders = run_probe(tmp_path, env)
    assert Path(core) == site / "mico_chat" / "__init__.py"
    assert Path(encoders) == site / "mico_chat" / "encoders" / "__init__.py"

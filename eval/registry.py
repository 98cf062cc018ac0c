"""The benchmark registry: ``mico-chat eval NAME`` -> the class that runs it.

Entries are ``"module:Class"`` strings, imported only when asked for, so listing benchmarks costs
nothing. A benchmark is its own file plus one line here: the class subclasses
:class:`~mico_chat.eval.benchmark.Benchmark` for generative benchmarks (its options, data and mini
suite are declared on the class), or :class:`~mico_chat.eval.benchmark.CommandTask` for anything
else, e.g. retrieval.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType

from .benchmark import Benchmark, EvalTask

# Names that `mico-chat eval` uses for its own sub-commands.
RESERVED = frozenset({"score", "list", "mini", "lm-eval"})

REGISTRY: MappingProxyType[str, str] = MappingProxyType(
    {
        "mme": "mico_chat.eval.benchmarks.mme:MME",
        "mmbench": "mico_chat.eval.benchmarks.mmbench:MMBench",
        "videochatgpt": "mico_chat.eval.benchmarks.videochatgpt:VideoChatGPTBench",
        "msvd_qa": "mico_chat.eval.benchmarks.videoqa:MSVDQA",
        "msrvtt_qa": "mico_chat.eval.benchmarks.videoqa:MSRVTTQA",
        "activitynet_qa": "mico_chat.eval.benchmarks.videoqa:ActivityNetQA",
        "clotho_caption": "mico_chat.eval.benchmarks.clotho:ClothoCaption",
        "clotho_aqa": "mico_chat.eval.benchmarks.clotho:ClothoAQA",
        "retrieval": "mico_chat.eval.retrieval.task:Retrieval",
        "synth": "mico_chat.eval.benchmarks.synth:Synth",
        "general_qa": "mico_chat.eval.benchmarks.general_qa:GeneralQA",
    }
)


def task_names() -> list[str]:
    return list(REGISTRY)


def benchmark_names() -> list[str]:
    """The generative benchmarks (``Benchmark`` subclasses: a ChatModel answers, official scoring; each has a mini suite)."""
    return [name for name in REGISTRY if issubclass(get_task(name), Benchmark)]


def get_task(name: str) -> type[EvalTask]:
    """The class registered under ``name`` (``ValueError`` listing the known names otherwise)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(REGISTRY)}")
    module, _, attr = REGISTRY[name].partition(":")
    task = getattr(importlib.import_module(module), attr)
    if not (isinstance(task, type) and issubclass(task, EvalTask)):
        raise TypeError(f"{REGISTRY[name]} is not an EvalTask subclass")
    return task

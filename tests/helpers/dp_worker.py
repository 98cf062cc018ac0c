"""One rank of a data-parallel evaluation in the tests, started by ``torchrun`` (see tests/eval/test_data_parallel.py).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/helpers/dp_worker.py JOB.json

``JOB.json``: ``{"mode": "suite" | "retrieval", "out": folder, ...}``.

* ``suite``: every benchmark of ``data`` (name -> mini-suite path) with the saved ``model``,
  ``batch_size``, a judge at ``judge_url`` on rank 0; with ``crash_at`` a rank raises at that
  ``generate`` call. Each rank writes its number of ``generate`` calls to ``calls.rankR.json``.
* ``retrieval``: :func:`retrieval_job` of the saved ``model`` encoded over the ranks; rank 0 saves the result in ``out``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from mico_chat.eval.distributed import DataParallel


class CountingChat:
    """A ChatModel that counts its ``generate`` calls and raises ``KeyboardInterrupt`` at call ``crash_at``."""

    def __init__(self, chat, crash_at: int | None = None):
        self.chat, self.crash_at, self.calls = chat, crash_at, 0

    def describe(self):
        return self.chat.describe()

    def generate(self, conversations, settings):
        self.calls += 1
        if self.crash_at is not None and self.calls == self.crash_at:
            raise KeyboardInterrupt(f"crash at generate call {self.calls}")
        return self.chat.generate(conversations, settings)


def run_suite(job: dict, parallel: DataParallel) -> None:
    from mico_chat.api import ChatModel
    from mico_chat.eval.judges import JudgeConfig, build_judge
    from mico_chat.eval.registry import get_task
    from mico_chat.eval.runner import evaluate

    out = Path(job["out"])
    chat = CountingChat(ChatModel.load(job["model"], device="cpu"), job.get("crash_at"))
    calls_file = out / f"calls.rank{parallel.shard.rank}.json"
    try:
        for name, data in job["data"].items():
            bench = get_task(name)()
            judge = None
            if bench.config.needs_judge and parallel.is_main:
                judge = build_judge(JudgeConfig(model="gpt-test", base_url=job["judge_url"], cache=out / f"{name}.verdicts.jsonl"))
            evaluate(bench, chat, data=Path(data), out=out / name, batch_size=job["batch_size"], judge=judge,
                     progress=False, parallel=parallel)  # fmt: skip
    finally:
        out.mkdir(parents=True, exist_ok=True)
        calls_file.write_text(json.dumps(chat.calls))


def retrieval_job(model_dir: Path, rows: int = 7, seed: int = 0):
    """``(model, tokenizer, table)``: the saved tiny pretraining model in ``model_dir`` and ``rows``
    random clips, each with two captions (the same in every process: the tokenizer is loaded, not
    trained, since its training depends on the process's hash seed)."""
    from helpers.tiny_pretraining import CAPTIONS
    from mico_chat.eval.retrieval.evaluator import load_retrieval_model
    from mico_chat.pretraining.data import MediaTable

    model, tokenizer, _ = load_retrieval_model(model_dir)
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(rows, 2, 3, 16, 16, generator=g).to(torch.float16)
    captions = [[{"vision": CAPTIONS[i % 4]}, {"vision": CAPTIONS[(i + 1) % 4] + f" {i}"}] for i in range(rows)]
    table = MediaTable([f"k{i}" for i in range(rows)], [[f"r{i}"] for i in range(rows)], captions, {"video": video})
    return model, tokenizer, table


def run_retrieval(job: dict, parallel: DataParallel) -> None:
    from mico_chat.eval.retrieval.evaluator import evaluate_retrieval

    model, tokenizer, table = retrieval_job(Path(job["model"]))
    result = evaluate_retrieval(model, tokenizer, table, "video", batch_size=2, rerank_k=2, progress=False,
                                parallel=parallel)  # fmt: skip
    if parallel.is_main:
        result.save(Path(job["out"]))


def main(path: str) -> int:
    torch.set_num_threads(1)
    job = json.loads(Path(path).read_text())
    with DataParallel.from_environment() as parallel:
        {"suite": run_suite, "retrieval": run_retrieval}[job["mode"]](job, parallel)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""`mico-chat pretrain` then `mico-chat eval retrieval` on generated clips: model scoring, dual softmax,
matching-head rerank, and re-checking saved score matrices."""

import json

import numpy as np
import pytest
import torch
import yaml

from mico_chat.cli import main
from mico_chat.eval.retrieval import retrieval_metrics
from mico_chat.eval.retrieval.evaluator import collect_texts, evaluate_retrieval, load_retrieval_model
from mico_chat.pretraining import build_media_table
from helpers.pretrain_fixtures import make_av_world, tiny_bert_folder, tiny_run_config

pytestmark = pytest.mark.slow  # the module's fixture pretrains a model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("retrieval")
    records = make_av_world(root / "world", 10, seed=1)
    bert = tiny_bert_folder(root / "bert")
    config = tiny_run_config(records, bert, root / "run", max_steps=3, save_steps=3)
    config["eval"] = {"records": str(records), "groups": ["video", "audio"], "every": 3}
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["pretrain", str(path), "--no-progress"]) == 0
    return root, records


def test_pretrain_command_writes_model_encoder_and_eval_log(trained):
    root, _ = trained
    run = root / "run"
    assert (run / "model" / "config.json").is_file() and (run / "encoder" / "config.json").is_file()
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert evals[0]["step"] == 3 and set(evals[0]) == {"step", "video", "audio"}
    assert 0 <= evals[0]["video"]["text_to_item"]["R@1"] <= 100


def test_eval_command_scores_and_rechecks_saved_matrices(trained, capsys):
    root, records = trained
    out = root / "eval"
    code = main([
        "eval", "retrieval", "--model", str(root / "run" / "model"), "--data", str(records), "--modality", "video",
        "--modality", "audio+video", "--dual-softmax", "--rerank", "3", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "rerank@3" in table and "dual_softmax" in table and "audio+video" in table
    summary = json.loads((out / "metrics.json").read_text())
    video = next(r for r in summary["results"] if r["group"] == "video")
    assert video["num_items"] == 10 and video["captions"] == ["vision"]
    assert set(video["metrics"]) == {"contrastive", "dual_softmax", "rerank@3"}
    # The saved matrix reproduces the model's figures exactly.
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--scores",
                str(out / "video" / "scores.npy"),
                "--gt",
                str(out / "video" / "gt.json"),
                "--out",
                str(root / "recheck"),
            ]
        )
        == 0
    )
    recheck = json.loads((root / "recheck" / "metrics.json").read_text())["metrics"]["scores"]
    assert recheck == video["metrics"]["contrastive"]
    # So do the saved matching-head pair scores for the top-3 re-ranking, in both directions.
    saved = ["eval", "retrieval", "--scores", str(out / "video" / "scores.npy"), "--gt", str(out / "video" / "gt.json"),
             "--rerank-scores", str(out / "video" / "rerank_scores.npy")]  # fmt: skip
    assert main([*saved, "--rerank", "3", "--out", str(root / "recheck-rerank")]) == 0
    rerank = json.loads((root / "recheck-rerank" / "metrics.json").read_text())["metrics"]["rerank@3"]
    assert rerank == video["metrics"]["rerank@3"]
    assert main([*saved, "--rerank", "5"]) == 2  # pairs beyond the saved top 3 were never scored
    assert "smaller K" in capsys.readouterr().out
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--scores",
                str(out / "video" / "scores.npy"),
                "--gt",
                str(out / "audio" / "metrics.json"),
            ]
        )
        == 2
    )
    # Retrieval sits in the benchmark registry: listed, and re-scored by `eval score` like the others.
    capsys.readouterr()
    assert main(["eval", "list"]) == 0
    assert "retrieval" in capsys.readouterr().out
    assert main(["eval", "score", "retrieval", str(out)]) == 0
    rescored = capsys.readouterr().out
    for group in ("video", "audio+video"):
        assert group in rescored
    assert main(["eval", "score", "retrieval", str(root / "nothing-here")]) == 2


def test_rerank_only_reorders_within_the_top_k(trained):
    root, records = trained
    model, tokenizer, settings = load_retrieval_model(root / "run" / "model")
    table = build_media_table(records, ["video"], settings, model.config.encoder_config, progress=False)
    result = evaluate_retrieval(model, tokenizer, table, "video", rerank_k=2, progress=False)
    base = result.metrics["contrastive"]["text_to_item"]
    reranked = result.metrics["rerank@2"]["text_to_item"]
    # Re-ranking the top 2 cannot move anything into or out of the top 2.
    assert reranked["R@5"] == base["R@5"] and reranked["R@10"] == base["R@10"]
    assert reranked["R@1"] <= base["R@5"]
    texts = collect_texts(table, ["vision"])
    assert retrieval_metrics(result.scores, texts.text_item)["text_to_item"] == base
    with torch.no_grad():  # the scores are cosine similarities of unit vectors
        assert np.abs(result.scores).max() <= 1.0 + 1e-5

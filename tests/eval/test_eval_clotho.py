"""Clotho captioning (CIDEr-D via pycocoevalcap) and ClothoAQA exact match, against the reference code's outputs."""

import csv
import json

import pytest
from mico_chat.eval.benchmarks.clotho import (
    AQA_PREDICTIONS_CSV,
    PREDICTIONS_CSV,
    REFERENCES_CSV,
    ClothoAQA,
    ClothoCaption,
    aqa_exact_match,
    caption_scores,
    reference_captions,
)
from mico_chat.eval.items import ItemError


def read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_cider_d_matches_cocoevalcap(fixtures):
    expected = json.loads((fixtures / "clotho" / "cider_expected.json").read_text())
    refs = {r["file_name"]: reference_captions(r) for r in read(fixtures / "clotho" / "clotho_captions_evaluation.csv")}
    preds = {r["file_name"]: r["caption_predicted"] for r in read(fixtures / "clotho" / "predictions.csv")}
    report = caption_scores(preds, refs)
    assert report.metrics["cider_d"] == pytest.approx(expected["metrics"]["CIDEr"], abs=1e-12)
    worst = min(expected["per_file"], key=expected["per_file"].get)
    assert worst in report.breakdown and report.breakdown[worst]["cider_d"] == 0.0  # the empty caption
    assert set(report.unavailable) == {"spice", "spider"}  # no CoreNLP 3.6.0 here: reported, never estimated
    assert "CoreNLP 3.6.0" in report.unavailable["spice"]


def test_caption_score_from_predictions_csv_needs_references(fixtures):
    bench = ClothoCaption(references=str(fixtures / "clotho" / "clotho_captions_evaluation.csv"))
    report = bench.score(fixtures / "clotho" / "predictions.csv")
    assert report.metrics["cider_d"] == pytest.approx(0.9548051826924597, abs=1e-12)
    with pytest.raises(ItemError, match="needs its references"):
        ClothoCaption().score(fixtures / "clotho" / "predictions.csv")


def test_dcase_reference_column_names(tmp_path):
    row = {"file_name": "a.wav", **{f"caption_reference_{i:02d}": f"c{i}" for i in range(1, 6)}}
    assert reference_captions(row) == ["c1", "c2", "c3", "c4", "c5"]
    with pytest.raises(ItemError, match="no caption_1..caption_5"):
        reference_captions({"file_name": "a.wav", "caption_1": "x"})


def test_aqa_exact_match_matches_lm_eval(fixtures):
    cases = json.loads((fixtures / "clotho_aqa" / "exact_match_cases.json").read_text())
    got = [aqa_exact_match(r["prediction"], r["reference"]) for r in cases["rows"]]
    assert got == [bool(r["exact_match"]) for r in cases["rows"]]
    assert sum(got) / len(got) == cases["mean"]


def test_aqa_scores_every_annotator_row(mini_data, tmp_path):
    bench = ClothoAQA()
    items = bench.load(mini_data["clotho_aqa"])
    assert len(items) == 3 and items[1].reference == ["two", "two", "2"]
    assert items[0].prompt == "Is there a beep?\nAnswer the question using a single word only. "
    from mico_chat.eval.items import Prediction

    preds = {
        items[0].id: Prediction(items[0].id, "Yes."),
        items[1].id: Prediction(items[1].id, "2"),
        items[2].id: Prediction(items[2].id, "yes"),
    }
    path = bench.write_outputs(items, preds, tmp_path)
    report = bench.score(path)
    assert report.counts == {"rows": 9, "questions": 3}
    assert report.metrics["accuracy"] == 4 / 9  # 3 rows "yes" + the one annotator who wrote "2"
    assert report.breakdown["yes/no"]["accuracy"] == 0.5 and report.breakdown["single word"]["accuracy"] == 1 / 3


def test_aqa_strips_the_reply_before_matching(mini_data, tmp_path):
    from mico_chat.eval.items import Prediction

    bench = ClothoAQA()
    items = bench.load(mini_data["clotho_aqa"])
    padded = {items[0].id: " Yes\n", items[1].id: "\t2 ", items[2].id: " No "}
    report = bench.score(bench.write_outputs(items, {k: Prediction(k, v) for k, v in padded.items()}, tmp_path))
    tight = {k: v.strip() for k, v in padded.items()}
    same = bench.score(bench.write_outputs(items, {k: Prediction(k, v) for k, v in tight.items()}, tmp_path / "t"))
    assert report.metrics == same.metrics and report.metrics["accuracy"] > 0
    assert read(tmp_path / AQA_PREDICTIONS_CSV)[0]["prediction"] == " Yes\n"  # the file keeps the reply as generated


def test_caption_run_files_round_trip(mini_data, tmp_path):
    from mico_chat.eval.items import Prediction

    bench = ClothoCaption()
    items = bench.load(mini_data["clotho_caption"])
    preds = {i.id: Prediction(i.id, i.reference[0]) for i in items}
    out = bench.write_outputs(items, preds, tmp_path)
    assert read(out / PREDICTIONS_CSV)[0] == {"file_name": items[0].id, "caption_predicted": items[0].reference[0]}
    assert bench.score(out).metrics["cider_d"] > 1.0  # predicting a reference scores high


def test_missing_audio_is_a_clear_error(mini_data, tmp_path):
    import shutil

    shutil.copytree(mini_data["clotho_caption"], tmp_path / "c")
    for wav in (tmp_path / "c" / "evaluation").glob("*.wav"):
        wav.unlink()
    with pytest.raises(ItemError, match="audio 'tone_440hz.wav' not found"):
        ClothoCaption().load(tmp_path / "c")


def test_a_predictions_file_covering_part_of_the_references_is_refused_unless_allowed(mini_data, tmp_path):
    from mico_chat.eval.items import Prediction

    bench = ClothoCaption()
    items = bench.load(mini_data["clotho_caption"])
    out = bench.write_outputs(items, {i.id: Prediction(i.id, i.reference[0]) for i in items}, tmp_path)
    rows = read(out / PREDICTIONS_CSV)
    with (tmp_path / "part.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:-1])
    refs = str(out / REFERENCES_CSV)
    with pytest.raises(ItemError, match=rf"covers {len(rows) - 1} of {len(rows)} reference files \(1 missing"):
        ClothoCaption(references=refs).score(tmp_path / "part.csv")
    report = ClothoCaption(references=refs, allow_partial=True).score(tmp_path / "part.csv")
    assert report.counts["files"] == len(rows) - 1 and "1 missing" in report.notes[0]

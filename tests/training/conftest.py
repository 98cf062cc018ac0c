"""Shared fixtures of the training tests: a saved tiny model and generated record files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny MiCo-Chat model folder (tests/helpers/tiny.py), saved once per session; treat as read-only."""
    from helpers.train_fixtures import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Generated records: colour Q&A (stage 2), colour captions (stage 1), depth sides (new modality)."""
    from helpers.train_fixtures import colour_caption_records, colour_qa_records, depth_records

    root = tmp_path_factory.mktemp("train_data")
    return {
        "qa": colour_qa_records(root, 32),
        "captions": colour_caption_records(root / "caps", 16),
        "depth": depth_records(root / "depth", 8),
        "root": root,
    }

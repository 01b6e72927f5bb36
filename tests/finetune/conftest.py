"""Fixtures of the fine-tuning tests: a tiny encoder folder and an easy sentiment task (tiny, randomly initialized
models and synthetic data: the tests check that the pipeline trains, scores offline and writes what it promises)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub are imported

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "hub"))  # the shared tiny-model helpers live with the hub tests
import tiny_models  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """In-process training of tiny models: one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return tiny_models.save_encoder(tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def sentiment_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sentiment")
    return (tiny_models.write_jsonl(folder / "train.jsonl", tiny_models.sentiment_rows(240, seed=1)),
            tiny_models.write_jsonl(folder / "test.jsonl", tiny_models.sentiment_rows(60, seed=2)))

"""Fixtures of the hub tests (export, card, push, report, embed): tiny model folders and fake run folders."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub are imported

import pytest

import tiny_models


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Two busy shared cores: one thread per in-process test keeps timings steady."""


@pytest.fixture(scope="session")
def mlm_run(tmp_path_factory):
    return tiny_models.make_run_dir(tmp_path_factory.mktemp("mlm-run"), "mlm")


@pytest.fixture(scope="session")
def dae_run(tmp_path_factory):
    return tiny_models.make_run_dir(tmp_path_factory.mktemp("dae-run"), "dae")

"""The Python API in `hf_pretrain/__init__.py`: `hf_pretrain.pretrain(...)` does what `hf-pretrain pretrain` does."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub are imported

import pytest

import hf_pretrain
from hf_pretrain.recipe import RecipeError, load_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# mlm-tiny made to take seconds: a smaller model and tokenizer, 400 documents, 4 steps.
TINY = ["model.config.hidden_size=32", "model.config.num_hidden_layers=2", "model.config.num_attention_heads=2",
        "model.config.intermediate_size=64", "model.config.max_position_embeddings=32", "tokenizer.vocab_size=512",
        "data.block_size=32", "data.max_documents=400", "data.validation_fraction=0.1", "train.batch_size=8",
        "train.max_minutes=null", "train.max_steps=4", "train.eval_every=4", "train.eval_batches=2",
        "train.save_every=4", "output.log_with=[]", "output.progress_bar=false"]


def test_pretrain_runs_a_shipped_recipe_and_returns_the_run_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_PRETRAIN_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    summary = hf_pretrain.pretrain("mlm-tiny", [*TINY, f"output.dir={run_dir}"])
    assert summary["steps"] == 4 and summary["final_dir"] == str(run_dir / "final")
    assert summary["final_eval"]["loss"] < summary["initial_eval"]["loss"]
    assert summary == json.loads((run_dir / "summary.json").read_text())  # what the CLI prints it from
    # The same recipe again on the same folder resumes (nothing left to do); restart=True starts over.
    assert hf_pretrain.pretrain("mlm-tiny", [*TINY, f"output.dir={run_dir}"])["steps"] == 4
    recipe = load_recipe("mlm-tiny", [*TINY, f"output.dir={run_dir}", "train.max_steps=2"])
    assert hf_pretrain.pretrain(recipe, restart=True)["steps"] == 2
    assert any(path.name.startswith("replaced-") for path in run_dir.iterdir())


def test_pretrain_refuses_a_bad_recipe_before_any_work(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'train.lerning_rate'"):
        hf_pretrain.pretrain("mlm-tiny", ["train.lerning_rate=1", f"output.dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match="overrides apply to a recipe name or path"):
        hf_pretrain.pretrain(load_recipe("mlm-tiny"), ["train.lr=1"])
    assert not (tmp_path / "run").exists()

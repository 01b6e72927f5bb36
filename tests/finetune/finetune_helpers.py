"""Helpers of the fine-tuning tests: reading what a run wrote, and checking its model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUIET = ["output.progress_bar=false", "train.logging_steps=1000"]


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def safetensors_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def check_card(out: Path, pipeline_tag: str, base_model: str | None = None):
    """OUTPUT/model/README.md parses, names the task and the base model, and its model-index holds the scores
    metrics.json holds for the fine-tuned model (the from-scratch baseline's are in the text table only)."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(out / "model" / "README.md")
    metrics = read_metrics(out)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == pipeline_tag
    assert {"hf_pretrain", "fine-tuned", pipeline_tag} <= set(data.tags)
    assert data.base_model == base_model
    split = "test" if "test" in metrics["runs"]["pretrained"] else "validation"
    expected = {name: value for name, value in metrics["runs"]["pretrained"][split].items() if name != "loss"}
    assert {r.metric_name: r.metric_value for r in data.eval_results} == pytest.approx(expected, abs=1e-4)
    assert {(r.task_type, r.dataset_split) for r in data.eval_results} == {(pipeline_tag, split)}
    model_name, parsed = model_index_to_eval_results(data.to_dict()["model-index"])  # the Hub's own parser
    assert model_name == out.name and len(parsed) == len(expected)
    local = [metrics["model"], metrics["model_path"]] if base_model is None else []
    local += metrics["dataset"]["name"].split(", ") if metrics["dataset"]["source"] == "files" else []
    metadata = card.content.split("---")[1]
    assert not [path for path in local if path in metadata]  # local paths mean nothing on the Hub: text only
    return card


def files_under(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

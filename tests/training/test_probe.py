"""The linear probe of every eval (hf_pretrain/training/probe.py): the classifier, the fixed split, the refusals,
the feature pooling of each family. Through the real CLI: tests/training/test_pretrain_cli.py (probe tests)."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hf_pretrain.recipe import RecipeError, load_recipe
from hf_pretrain.training.probe import (
    LinearProbe,
    fit_logistic_regression,
    load_probe_set,
    macro_f1,
    split_probe_set,
)
from tests.hub.tiny_models import CITIES, NAMES, save_dae, save_decoder, save_encoder


def labeled_texts(count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Sentences whose label is the city they mention: a task a linear probe of pooled token states can learn."""
    rng = random.Random(seed)
    texts, labels = [], []
    for index in range(count):
        city = CITIES[index % 3]
        texts.append(f"{rng.choice(NAMES)} went to {city} and {rng.choice(NAMES)} stayed {index}")
        labels.append(city)
    return texts, labels


def probe_section(**overrides):
    return SimpleNamespace(**{"max_examples": 2000, "test_fraction": 0.25, **overrides})


def test_logistic_regression_fits_separable_classes_and_macro_f1_counts_by_hand():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]], dtype=torch.float64)
    labels = torch.arange(3).repeat(40)
    x = centers[labels] + torch.randn(120, 2, generator=generator, dtype=torch.float64)
    weights, bias = fit_logistic_regression(x, labels, 3, l2=1e-3)
    assert ((x @ weights + bias).argmax(-1) == labels).float().mean() > 0.97
    again = fit_logistic_regression(x, labels, 3, l2=1e-3)
    assert torch.equal(again[0], weights) and torch.equal(again[1], bias)  # deterministic

    predicted, truth = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0])
    # class 0: tp 1, predicted 2, true 2 -> 0.5; class 1: tp 1, 1, 2 -> 2/3; class 2: tp 2, 3, 2 -> 0.8
    assert macro_f1(predicted, truth, 3) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert macro_f1(np.array([0, 0]), np.array([0, 0]), 2) == pytest.approx(0.5)  # an absent class counts 0


def test_the_split_is_fixed_by_the_texts_not_their_order():
    texts, labels = labeled_texts(300)
    first = split_probe_set(texts, labels, probe_section(max_examples=200), "set")
    pairs = list(zip(texts, labels))
    random.Random(1).shuffle(pairs)
    second = split_probe_set([t for t, _ in pairs], [l for _, l in pairs], probe_section(max_examples=200), "set")
    assert first.fit_texts == second.fit_texts and first.score_texts == second.score_texts
    assert len(first.fit_texts) + len(first.score_texts) == 200
    assert not set(first.fit_texts) & set(first.score_texts)
    assert first.label_names == sorted(set(labels))
    assert 0.15 < len(first.score_texts) / 200 < 0.35


def test_the_builtin_probe_reads_the_task_training_split_only():
    from hf_pretrain.data.builtin import load_builtin_task

    probe_set = load_probe_set(load_recipe("mlm-tiny"))
    task = load_builtin_task()
    assert not (set(probe_set.fit_texts) | set(probe_set.score_texts)) & set(task["test"]["text"])
    assert set(probe_set.fit_texts) | set(probe_set.score_texts) <= set(task["train"]["text"])
    assert probe_set.label_names == task["train"].features["label"].names
    # auto: a recipe on the user's own files has no probe unless it names one
    assert load_probe_set(load_recipe("mlm-tiny", ["data.source=files", "data.train_files=x.txt"])) is None


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_bad_probe_files_are_refused_naming_the_file_and_the_problem(tmp_path):
    texts, labels = labeled_texts(40)
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": t, "label": l} for t, l in zip(texts, labels)])
    overrides = ["probe.source=files", f"probe.files={good}"]
    assert len(load_probe_set(load_recipe("mlm-tiny", overrides)).label_names) == 3

    no_label = write_jsonl(tmp_path / "no_label.jsonl", [{"text": t, "topic": l} for t, l in zip(texts, labels)])
    with pytest.raises(RecipeError, match=r"no_label\.jsonl has no column 'label'.*its columns: text, topic"):
        load_probe_set(load_recipe("mlm-tiny", ["probe.source=files", f"probe.files={no_label}"]))
    one_label = write_jsonl(tmp_path / "one.jsonl", [{"text": t, "label": "x"} for t in texts])
    with pytest.raises(RecipeError, match="1 label"):
        load_probe_set(load_recipe("mlm-tiny", ["probe.source=files", f"probe.files={one_label}"]))
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": "fine", "label": "a"}, {"text": "", "label": "b"}])
    with pytest.raises(RecipeError, match=r"empty\.jsonl row 2"):
        load_probe_set(load_recipe("mlm-tiny", ["probe.source=files", f"probe.files={empty}"]))
    with pytest.raises(RecipeError, match="probe.files"):
        load_probe_set(load_recipe("mlm-tiny", ["probe.source=files", f"probe.files={tmp_path / 'missing.jsonl'}"]))
    with pytest.raises(RecipeError, match="probe.source='files' needs probe.files"):
        load_recipe("mlm-tiny", ["probe.source=files"])
    with pytest.raises(RecipeError, match="probe.files is set but probe.source='none'"):
        load_recipe("mlm-tiny", ["probe.source=none", f"probe.files={good}"])


@pytest.mark.parametrize("family", ["encoder", "decoder", "dae"])
def test_the_probe_learns_a_task_from_frozen_features_and_leaves_the_model_as_it_was(tmp_path, family):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoTokenizer

    import hf_pretrain  # noqa: F401  (registers our families)

    save, auto = {"encoder": (save_encoder, AutoModelForMaskedLM), "decoder": (save_decoder, AutoModelForCausalLM),
                  "dae": (save_dae, AutoModelForSeq2SeqLM)}[family]
    folder = save(tmp_path / family)
    model, tokenizer = auto.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    texts, labels = labeled_texts(160)
    probe = LinearProbe(split_probe_set(texts, labels, probe_section(), "cities"), tokenizer, max_length=32)
    first, second = probe.run(model), probe.run(model)
    assert model.training
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert first["probe_accuracy"] == second["probe_accuracy"] and first["probe_macro_f1"] == second["probe_macro_f1"]
    assert first["probe_accuracy"] > 0.8, first  # the city words are in the pooled states even at random init
    assert 0 < first["probe_seconds"]

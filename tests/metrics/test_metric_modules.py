"""The metric modules shipped in hf_pretrain.metrics (offline `evaluate` modules) against hand-computed values and
scikit-learn."""

from __future__ import annotations

import pytest

from hf_pretrain.metrics import load_metric


def test_classification_metrics_match_hand_computed_values():
    predictions, references = [0, 1, 1, 2, 2, 0], [0, 1, 0, 2, 1, 0]
    assert load_metric("accuracy").compute(predictions=predictions, references=references)["accuracy"] == pytest.approx(4 / 6)
    # per class (tp, fp, fn): 0 -> (2, 0, 1), 1 -> (1, 1, 1), 2 -> (1, 1, 0)
    f1_per_class = [4 / 5, 2 / 4, 2 / 3]
    f1 = load_metric("f1")
    assert f1.compute(predictions=predictions, references=references)["f1"] == pytest.approx(sum(f1_per_class) / 3)
    assert f1.compute(predictions=predictions, references=references, average="micro")["f1"] == pytest.approx(4 / 6)
    scores = load_metric("precision_recall").compute(predictions=predictions, references=references)
    assert scores["precision"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    assert scores["recall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    multi = load_metric("accuracy", "multilabel").compute(predictions=[[1, 0], [1, 1]], references=[[1, 0], [0, 1]])
    assert multi["accuracy"] == pytest.approx(0.5)


def test_classification_metrics_agree_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    import numpy as np

    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    for average in ("macro", "micro", "weighted"):
        ours = load_metric("f1").compute(predictions=predictions, references=references, average=average)["f1"]
        assert ours == pytest.approx(sklearn_metrics.f1_score(references, predictions, average=average))
    ours = load_metric("precision_recall").compute(predictions=predictions, references=references, average="weighted")
    assert ours["recall"] == pytest.approx(sklearn_metrics.recall_score(references, predictions, average="weighted"))


def test_seqeval_counts_whole_entities_only():
    seqeval = load_metric("seqeval")
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-PER", "O"]]
    predictions = [["B-PER", "O", "O", "B-LOC"], ["O", "I-PER", "O"]]  # PER cut short; I-PER opens an entity
    scores = seqeval.compute(predictions=predictions, references=references)
    # predicted entities: PER(0,0) wrong, LOC(3,3) right, PER(1,1) right -> precision 2/3, recall 2/3
    assert scores["overall_precision"] == pytest.approx(2 / 3)
    assert scores["overall_recall"] == pytest.approx(2 / 3)
    assert scores["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert scores["PER"]["number"] == 2 and scores["PER"]["precision"] == pytest.approx(0.5)
    assert scores["overall_accuracy"] == pytest.approx(5 / 7)
    with pytest.raises(ValueError, match="'X-PER' is not a BIO tag"):
        seqeval.compute(predictions=[["X-PER"]], references=[["O"]])


def test_regression_metric():
    scores = load_metric("regression").compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[2.0, 2.0, 4.0, 5.0])
    assert scores["mse"] == pytest.approx(0.75)
    assert scores["mae"] == pytest.approx(0.75)
    assert scores["spearman"] == pytest.approx(0.9486832980505138)

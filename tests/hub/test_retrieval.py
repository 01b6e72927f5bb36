"""retrieval_map: hand-computed answers on 2-D vectors, invariances, and agreement with scikit-learn's AP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_pretrain.hub.retrieval import average_precisions, retrieval_map


def at_angles(degrees):
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_hand_computed_map():
    # a0=0°, b0=10°, a1=25°, b1=60°. Rankings by angle distance:
    # a0: b0, a1, b1 -> AP 1/2;  b0: a0, a1, b1 -> 1/3;  a1: b0, a0, b1 -> 1/2;  b1: a1, b0, a0 -> 1/2.
    vectors = at_angles([0, 10, 25, 60])
    groups = ["a", "b", "a", "b"]
    np.testing.assert_allclose(average_precisions(vectors, groups), [1 / 2, 1 / 3, 1 / 2, 1 / 2])
    assert retrieval_map(vectors, groups) == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 1 / 2) / 4)


def test_two_relevant_documents_and_singletons():
    # q=0°, relevant at 5° (rank 1) and 30° (rank 3), other at 20° (rank 2): AP = (1/1 + 2/3) / 2.
    vectors = at_angles([0, 5, 20, 30])
    groups = ["a", "a", "z", "a"]
    assert average_precisions(vectors, groups)[0] == pytest.approx((1 + 2 / 3) / 2)
    # "z" is alone in its group: it has nothing to retrieve and is left out of the mean.
    assert math.isnan(average_precisions(vectors, groups)[2])


def test_perfect_clusters_scale_and_order_invariance():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 10
    groups = np.repeat(["x", "y", "z"], 5)
    vectors = centers[np.repeat(np.arange(3), 5)] + rng.normal(size=(15, 16)) * 0.01
    assert retrieval_map(vectors, groups) == pytest.approx(1.0)
    scaled = vectors * rng.uniform(0.1, 10, size=(15, 1))  # cosine: per-vector scale does not matter
    assert retrieval_map(scaled, groups) == pytest.approx(1.0)
    permutation = rng.permutation(15)
    noisy = rng.normal(size=(15, 4))
    assert retrieval_map(noisy[permutation], groups[permutation]) == pytest.approx(retrieval_map(noisy, groups))


def test_matches_sklearn_average_precision():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 8))
    groups = rng.integers(0, 4, size=40)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = []
    for query in range(40):
        others = np.arange(40) != query
        expected.append(average_precision_score(groups[others] == groups[query], (unit @ unit[query])[others]))
    np.testing.assert_allclose(average_precisions(vectors, groups), expected, rtol=1e-10)
    assert retrieval_map(vectors, groups) == pytest.approx(np.mean(expected))


def test_bad_inputs():
    with pytest.raises(ValueError, match="groups"):
        retrieval_map(np.zeros((3, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="undefined"):
        retrieval_map(np.eye(3), ["a", "b", "c"])

"""Feature vectors for the continuous autoencoder: digits, .npy and tabular files, splits, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_pretrain.data.features import (
    FeatureDataError,
    FeatureDataset,
    load_digits_features,
    load_feature_files,
    split_features,
)


def test_digits_are_1797_vectors_of_64_pixels_in_unit_range():
    pytest.importorskip("sklearn")
    data = load_digits_features()
    assert data.features.shape == (1797, 64) and data.features.dtype == np.float32
    assert data.features.min() == 0.0 and data.features.max() == 1.0


def test_missing_scikit_learn_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(FeatureDataError, match="pip install scikit-learn"):
        load_digits_features()


def test_csv_jsonl_and_parquet_use_numeric_columns_and_skip_the_rest(tmp_path):
    rows = [{"id": f"r{i}", "a": i, "b": 0.5 * i, "c": -1.0} for i in range(4)]
    csv = tmp_path / "x.csv"
    csv.write_text("id,a,b,c\n" + "".join(f"{r['id']},{r['a']},{r['b']},{r['c']}\n" for r in rows))
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = np.array([[r["a"], r["b"], r["c"]] for r in rows], dtype=np.float32)
    for path in (csv, jsonl):
        data = load_feature_files([str(path)])
        np.testing.assert_array_equal(data.features, expected)
        assert data.columns == ["a", "b", "c"] and "skipped: id" in data.description
    import pyarrow as pa
    from pyarrow import parquet

    parquet.write_table(pa.table({"a": [1.0, 2.0], "label": ["x", "y"], "b": [3, 4]}), tmp_path / "x.parquet")
    data = load_feature_files([str(tmp_path / "x.parquet")], columns=["b", "a"])
    np.testing.assert_array_equal(data.features, [[3, 1], [4, 2]])


def test_npy_files_stack_and_bad_inputs_are_named(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 4)))
    np.save(tmp_path / "b.npy", np.zeros((2, 4), dtype=np.int64))
    assert load_feature_files([str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]).features.shape == (5, 4)
    np.save(tmp_path / "wide.npy", np.ones((2, 5)))
    with pytest.raises(FeatureDataError, match="5 values per vector, but .*a.npy has 4"):
        load_feature_files([str(tmp_path / "a.npy"), str(tmp_path / "wide.npy")])
    np.save(tmp_path / "flat.npy", np.ones(8))
    with pytest.raises(FeatureDataError, match=r"shape \(8,\); one \(N, D\) array"):
        load_feature_files([str(tmp_path / "flat.npy")])
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(FeatureDataError, match=r"1 vector\(s\) hold NaN or infinite values \(first rows: \[0\]"):
        load_feature_files([str(tmp_path / "nan.npy")])
    (tmp_path / "gaps.csv").write_text("a,b\n1,2\n3,\n")
    with pytest.raises(FeatureDataError, match=r"missing values in feature columns \(b: 1\)"):
        load_feature_files([str(tmp_path / "gaps.csv")])
    with pytest.raises(FeatureDataError, match="no column"):
        load_feature_files([str(tmp_path / "gaps.csv")], columns=["z"])
    with pytest.raises(FeatureDataError, match="cannot tell the format"):
        load_feature_files([str(tmp_path / "x.bin")])


def test_split_is_seeded_and_the_dataset_serves_rows_with_their_index():
    features = np.arange(20, dtype=np.float32).reshape(10, 2)
    train, validation = split_features(features, 0.2, seed=3)
    again = split_features(features, 0.2, seed=3)
    assert len(train) == 8 and len(validation) == 2
    np.testing.assert_array_equal(train, again[0])
    assert sorted(np.concatenate([train, validation])[:, 0].tolist()) == features[:, 0].tolist()
    with pytest.raises(FeatureDataError, match="leaves no training vectors"):
        split_features(features[:1], 0.5, seed=0)
    row = FeatureDataset(train)[1]
    assert row["example_index"] == 1 and row["input_features"].tolist() == train[1].tolist()

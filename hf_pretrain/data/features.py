"""Float feature vectors for the continuous denoising autoencoder (objective `dae-features`).

Where the vectors come from:

* `load_digits_features()`: scikit-learn's handwritten digits (`sklearn.datasets.load_digits`: 1,797 8x8 images,
  shipped inside scikit-learn, so offline), pixels 0..16 scaled to [0, 1]. scikit-learn is optional: it is
  imported only here, and a missing install says `pip install scikit-learn`.
* `load_feature_files(files, format="auto", columns=())`: your own vectors, used as they are (no scaling). `.npy`
  holds one (N, D) numeric array; CSV (with a header row), Parquet and JSON Lines hold one vector per row in
  numeric columns — the named `columns`, or every numeric column (others, e.g. an id or a text label, are skipped
  and reported). Every file must give the same D; missing and non-finite values are errors, not guesses.

`split_features(features, validation_fraction, seed)` holds out a seeded random share of the rows;
`FeatureDataset` serves rows as `{"input_features", "example_index"}`, what `FeatureNoiseCollator` reads (the
index keys the per-example noise, so the noise is a pure function of seed, epoch and row, as for text).

Errors are `FeatureDataError` (a ValueError) naming the file, the column or the shape and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

FEATURE_FORMATS = ("auto", "npy", "csv", "parquet", "jsonl")
FEATURE_EXTENSIONS = {".npy": "npy", ".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl",
                      ".ndjson": "jsonl"}


class FeatureDataError(ValueError):
    """Feature data that cannot be used; the message names the file, column or shape and what is allowed."""


@dataclass
class FeatureData:
    """Vectors (N, D) float32 and a line saying where they came from."""

    features: np.ndarray
    description: str
    columns: list[str] = field(default_factory=list)  # tabular files: the columns used, in order


# --------------------------------------------------------------------------------------------------- sources
def load_digits_features() -> FeatureData:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise FeatureDataError(
            "the digits data set ships inside scikit-learn, which is not installed: pip install scikit-learn "
            "(or train on your own vectors with features.source=files)."
        ) from None
    digits = load_digits()
    features = (np.asarray(digits.data, dtype=np.float64) / 16.0).astype(np.float32)
    return FeatureData(features, f"scikit-learn digits: {len(features):,} 8x8 images, pixels scaled to [0, 1]")


def infer_feature_format(files: list[str]) -> str:
    from .sources import infer_format

    try:
        return infer_format(files, FEATURE_EXTENSIONS)
    except ValueError as error:
        raise FeatureDataError(str(error)) from None


def read_npy(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:  # object arrays need pickle, which we never load
        raise FeatureDataError(f"{path}: not a plain numeric .npy array ({error}).") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise FeatureDataError(f"{path}: an .npz archive; save one (N, D) array with np.save instead.")
    if array.ndim != 2:
        raise FeatureDataError(f"{path}: array of shape {array.shape}; one (N, D) array of N vectors is needed.")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise FeatureDataError(f"{path}: dtype {array.dtype} is not a real number type (float or int).")
    return array


def read_table(path: str, fmt: str):
    import pyarrow as pa

    try:
        if fmt == "csv":
            from pyarrow import csv

            return csv.read_csv(path)
        if fmt == "parquet":
            from pyarrow import parquet

            return parquet.read_table(path)
        from pyarrow import json

        return json.read_json(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise FeatureDataError(f"{path}: cannot be read as {fmt}: {error}") from None


def is_numeric(arrow_type) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type)


def table_columns(table, path: str, columns: list[str]) -> tuple[list[str], list[str]]:
    """(feature columns, skipped non-numeric columns)."""
    names = table.column_names
    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise FeatureDataError(f"{path}: no column(s) {missing}; the file has {names}.")
        wrong = [f"{c} ({table.schema.field(c).type})" for c in columns if not is_numeric(table.schema.field(c).type)]
        if wrong:
            raise FeatureDataError(f"{path}: column(s) {', '.join(wrong)} are not numeric; feature columns must be.")
        return list(columns), []
    chosen = [n for n in names if is_numeric(table.schema.field(n).type)]
    if not chosen:
        raise FeatureDataError(f"{path}: no numeric column among {names}; feature columns must hold numbers.")
    return chosen, [n for n in names if n not in chosen]


def table_to_array(table, path: str, columns: list[str]) -> np.ndarray:
    nulls = {c: table.column(c).null_count for c in columns if table.column(c).null_count}
    if nulls:
        shown = ", ".join(f"{c}: {n}" for c, n in list(nulls.items())[:5])
        raise FeatureDataError(f"{path}: missing values in feature columns ({shown}); fill or drop those rows first.")
    return np.stack([table.column(c).to_numpy().astype(np.float64) for c in columns], axis=1)


def load_feature_files(files: list[str], format: str = "auto", columns=()) -> FeatureData:
    """The vectors of `files` (paths, already expanded), stacked in file order."""
    if not files:
        raise FeatureDataError("no feature files given.")
    fmt = infer_feature_format(files) if format == "auto" else format
    if fmt not in FEATURE_FORMATS[1:]:
        raise FeatureDataError(f"format={fmt!r} is not allowed; choose one of {', '.join(FEATURE_FORMATS)}.")
    arrays, used, skipped = [], list(columns), []
    for path in files:
        if fmt == "npy":
            if columns:
                raise FeatureDataError(f"{path}: columns={list(columns)} only apply to csv, parquet and jsonl files.")
            array = read_npy(path)
        else:
            table = read_table(path, fmt)
            if not used:
                used, skipped = table_columns(table, path, [])
            else:
                table_columns(table, path, used)  # every file must have the same feature columns
            array = table_to_array(table, path, used)
        if arrays and array.shape[1] != arrays[0].shape[1]:
            raise FeatureDataError(
                f"{path}: {array.shape[1]} values per vector, but {files[0]} has {arrays[0].shape[1]}; every file "
                "must give vectors of the same size."
            )
        arrays.append(array)
    features = np.concatenate(arrays).astype(np.float32)
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise FeatureDataError(
            f"{len(rows)} vector(s) hold NaN or infinite values (first rows: {rows[:5].tolist()}, counted over "
            f"{', '.join(files)} in order); clean them first."
        )
    if len(features) == 0:
        raise FeatureDataError(f"{', '.join(files)} hold no vectors.")
    description = f"{len(files)} {fmt} file(s): {features.shape[0]:,} vectors of {features.shape[1]} values"
    if fmt != "npy":
        description += f" (columns {used[0]}..{used[-1]})" if len(used) > 1 else f" (column {used[0]})"
        if skipped:
            description += f"; non-numeric columns skipped: {', '.join(skipped)}"
    return FeatureData(features, description, list(used) if fmt != "npy" else [])


# --------------------------------------------------------------------------------------------------- splits
def split_features(features: np.ndarray, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): a seeded random `validation_fraction` of the rows held out (at least one row)."""
    count = len(features)
    held_out = int(round(count * validation_fraction))
    if validation_fraction > 0:
        held_out = max(held_out, 1)
    if held_out >= count:
        raise FeatureDataError(
            f"validation_fraction={validation_fraction} of {count} vectors leaves no training vectors."
        )
    order = np.random.default_rng(seed).permutation(count)
    return features[np.sort(order[held_out:])], features[np.sort(order[:held_out])]


class FeatureDataset(torch.utils.data.Dataset):
    """Rows of a (N, D) float32 array as `{"input_features": (D,), "example_index": i}`."""

    def __init__(self, features: np.ndarray):
        self.features = np.ascontiguousarray(features, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict:
        return {"input_features": self.features[index], "example_index": int(index)}


__all__ = [
    "FEATURE_FORMATS",
    "FeatureData",
    "FeatureDataError",
    "FeatureDataset",
    "infer_feature_format",
    "load_digits_features",
    "load_feature_files",
    "split_features",
]

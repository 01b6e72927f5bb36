"""Regression scores of float predictions: mse, mae, Pearson and Spearman correlation (offline, numpy only).

Spearman is Pearson on ranks (ties get their average rank), as in scipy.stats.spearmanr. A constant prediction or
reference has no defined correlation; it scores 0 so a best-model comparison never sees NaN.
"""

import datasets
import evaluate
import numpy as np

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float), references (list of float); with config "multioutput", rows of floats
    (scores are then over all values).
Returns:
    mse, mae, pearson, spearman (floats)
"""


def pearson(x, y):
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def average_ranks(values):
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.arange(len(values), dtype=float)
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):  # give tied runs the mean of their ranks
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end - 1) / 2
            start = end
    return ranks


class Regression(evaluate.Metric):
    def _info(self):
        value = datasets.Sequence(datasets.Value("float32")) if self.config_name == "multioutput" else datasets.Value("float32")
        return evaluate.MetricInfo(
            description="Mean squared error, mean absolute error, Pearson and Spearman correlation.",
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions, references):
        x = np.asarray(predictions, dtype=float).ravel()
        y = np.asarray(references, dtype=float).ravel()
        if x.shape != y.shape:
            raise ValueError(f"predictions ({x.size} values) and references ({y.size} values) differ in size.")
        return {
            "mse": float(((x - y) ** 2).mean()),
            "mae": float(np.abs(x - y).mean()),
            "pearson": pearson(x, y),
            "spearman": pearson(average_ranks(x), average_ranks(y)),
        }

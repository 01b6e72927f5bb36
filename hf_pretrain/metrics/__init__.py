"""`evaluate` metric modules shipped inside the package, loaded by path so they work offline.

`evaluate.load("accuracy")` fetches the module from the Hub; these folders hold our own implementations of the
metrics fine-tuning needs, each an `evaluate.Metric` in `<name>/<name>.py`:

* `accuracy`         predictions/references: class ids (config "multilabel": multi-hot rows -> subset accuracy)
* `f1`               per-class F1 averaged `macro` (default), `micro`, `weighted` or `binary` (+ "multilabel")
* `precision_recall` precision and recall, averaged the same ways (+ "multilabel")
* `regression`       mse, mae, pearson, spearman of float predictions
* `seqeval`          entity-level precision/recall/F1 for BIO (IOB2) tag sequences, overall and per entity type
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("accuracy", "f1", "precision_recall", "regression", "seqeval")


def metric_path(name: str) -> str:
    if name not in METRIC_NAMES:
        raise ValueError(f"metric {name!r} is not shipped with hf_pretrain; choose one of {', '.join(METRIC_NAMES)}.")
    return str(METRICS_DIR / name)


def load_metric(name: str, config_name: str | None = None):
    """`evaluate.load` of a shipped metric module (no network needed)."""
    import evaluate

    return evaluate.load(metric_path(name), config_name)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "metric_path", "load_metric"]

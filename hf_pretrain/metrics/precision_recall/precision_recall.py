"""Precision (right among predicted) and recall (found among actual), hf_pretrain's offline module.

Averages and the "multilabel" config as in the `f1` module: "macro" (default), "micro", "weighted", "binary".
Undefined ratios (a class never predicted, or never present) count as 0.
"""

import datasets
import evaluate
import numpy as np

AVERAGES = ("macro", "micro", "weighted", "binary")

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (or multi-hot rows with config "multilabel").
    references: true class ids (or multi-hot rows).
    average (str, default "macro"): one of "macro", "micro", "weighted", "binary".
    pos_label (int, default 1): the class scored when average="binary".
    labels (list of int, optional): the classes to average over (default: every class seen).
Returns:
    precision (float), recall (float)
"""


def counts(predictions, references, labels):
    """(classes, true positives, false positives, false negatives) per class."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape.")
    if predictions.ndim == 2:
        chosen = np.asarray(labels if labels is not None else range(predictions.shape[1]))
        predicted, actual = predictions[:, chosen] == 1, references[:, chosen] == 1
    else:
        chosen = np.asarray(labels if labels is not None else np.union1d(predictions, references))
        predicted = predictions[:, None] == chosen[None, :]
        actual = references[:, None] == chosen[None, :]
    tp = (predicted & actual).sum(0).astype(float)
    return chosen, tp, (predicted & ~actual).sum(0).astype(float), (~predicted & actual).sum(0).astype(float)


def ratio(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def averaged(per_class_fn, chosen, tp, fp, fn, average, pos_label):
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is not allowed; choose one of {', '.join(AVERAGES)}.")
    if average == "micro":
        return float(per_class_fn(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))[0])
    per_class = per_class_fn(tp, fp, fn)
    if average == "binary":
        where = np.flatnonzero(chosen == pos_label)
        return float(per_class[where[0]]) if len(where) else 0.0
    if average == "weighted":
        support = tp + fn
        return float((per_class * support).sum() / support.sum()) if support.sum() else 0.0
    return float(per_class.mean()) if len(per_class) else 0.0


class PrecisionRecall(evaluate.Metric):
    def _info(self):
        value = datasets.Sequence(datasets.Value("int32")) if self.config_name == "multilabel" else datasets.Value("int32")
        return evaluate.MetricInfo(
            description="Precision = TP / (TP + FP) and recall = TP / (TP + FN), averaged over classes.",
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions, references, average="macro", pos_label=1, labels=None):
        chosen, tp, fp, fn = counts(predictions, references, labels)
        return {
            "precision": averaged(lambda t, p, n: ratio(t, t + p), chosen, tp, fp, fn, average, pos_label),
            "recall": averaged(lambda t, p, n: ratio(t, t + n), chosen, tp, fp, fn, average, pos_label),
        }

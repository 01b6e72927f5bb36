"""F1 score, the harmonic mean of precision and recall (hf_pretrain's offline module, numpy only).

average: "macro" (default; unweighted mean over classes), "micro" (from pooled counts), "weighted" (mean weighted
by each class's support) or "binary" (the class `pos_label` only). Config "multilabel": multi-hot rows, each
column a class. A class with no predictions or no references scores 0 where the ratio is undefined.
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
    f1 (float)
"""


def counts(predictions, references, labels):
    """(true positives, false positives, false negatives, support) per class, as float arrays."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape.")
    if predictions.ndim == 2:  # multi-label: column c is class c
        chosen = np.asarray(labels if labels is not None else range(predictions.shape[1]))
        predicted, actual = predictions[:, chosen] == 1, references[:, chosen] == 1
    else:
        chosen = np.asarray(labels if labels is not None else np.union1d(predictions, references))
        predicted = predictions[:, None] == chosen[None, :]
        actual = references[:, None] == chosen[None, :]
    tp = (predicted & actual).sum(0).astype(float)
    fp = (predicted & ~actual).sum(0).astype(float)
    fn = (~predicted & actual).sum(0).astype(float)
    return chosen, tp, fp, fn


def ratio(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


def f1_of(tp, fp, fn):
    return ratio(2 * tp, 2 * tp + fp + fn)


def average_scores(score_fn, chosen, tp, fp, fn, average, pos_label):
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is not allowed; choose one of {', '.join(AVERAGES)}.")
    if average == "micro":
        return float(score_fn(np.array([tp.sum()]), np.array([fp.sum()]), np.array([fn.sum()]))[0])
    per_class = score_fn(tp, fp, fn)
    if average == "binary":
        where = np.flatnonzero(chosen == pos_label)
        return float(per_class[where[0]]) if len(where) else 0.0
    if average == "weighted":
        support = tp + fn
        return float((per_class * support).sum() / support.sum()) if support.sum() else 0.0
    return float(per_class.mean()) if len(per_class) else 0.0


class F1(evaluate.Metric):
    def _info(self):
        value = datasets.Sequence(datasets.Value("int32")) if self.config_name == "multilabel" else datasets.Value("int32")
        return evaluate.MetricInfo(
            description="F1 = 2 * precision * recall / (precision + recall), averaged over classes.",
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions, references, average="macro", pos_label=1, labels=None):
        chosen, tp, fp, fn = counts(predictions, references, labels)
        return {"f1": average_scores(f1_of, chosen, tp, fp, fn, average, pos_label)}

"""Accuracy: the fraction of examples whose prediction equals the reference (hf_pretrain's offline module).

Config "multilabel": predictions and references are multi-hot rows and an example counts as right only when the
whole row matches (subset accuracy).
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Fraction of predictions equal to their references (subset accuracy for multi-label rows)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (or multi-hot rows with config "multilabel").
    references: true class ids (or multi-hot rows).
    normalize (bool, default True): return a fraction; False returns the count of correct examples.
    sample_weight (list of float, optional): per-example weights.
Returns:
    accuracy (float)
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        value = datasets.Sequence(datasets.Value("int32")) if self.config_name == "multilabel" else datasets.Value("int32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.shape != references.shape:
            raise ValueError(f"predictions {predictions.shape} and references {references.shape} differ in shape.")
        correct = predictions == references
        if correct.ndim > 1:  # multi-label: the whole row must match
            correct = correct.all(axis=1)
        weights = np.ones(len(correct)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        hits = float((correct * weights).sum())
        total = float(weights.sum())
        return {"accuracy": hits / total if normalize else hits}

"""A linear probe at every eval: is the model getting more useful for a task while it pretrains?

At step 0 and at every eval the loop freezes the model (eval mode, no gradients), pools its features of a small
labeled set as `hf-pretrain embed` does (the mean of the last hidden states over real tokens; an autoencoder's
pooler), fits a multinomial logistic regression on a fixed part of the set and scores accuracy and macro F1 on the
rest. The probe never touches the model's weights, the data order or any random generator the training reads, so
runs with and without it train the same steps; its time is kept out of the wall-clock budget, as the step-0 eval's
is, and logged as a share of the training time since the previous eval.

Why logistic regression by L-BFGS rather than a closed-form ridge fit to one-hot targets: both take well under a
second at these sizes, but ridge accuracy follows the squared loss, which is dominated by the easy classes; the
logistic fit is the probe the literature reports (linear evaluation). Features are standardized with the fit
part's statistics and the fit runs in float64 on the CPU for the same numbers on every machine and rank.

Public API
----------
`ProbeSet`: the fixed fit/score split of a labeled set (texts, label ids, label names, a description).
`load_probe_set(recipe) -> ProbeSet | None`: the recipe's probe (none, the built-in task, or files), checked before
    any work: a bad file is refused naming the file and what is wrong.
`LinearProbe(probe_set, tokenizer, max_length, l2, pooling)`: `.run(model) -> {"probe_accuracy", "probe_macro_f1",
    "probe_seconds"}`.
`fit_logistic_regression(x, y, num_classes, l2)`, `macro_f1(predicted, labels, num_classes)`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..pooling import default_pooling, pool
from ..recipe import RecipeError
from ..recipe.probe import probe_source

logger = logging.getLogger(__name__)

FEATURE_BATCH_SIZE = 64
LBFGS_STEPS = 200
MIN_PER_CLASS = 2  # every class needs an example on each side of the split


@dataclass
class ProbeSet:
    description: str
    label_names: list[str]
    fit_texts: list[str]
    fit_labels: np.ndarray  # (n_fit,) int64
    score_texts: list[str]
    score_labels: np.ndarray  # (n_score,) int64


def text_fraction(text: str, salt: str) -> float:
    """A number in [0, 1) from (salt, text) alone: the same split and subset on every run, rank and order."""
    digest = hashlib.blake2b(f"{salt}\x00{text}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def load_probe_set(recipe) -> ProbeSet | None:
    section = recipe.probe
    source = probe_source(section, recipe.data)
    if source == "none":
        return None
    if source == "builtin":
        from ..data.builtin import load_builtin_task

        task = load_builtin_task()["train"]  # the training split only: the task's test split stays unseen
        names = task.features["label"].names
        texts, labels = list(task["text"]), [names[i] for i in task["label"]]
        description = "the built-in task's training split (standard-library package of a docstring)"
    else:
        texts, labels, description = read_probe_files(section)
    return split_probe_set(texts, labels, section, description)


def read_probe_files(section) -> tuple[list[str], list[str], str]:
    """(texts, labels as strings, description) of probe.files; each file checked for its columns and values."""
    import datasets

    from ..data.sources import DATASETS_BUILDER, infer_format, resolve_files

    try:
        files = resolve_files(section.files)
    except (FileNotFoundError, ValueError) as error:
        raise RecipeError(f"probe.files: {error}") from None
    fmt = section.format if section.format != "auto" else infer_format(files)
    if fmt not in ("jsonl", "csv", "parquet"):
        raise RecipeError(f"probe.files {files}: format {fmt!r} has no label column; allowed: jsonl, csv, parquet.")
    texts, labels = [], []
    for path in files:
        try:
            rows = datasets.load_dataset(DATASETS_BUILDER[fmt], data_files=[path], split="train")
        except Exception as error:  # the builders raise many types for a malformed file; name the file
            raise RecipeError(f"probe.files: {path} could not be read as {fmt}: {error}") from None
        missing = [c for c in (section.text_column, section.label_column) if c not in rows.column_names]
        if missing:
            raise RecipeError(
                f"probe.files: {path} has no column {', '.join(map(repr, missing))} (probe.text_column="
                f"{section.text_column!r}, probe.label_column={section.label_column!r}); its columns: "
                f"{', '.join(rows.column_names)}.")
        for row, (text, label) in enumerate(zip(rows[section.text_column], rows[section.label_column])):
            if not isinstance(text, str) or not text.strip() or label is None or isinstance(label, (list, dict)):
                raise RecipeError(
                    f"probe.files: {path} row {row + 1}: text {text!r:.60} / label {label!r:.40}; each row needs a "
                    "non-empty text and one label (a class name or number).")
            texts.append(text)
            labels.append(str(label))
    return texts, labels, f"{len(files)} file(s): {', '.join(Path(f).name for f in files[:3])}"


def split_probe_set(texts: list[str], labels: list[str], section, description: str) -> ProbeSet:
    """At most probe.max_examples examples (by a hash of each text), split by another hash into fit and score."""
    pairs = sorted(zip(texts, labels), key=lambda pair: text_fraction(pair[0], "probe-subset"))[:section.max_examples]
    names = sorted({label for _, label in pairs})
    fit, score = [], []
    for text, label in pairs:
        (score if text_fraction(text, "probe-split") < section.test_fraction else fit).append((text, label))
    counts = {name: (sum(label == name for _, label in fit), sum(label == name for _, label in score))
              for name in names}
    thin = {name: count for name, count in counts.items() if min(count) < 1 or sum(count) < MIN_PER_CLASS}
    if len(names) < 2 or thin:
        raise RecipeError(
            f"probe ({description}): {len(pairs)} examples, {len(names)} label(s) {names[:10]}; a probe needs at "
            f"least 2 labels, each with examples on both sides of the fit/score split (fit, score counts of the "
            f"short ones: {dict(list(thin.items())[:10])}). Add examples, or raise probe.max_examples.")
    index = {name: i for i, name in enumerate(names)}
    return ProbeSet(description, names, [t for t, _ in fit], np.array([index[l] for _, l in fit], np.int64),
                    [t for t, _ in score], np.array([index[l] for _, l in score], np.int64))


# ------------------------------------------------------------------------------------------------ features
def feature_model(model):
    """(module, default pooling) whose forward(input_ids, attention_mask) returns the states to pool: the
    replaced-token pretrainer's discriminator, an autoencoder's encoder + bottleneck, else the bare base model."""
    if hasattr(model, "discriminator"):  # replaced-token detection: the encoder that is handed on
        model = model.discriminator
    base = model.base_model
    return base, default_pooling(base)


def token_batches(tokenizer, texts: list[str], max_length: int) -> list[tuple[list[int], dict]]:
    """The texts tokenized once, in batches of similar token counts (less padding): [(their indices, batch)]."""
    ids = tokenizer(texts, truncation=True, max_length=max_length, return_token_type_ids=False)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    batches = []
    for start in range(0, len(order), FEATURE_BATCH_SIZE):
        chosen = order[start:start + FEATURE_BATCH_SIZE]
        batch = tokenizer.pad({"input_ids": [ids[i] for i in chosen]}, return_tensors="pt")
        batches.append((chosen, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}))
    return batches


def pooled_features(model, batches: list[tuple[list[int], dict]], count: int, pooling: str, device) -> np.ndarray:
    """(count, C) float64 features of the texts of `token_batches`, in their original order."""
    module, default = feature_model(model)
    pooling = default if pooling == "auto" else pooling
    features = np.zeros((count, module.config.hidden_size), np.float64)
    with torch.inference_mode():
        for chosen, batch in batches:
            batch = {key: value.to(device) for key, value in batch.items()}
            features[chosen] = pool(module(**batch), batch["attention_mask"], pooling).float().cpu().numpy()
    return features


# ------------------------------------------------------------------------------------------------ the classifier
def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float):
    """(weights (C, K), bias (K,)) of a multinomial logistic regression on (n, C) float64 features, mean
    cross-entropy + l2/2 * |W|^2, by L-BFGS with a strong-Wolfe line search (deterministic on the CPU)."""
    weights = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], lr=1.0, max_iter=LBFGS_STEPS, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights + bias, y) + 0.5 * l2 * weights.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weights.detach(), bias.detach()


def macro_f1(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """The unweighted mean over classes of F1 (a class never predicted nor present counts 0, as scikit-learn's
    zero_division=0 does)."""
    scores = []
    for k in range(num_classes):
        true_positive = np.sum((predicted == k) & (labels == k))
        denominator = np.sum(predicted == k) + np.sum(labels == k)
        scores.append(2.0 * true_positive / denominator if denominator else 0.0)
    return float(np.mean(scores))


class LinearProbe:
    """The probe of one run: its fixed split, and the tokenizer and settings the features are made with."""

    def __init__(self, probe_set: ProbeSet, tokenizer, max_length: int, l2: float = 1e-3, pooling: str = "auto"):
        self.probe_set, self.l2, self.pooling = probe_set, l2, pooling
        # A copy: a fast tokenizer keeps the truncation it last ran with in its backend, and the run's tokenizer
        # is saved with every checkpoint and final/ (its tokenizer.json must stay the one the run trained or loaded).
        tokenizer = copy.deepcopy(tokenizer)
        self.fit_batches = token_batches(tokenizer, probe_set.fit_texts, max_length)
        self.score_batches = token_batches(tokenizer, probe_set.score_texts, max_length)

    def run(self, model, device=None) -> dict[str, float]:
        """Probe accuracy and macro F1 of `model`'s features on the score part (the model is left as it was)."""
        started = time.perf_counter()
        device = device or next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            fit = pooled_features(model, self.fit_batches, len(self.probe_set.fit_texts), self.pooling, device)
            score = pooled_features(model, self.score_batches, len(self.probe_set.score_texts), self.pooling, device)
        finally:
            model.train(was_training)
        mean, std = fit.mean(0), fit.std(0) + 1e-6
        x_fit = torch.from_numpy((fit - mean) / std)
        x_score = torch.from_numpy((score - mean) / std)
        classes = len(self.probe_set.label_names)
        weights, bias = fit_logistic_regression(x_fit, torch.from_numpy(self.probe_set.fit_labels), classes, self.l2)
        predicted = (x_score @ weights + bias).argmax(-1).numpy()
        labels = self.probe_set.score_labels
        return {"probe_accuracy": float(np.mean(predicted == labels)),
                "probe_macro_f1": macro_f1(predicted, labels, classes),
                "probe_seconds": time.perf_counter() - started}

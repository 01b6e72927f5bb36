#!/usr/bin/env python
"""Does denoising pretraining give useful bottleneck features? scikit-learn's handwritten digits, few labels.

    pip install scikit-learn          # only this benchmark needs it; hf_pretrain does not depend on it
    HF_HUB_OFFLINE=1 python benchmarks/dae_digits.py                     # defaults: 5 seeds, ~5 minutes on 2 cores
    python benchmarks/dae_digits.py --seeds 2 --epochs 20                # a quick look

What it does, per seed
  * `sklearn.datasets.load_digits` (1797 8x8 images, 64 pixel values 0..16, shipped inside scikit-learn), scaled to
    [0, 1], split 70/30 (stratified, seeded) into a pool and a test set.
  * Pretrains a `PretrainDAEForFeatureReconstruction` on the whole pool WITHOUT labels: each image is 8 feature
    tokens (its rows), the encoder's pooled [summary] vector is the only thing the decoder sees (bottleneck
    "pooled"), the input is corrupted by `FeatureNoiseCollator` (Gaussian noise + masked pixels) and the loss is
    the mean squared error against the clean image.
  * Draws k labeled images per class from the pool and fits the same classifier (standardize, then logistic
    regression) on three feature sets: the pretrained encoder's bottleneck, the bottleneck of the SAME
    architecture with its random initial weights (same seed), and the raw 64 pixels (a reference, not a rival:
    digits are easy for a linear model on pixels).
  * Prints the test accuracy of each, mean +- std over seeds, and the reconstruction error before/after.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from hf_pretrain import PretrainDAEFeatureConfig, PretrainDAEForFeatureReconstruction
from hf_pretrain.data.noising import FeatureNoiseCollator


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--gaussian-std", type=float, default=0.1)
    parser.add_argument("--mask-rate", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this tiny model)")
    return parser.parse_args()


def load_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    features = (digits.data / 16.0).astype(np.float32)
    return train_test_split(features, digits.target, test_size=0.3, stratify=digits.target, random_state=seed)


def build_model(args, seed: int) -> PretrainDAEForFeatureReconstruction:
    torch.manual_seed(seed)
    config = PretrainDAEFeatureConfig(
        feature_size=8,
        hidden_size=args.hidden,
        num_hidden_layers=2,
        decoder_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * args.hidden,
        max_position_embeddings=16,
        bottleneck="pooled",
        pooling="cls",
    )
    return PretrainDAEForFeatureReconstruction(config)


@torch.no_grad()
def bottleneck_features(model, features: np.ndarray) -> np.ndarray:
    model.eval()
    return model.encode(torch.from_numpy(features)).numpy()


@torch.no_grad()
def reconstruction_error(model, features: np.ndarray) -> float:
    model.eval()
    clean = torch.from_numpy(features)
    return model(clean, labels=clean).loss.item()


def pretrain(model, pool: np.ndarray, args, seed: int) -> None:
    """AdamW with linear warm-up and cosine decay; noise is a function of (seed, epoch, image index)."""
    collator = FeatureNoiseCollator(gaussian_std=args.gaussian_std, mask_rate=args.mask_rate, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps_per_epoch = -(-len(pool) // args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, total // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, 0.5 * (1 + np.cos(np.pi * min(step, total) / total))),
    )
    order_rng = np.random.default_rng(seed)
    model.train()
    for epoch in range(args.epochs):
        collator.set_epoch(epoch)
        order = order_rng.permutation(len(pool))
        for start in range(0, len(pool), args.batch_size):
            rows = order[start : start + args.batch_size]
            batch = collator([{"input_features": pool[i], "example_index": int(i)} for i in rows])
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()


def few_label_accuracy(train_x, train_y, test_x, test_y, per_class: int, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(train_y == c), per_class, replace=False) for c in range(10)])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    classifier.fit(train_x[chosen], train_y[chosen])
    return float((classifier.predict(test_x) == test_y).mean())


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):5.1f} +- {100 * spread:4.1f}"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    results: dict[tuple[str, int], list[float]] = {}
    errors = []
    for seed in range(args.seeds):
        started = time.time()
        pool_x, test_x, pool_y, test_y = load_data(seed)
        model = build_model(args, seed)
        untrained = copy.deepcopy(model)
        before = reconstruction_error(model, test_x)
        pretrain(model, pool_x, args, seed)
        after = reconstruction_error(model, test_x)
        errors.append((before, after))
        feature_sets = {
            "DAE bottleneck (pretrained)": (bottleneck_features(model, pool_x), bottleneck_features(model, test_x)),
            "same encoder, random init": (
                bottleneck_features(untrained, pool_x),
                bottleneck_features(untrained, test_x),
            ),
            "raw pixels (reference)": (pool_x, test_x),
        }
        for name, (train_features, test_features) in feature_sets.items():
            for per_class in args.labels_per_class:
                accuracy = few_label_accuracy(train_features, pool_y, test_features, test_y, per_class, seed)
                results.setdefault((name, per_class), []).append(accuracy)
        print(
            f"seed {seed}: test MSE {before:.4f} -> {after:.4f}; "
            + "; ".join(f"{name.split(' (')[0]} k={k}: {100 * v[-1]:.1f}%" for (name, k), v in results.items())
            + f"  ({time.time() - started:.0f} s)",
            flush=True,
        )

    print(
        f"\nTest accuracy (%), logistic regression on k labeled images per class, {args.seeds} seeds, "
        f"{len(test_y)} test images; pretraining {args.epochs} epochs on {len(pool_x)} unlabeled images, "
        f"hidden {args.hidden}, noise std {args.gaussian_std} + {args.mask_rate:.0%} masked pixels"
    )
    header = f"{'features':32s}" + "".join(f"{f'k={k}':>16s}" for k in args.labels_per_class)
    print(header)
    print("-" * len(header))
    for name in ("DAE bottleneck (pretrained)", "same encoder, random init", "raw pixels (reference)"):
        print(f"{name:32s}" + "".join(f"{mean_std(results[(name, k)]):>16s}" for k in args.labels_per_class))
    wins = {
        k: sum(
            p > r
            for p, r in zip(results[("DAE bottleneck (pretrained)", k)], results[("same encoder, random init", k)])
        )
        for k in args.labels_per_class
    }
    print("\npretrained > random init in " + ", ".join(f"{wins[k]}/{args.seeds} seeds at k={k}" for k in wins))
    print(
        f"reconstruction MSE on test images: {statistics.mean(e[0] for e in errors):.4f} (random init) -> "
        f"{statistics.mean(e[1] for e in errors):.4f} (pretrained); predicting the mean image scores about "
        f"{float(((test_x - pool_x.mean(0)) ** 2).mean()):.4f}"
    )


if __name__ == "__main__":
    main()

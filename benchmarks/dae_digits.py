#!/usr/bin/env python
"""Does the dae-features recipe give useful bottleneck features? scikit-learn's handwritten digits, few labels.

    pip install scikit-learn          # only dae-features' built-in digits need it; hf_pretrain does not depend on it
    HF_HUB_OFFLINE=1 python benchmarks/dae_digits.py                     # 5 seeds, the recipe as shipped
    HF_HUB_OFFLINE=1 python benchmarks/dae_digits.py --quick             # smoke run: 2 seeds, 250 steps each
    python benchmarks/dae_digits.py --seeds 3 train.max_steps=600        # any recipe override after the options

What it does, per seed
  * `sklearn.datasets.load_digits` (1,797 8x8 images), scaled to [0, 1] exactly as `features.source=digits` does
    (`hf_pretrain.data.features.load_digits_features`), split 70/30 (stratified, seeded) into a pool and a test set,
    each written to a .npy file.
  * Pretrains through the real recipe path, `Pretraining(load_recipe("dae-features", overrides)).run()` — what
    `hf-pretrain pretrain dae-features` runs — with only the data, seed and output changed:
    `features.source=files features.train_files=POOL.npy features.validation_files=TEST.npy train.seed=SEED`. The
    pool is trained on WITHOUT labels; the test images serve only as the recipe's eval set (eval MSE, no gradient).
    Everything else (model size, noise, lr, schedule, the 1,250-step budget) is the shipped recipe's.
  * Reads the bottleneck the way the recipe's comment tells a user to: `AutoModel.from_pretrained(RUN/final)`,
    `pooler_output` of the clean images.
  * Draws k labeled images per class from the pool and fits the same classifier (standardize, then logistic
    regression) on three feature sets: the trained bottleneck, the bottleneck of the same model with the initial
    weights of that run (captured before the first step: same architecture, same seed), and the raw 64 pixels
    (a reference, not a rival: digits are easy for a linear model on pixels).
  * Prints the test accuracy of each, mean +- std over seeds, and the recipe's own eval (reconstruction MSE of
    noisy and of clean test images, before and after training).
Results: benchmarks/RESULTS.md#dae-digits.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hf_pretrain.data.features import load_digits_features  # noqa: E402
from hf_pretrain.recipe import load_recipe  # noqa: E402
from hf_pretrain.training.loop import Pretraining  # noqa: E402

FEATURE_SETS = ("DAE bottleneck (pretrained)", "same model, initial weights", "raw pixels (reference)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--labels-per-class", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the recipe's comment: one is enough for this tiny model)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, train.max_steps=250")
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench-dae-digits"))
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="extra dae-features recipe overrides")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = min(args.seeds, 2)
        args.overrides = ["train.max_steps=250", "train.eval_every=250", *args.overrides]
    return args


def split_digits(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    features = load_digits_features().features
    return train_test_split(features, load_digits().target, test_size=0.3, stratify=load_digits().target,
                            random_state=seed)


def pretrain(args, work: Path, seed: int, pool: np.ndarray, test: np.ndarray):
    """One run of the dae-features recipe on the pool; returns (summary, the model with its initial weights)."""
    run_dir = work / f"seed-{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover run folder would be resumed, not restarted
    run_dir.mkdir(parents=True)
    np.save(run_dir / "pool.npy", pool)
    np.save(run_dir / "test.npy", test)
    overrides = [
        "features.source=files", f"features.train_files=[{run_dir / 'pool.npy'}]",
        f"features.validation_files=[{run_dir / 'test.npy'}]", f"train.seed={seed}",
        f"output.dir={run_dir / 'run'}", "output.log_with=[]", "output.progress_bar=false", *args.overrides,
    ]
    pretraining = Pretraining(load_recipe("dae-features", overrides))
    initial = copy.deepcopy(pretraining.accelerator.unwrap_model(pretraining.model)).eval()
    return pretraining.run(), initial


@torch.no_grad()
def bottleneck_features(model, features: np.ndarray) -> np.ndarray:
    return model.eval()(torch.from_numpy(features)).pooler_output.numpy()


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


def main(argv=None) -> None:
    import transformers
    from transformers import AutoModel

    transformers.utils.logging.disable_progress_bar()  # a bar per saved checkpoint would bury the table
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work_dir)
    started_all = time.time()
    results: dict[tuple[str, int], list[float]] = {}
    evals, summaries = [], []
    for seed in range(args.seeds):
        started = time.time()
        pool_x, test_x, pool_y, test_y = split_digits(seed)
        summary, initial = pretrain(args, work, seed, pool_x, test_x)
        summaries.append(summary)
        evals.append((summary["initial_eval"], summary["final_eval"]))
        trained = AutoModel.from_pretrained(summary["final_dir"])
        feature_sets = {
            FEATURE_SETS[0]: (bottleneck_features(trained, pool_x), bottleneck_features(trained, test_x)),
            FEATURE_SETS[1]: (bottleneck_features(initial, pool_x), bottleneck_features(initial, test_x)),
            FEATURE_SETS[2]: (pool_x, test_x),
        }
        for name, (train_features, test_features) in feature_sets.items():
            for per_class in args.labels_per_class:
                accuracy = few_label_accuracy(train_features, pool_y, test_features, test_y, per_class, seed)
                results.setdefault((name, per_class), []).append(accuracy)
        before, after = evals[-1]
        print(
            f"seed {seed}: {summary['steps']} steps in {summary['minutes']:.1f} min; test MSE (noisy input) "
            f"{before['mse']:.4f} -> {after['mse']:.4f}; "
            + "; ".join(f"{name.split(' (')[0]} k={k}: {100 * v[-1]:.1f}%" for (name, k), v in results.items())
            + f"  ({time.time() - started:.0f} s)",
            flush=True,
        )

    steps = {s["steps"] for s in summaries}
    print(
        f"\nTest accuracy (%), logistic regression on k labeled images per class, {args.seeds} seeds, "
        f"{len(test_y)} test images; pretraining: the dae-features recipe on {len(pool_x)} unlabeled images, "
        f"{'/'.join(map(str, sorted(steps)))} steps"
        + (f", overrides {' '.join(args.overrides)}" if args.overrides else ", as shipped")
        + f"; {args.threads} torch thread(s)"
    )
    header = f"{'features':32s}" + "".join(f"{f'k={k}':>16s}" for k in args.labels_per_class)
    print(header)
    print("-" * len(header))
    for name in FEATURE_SETS:
        print(f"{name:32s}" + "".join(f"{mean_std(results[(name, k)]):>16s}" for k in args.labels_per_class))
    wins = {k: sum(p > r for p, r in zip(results[(FEATURE_SETS[0], k)], results[(FEATURE_SETS[1], k)]))
            for k in args.labels_per_class}
    print("\npretrained > initial weights in " + ", ".join(f"{wins[k]}/{args.seeds} seeds at k={k}" for k in wins))
    for key, label in (("mse", "noisy input"), ("clean_mse", "clean input")):
        print(f"reconstruction MSE of the test images, {label}: "
              f"{statistics.mean(b[key] for b, _ in evals):.4f} (initial weights) -> "
              f"{statistics.mean(a[key] for _, a in evals):.4f} (trained)")
    print(f"predicting the pool's mean image: {statistics.mean(a['baseline_mse'] for _, a in evals):.4f}; "
          f"mean training time {statistics.mean(s['minutes'] for s in summaries):.2f} min per seed; "
          f"total {(time.time() - started_all) / 60:.1f} min")


if __name__ == "__main__":
    main()

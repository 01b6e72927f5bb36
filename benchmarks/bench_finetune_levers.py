#!/usr/bin/env python
"""Fine-tuning-side levers, paired: the same pretrained models fine-tuned with each variant of the
`finetune-classification` recipe, the same seeds, on the built-in task.

    HF_HUB_OFFLINE=1 python benchmarks/bench_finetune_levers.py \
        --model spectral=runs/bench-transfer-budget/pretrain-spectral/final \
                mlm10=runs/bench-transfer-budget/pretrain-mlm-tiny-10min/final \
        --variant default= lpft=linear_probe.epochs=3 \
                  lpft-nowarm=linear_probe.epochs=3,warm_start.shrink=1,warm_start.perturb=0 \
        --reference spectral

Each (model, variant, seed) is one `finetune-classification` run (256 labeled examples, up to 20 epochs with early
stopping, as the quickstart fine-tunes; --labels 0 for all), pretrained run only (no compare_scratch). A variant is
NAME=key=value[,key=value] (fine-tuning recipe overrides; `NAME=` is the recipe as shipped).
The table: each model under each variant, test accuracy mean ± standard error over the seeds; `vs first variant`
is the paired difference to the first --variant on the same model and seed; `vs reference` the paired difference
to the --reference model under the same variant and seed (what a pretraining adds over, e.g., the spectral start
when both are fine-tuned the same way). Results are cached in --work-dir/results.json (a run in the cache is not
repeated), the Cache of bench_transfer_budget.py. Results: benchmarks/RESULTS.md#levers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transfer_budget import Cache, mean_and_error  # noqa: E402


def named(pairs: list[str], what: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--{what}: {pair!r} is not NAME=VALUE")
        if name in out:
            raise SystemExit(f"--{what}: the name {name!r} is given twice")
        out[name] = value
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", required=True, help="NAME=PATH of a model or run folder")
    parser.add_argument("--variant", nargs="+", default=["default="],
                        help="NAME=key=value[,key=value]: fine-tuning recipe overrides (NAME= for none)")
    parser.add_argument("--reference", default=None, help="a --model NAME the others are compared with")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--labels", type=int, default=256, help="labeled training examples (0: all)")
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench-finetune-levers"))
    args = parser.parse_args(argv)
    args.models, args.variants = named(args.model, "model"), named(args.variant, "variant")
    for name, path in args.models.items():
        if not Path(path).exists():
            parser.error(f"--model {name}={path}: no such folder")
    if args.reference is not None and args.reference not in args.models:
        parser.error(f"--reference {args.reference!r}: not one of the --model names {sorted(args.models)}")
    return args


def run(cache: Cache, work: Path, model: str, path: str, variant: str, overrides: str, labels: int,
        seed: int) -> dict:
    from hf_pretrain.finetune import finetune

    key = f"{model}/{variant}/{labels or 'all'}/seed{seed}"
    extra = [o for o in overrides.split(",") if o]
    fingerprint = f"{Path(path).resolve()}|{','.join(extra)}"
    if cache.current(key, fingerprint):
        return cache.get(key)
    started = time.perf_counter()
    out = finetune("finetune-classification", [
        f"model={path}", f"output.dir={work / key.replace('/', '-')}", f"train.seed={seed}",
        "output.progress_bar=false", "compare_scratch=false",
        *([f"data.max_train_examples={labels}", "train.epochs=20"] if labels else []), *extra])
    test = out["runs"]["pretrained"]["test"]
    result = {"accuracy": test["accuracy"], "f1": test["f1"], "recipe": fingerprint}
    cache.put(key, result)
    print(f"  {key}: {test['accuracy']:.1%} in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return result


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    work = Path(args.work_dir)
    cache = Cache(work / "results.json")
    accuracy = {}
    for seed in args.seeds:
        for model, path in args.models.items():
            for variant, overrides in args.variants.items():
                accuracy[model, variant, seed] = 100 * run(cache, work, model, path, variant, overrides,
                                                           args.labels, seed)["accuracy"]
    first = next(iter(args.variants))
    rows = []
    columns = ["model", "fine-tuning", "test accuracy", f"vs {first}"] + (
        [f"vs {args.reference}"] if args.reference else [])
    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for model in args.models:
        for variant in args.variants:
            values = [accuracy[model, variant, s] for s in args.seeds]
            versus_first = [accuracy[model, variant, s] - accuracy[model, first, s] for s in args.seeds]
            row = {"model": model, "variant": variant, "accuracy": mean_and_error(values),
                   "vs_first": mean_and_error(versus_first), "per_seed": values}
            cells = [f"{row['accuracy'][0]:.1f}% ± {row['accuracy'][1]:.1f}",
                     "-" if variant == first else f"{row['vs_first'][0]:+.1f} ± {row['vs_first'][1]:.1f}"]
            if args.reference:
                versus = [accuracy[model, variant, s] - accuracy[args.reference, variant, s] for s in args.seeds]
                row["vs_reference"] = mean_and_error(versus)
                cells.append("-" if model == args.reference
                             else f"{row['vs_reference'][0]:+.1f} ± {row['vs_reference'][1]:.1f}")
            rows.append(row)
            print(f"| {model} | {variant} | " + " | ".join(cells) + " |")
    print("\nper seed (" + ", ".join(map(str, args.seeds)) + "): " + "; ".join(
        f"{row['model']}/{row['variant']} " + ", ".join(f"{v:.1f}" for v in row["per_seed"]) for row in rows))
    return rows


if __name__ == "__main__":
    main()

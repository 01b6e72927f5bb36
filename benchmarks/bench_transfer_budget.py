#!/usr/bin/env python
"""How much does pretraining help fine-tuning, per minute of pretraining? The transfer-budget curve.

    HF_HUB_OFFLINE=1 python benchmarks/bench_transfer_budget.py                       # budgets 3 10 30: ~3 h
    HF_HUB_OFFLINE=1 python benchmarks/bench_transfer_budget.py --budgets 3 10        # ~1 h
    python benchmarks/bench_transfer_budget.py --quick                                 # smoke run, ~3 min
    python benchmarks/bench_transfer_budget.py --report-only                           # table + plot from the cache
    # a lever sweep, one invocation per core, sharing the cache (each row: 10 minutes of one core):
    # (--plot elsewhere: the default path is the committed budget curve)
    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_transfer_budget.py --budgets 10 --labels 256 \
        --objectives mlm-tiny mlm-tiny:masking.mlm_probability=0.5 --plot runs/levers.png &
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/bench_transfer_budget.py --budgets 10 --labels 256 \
        --objectives mlm-tiny:data.block_size=64 --without-baselines --plot runs/levers.png

What it does, on the built-in corpus and the built-in task (which stdlib package a docstring belongs to, 8 classes):
  Starts compared (each fine-tuned the same way):
    scratch       the encoder architecture from random weights (the fine-tuning run's compare_scratch)
    spectral      `mlm-tiny` stopped after 1 step: the closed-form spectral token embeddings and nothing learned
    mlm-tiny      the shipped recipe, `train.max_minutes=B`
    rtd-tiny      the shipped recipe (ELECTRA replaced-token detection, the same discriminator), `train.max_minutes=B`
  for each pretraining budget B in --budgets (wall-clock minutes from the first step; tokenizer training and
  packing are outside it, as for every recipe run). One pretraining run per start and budget (pretraining seed 0).
  Fine-tuning: the shipped `finetune-classification` recipe, as the quickstart runs it, for each labeled-set size
  in --labels (256 = the quickstart's 32 per class, up to 20 epochs with early stopping; 0 = all 1,051 training
  examples left after the 10% validation hold-out, the recipe's 5 epochs) and each fine-tuning seed in --seeds (the
  seed draws the labeled subset, the head and the scratch weights). Test accuracy on the 296-example test split.
  The gain of a start is its accuracy minus scratch's, for the same labeled set and seed, then averaged over seeds.
Output: a table (mean and standard error over seeds), benchmarks/transfer_budget.png (gain over scratch vs budget,
one line per objective and labeled-set size), and every individual result in a JSON cache (--work-dir/results.json)
that later invocations extend: a run already in the cache is not repeated, so budgets can be added one at a time.
Each result carries the fingerprint of the recipe it was measured with; after a shipped recipe changes, its cached
results are kept under `key@<old fingerprint>` (out of the table) and the runs are repeated.
Noise: budgets are wall-clock, so load from other processes shortens a run's training; the script records the CPU
share each pretraining run got (1.0 = all its threads busy). Run it on a quiet machine.
Results: benchmarks/RESULTS.md#transfer-budget.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402

transformers.logging.set_verbosity_error()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hf_pretrain.recipe import load_recipe  # noqa: E402

OBJECTIVES = ("mlm-tiny", "rtd-tiny")  # the default pretraining starts
STARTS = ("scratch", "spectral", *OBJECTIVES)


def start_recipe(start: str) -> tuple[str, list[str]]:
    """A start names a shipped recipe, optionally with overrides after a colon, comma-separated
    (`mlm-tiny:model.config.first_layer_attn_norm=false`): what a variant of a recipe is measured as."""
    name, _, overrides = start.partition(":")
    return ("mlm-tiny" if name in ("scratch", "spectral") else name), [o for o in overrides.split(",") if o]


def pretraining_starts(cache: "Cache") -> list[str]:
    """The pretraining starts the cache holds results of (the defaults first)."""
    found = {key.split("/")[1] for key in cache.data if key.startswith("finetune/") and "@" not in key}
    return [*OBJECTIVES, *sorted(found - set(STARTS))]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="*", default=[3.0, 10.0, 30.0],
                        help="pretraining budgets, wall-clock minutes (none: only the scratch and spectral starts, "
                             "which no budget changes)")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES),
                        help="pretraining starts: shipped recipe names, a variant as RECIPE:key=value[,key=value] "
                             "(default: mlm-tiny rtd-tiny)")
    parser.add_argument("--labels", type=int, nargs="+", default=[256, 0],
                        help="labeled training examples per fine-tuning run (0: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="fine-tuning seeds")
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench-transfer-budget"))
    parser.add_argument("--plot", default=str(REPO / "benchmarks" / "transfer_budget.png"))
    parser.add_argument("--report-only", action="store_true", help="print the table and plot from the cache")
    parser.add_argument("--without-baselines", action="store_true",
                        help="skip the scratch and spectral starts: a second invocation sharing --work-dir, pinned "
                             "to the other core, measures more starts while the first measures them")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 0.1-minute budgets, 64 labels, 1 fine-tuning epoch, one seed, own work dir")
    args = parser.parse_args(argv)
    if args.quick:
        args.budgets, args.labels, args.seeds = [0.1], [64], args.seeds[:1]
        args.work_dir = str(Path(args.work_dir).with_name(Path(args.work_dir).name + "-quick"))
    for budget in args.budgets:
        if not budget > 0:
            parser.error(f"--budgets: {budget} is not allowed; budgets are minutes > 0")
    for labels in args.labels:
        if labels < 0:
            parser.error(f"--labels: {labels} is not allowed; use a number of examples >= 1, or 0 for all")
    return args


# ---------------------------------------------------------------------------------------------------- the cache
class Cache:
    """results.json: {key: result}, written after every run so an interrupted benchmark keeps what it measured.
    Two invocations may share one work dir (one per core, each measuring other starts): a write holds a lock file
    and merges into what is on disk, so neither loses the other's results."""

    def __init__(self, path: Path):
        self.path = path
        self.data = {}
        self.reload()

    def reload(self) -> None:
        """Take in what other invocations wrote since (every put writes through: the file is the whole truth)."""
        if self.path.is_file():
            self.data = json.loads(self.path.read_text())

    def get(self, key: str):
        return self.data.get(key)

    def put(self, key: str, value, replaces: str | None = None) -> None:
        """Store `value` under `key` (and drop `replaces`: a result retired under a new key)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            on_disk = json.loads(self.path.read_text()) if self.path.is_file() else {}
            self.data = {**on_disk, key: value}
            self.data.pop(replaces, None)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.data, indent=1))
            temporary.replace(self.path)

    def current(self, key: str, fingerprint: str):
        """The cached result of `key` if it was measured with the recipe `fingerprint` names; a result measured
        with another recipe is kept, under `key@<its fingerprint>`, and None is returned so the run is repeated."""
        result = self.get(key)
        if result is None or result.get("recipe") == fingerprint:
            return result
        retired = f"{key}@{result.get('recipe', 'unrecorded')}"
        print(f"  {key}: measured with another recipe ({result.get('recipe', 'unrecorded')}, now {fingerprint}); "
              f"kept as {retired}, running it again", flush=True)
        self.put(retired, result, replaces=key)
        return None


def recipe_fingerprint(start: str) -> str:
    """What a start's pretraining computes, in 10 hex digits: the values of its recipe that differ from the
    defaults, less the keys a run may change without changing its steps (budget, cadence, output: the keys a
    resumed run may change). Every cached result carries the fingerprint of the start it came from, so a result
    measured before a recipe changed is not mixed into the table (settings added later with their default values
    leave it as it was). Scratch and spectral are built from mlm-tiny's model."""
    from dataclasses import asdict

    from hf_pretrain.recipe import Recipe
    from hf_pretrain.recipe.resume import SAFE_TO_CHANGE_ON_RESUME, flat_items

    recipe = load_recipe(*start_recipe(start))
    defaults = flat_items(asdict(Recipe()))
    chosen = {key: value for key, value in flat_items(asdict(recipe)).items()
              if key not in SAFE_TO_CHANGE_ON_RESUME and (key not in defaults or defaults[key] != value)}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:10]


def safe_name(key: str) -> str:
    """A cache key as a folder name."""
    return key.replace("/", "-").replace(":", "--").replace("=", "-").replace(",", "--")


def budget_name(minutes: float) -> str:
    return f"{minutes:g}min"


# ---------------------------------------------------------------------------------------------------- pretraining
def pretrain(cache: Cache, work: Path, start: str, budget: float | None) -> dict:
    """One pretraining run (cached): `spectral` is mlm-tiny stopped after its first step."""
    from hf_pretrain.training.loop import Pretraining

    key = f"pretrain/{start}" + (f"/{budget_name(budget)}" if budget else "")
    fingerprint = recipe_fingerprint(start)
    if cache.current(key, fingerprint):
        return cache.get(key)
    run_dir = work / safe_name(key)
    recipe_name, variant = start_recipe(start)
    budget_overrides = ["train.max_minutes=null", "train.max_steps=1"] if start == "spectral" else [
        f"train.max_minutes={budget}"]
    overrides = [*variant, f"output.dir={run_dir}", "output.log_with=[]", "output.progress_bar=false",
                 *budget_overrides]
    print(f"pretraining {start}" + (f" for {budget:g} min" if budget else "") + f" -> {run_dir}", flush=True)
    pretraining = Pretraining(load_recipe(recipe_name, overrides), restart=True)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = pretraining.run()
    wall = time.perf_counter() - wall
    result = {
        "final_dir": summary["final_dir"], "steps": summary["steps"], "tokens": summary["tokens"],
        "minutes": summary["minutes"], "final_eval": summary["final_eval"],
        "cpu_share": (time.process_time() - cpu) / max(wall * torch.get_num_threads(), 1e-9),
        "recipe": fingerprint,
    }
    print(f"  {result['steps']} steps, {result['tokens']:,} tokens, {result['minutes']:.2f} min, "
          f"CPU share {result['cpu_share']:.2f}", flush=True)
    cache.put(key, result)
    return result


# ---------------------------------------------------------------------------------------------------- fine-tuning
def finetune(cache: Cache, work: Path, start: str, budget: float | None, pretrained: dict, labels: int, seed: int,
             quick: bool) -> None:
    """Fine-tune one start (cached). The spectral start's run also trains the scratch model (compare_scratch):
    scratch does not depend on the budget, so it is trained once per labeled set and seed."""
    from hf_pretrain.finetune import finetune as run_finetune
    from hf_pretrain.finetune import load_finetune_recipe

    suffix = f"/{labels or 'all'}/seed{seed}"
    key = f"finetune/{start}" + (f"/{budget_name(budget)}" if budget else "") + suffix
    fingerprint = pretrained["recipe"]  # the pretraining's (scratch shares spectral's: mlm-tiny's model)
    with_scratch = start == "spectral"
    if cache.current(key, fingerprint) and (
            not with_scratch or cache.current(f"finetune/scratch{suffix}", fingerprint)):
        return
    overrides = [
        f"model={pretrained['final_dir']}", f"output.dir={work / safe_name(key)}", f"train.seed={seed}",
        "output.progress_bar=false", f"compare_scratch={'true' if with_scratch else 'false'}",
        *([f"data.max_train_examples={labels}", "train.epochs=20"] if labels else []),
        *(["train.epochs=1"] if quick else []),
    ]
    started = time.perf_counter()
    out = run_finetune(load_finetune_recipe("finetune-classification", overrides))
    runs = out["runs"]
    cache.put(key, {"accuracy": runs["pretrained"]["test"]["accuracy"], "f1": runs["pretrained"]["test"]["f1"],
                    "recipe": fingerprint})
    if with_scratch:
        cache.put(f"finetune/scratch{suffix}", {"accuracy": runs["scratch"]["test"]["accuracy"],
                                                "f1": runs["scratch"]["test"]["f1"],
                                                "recipe": fingerprint})
    print(f"  fine-tuned {key}: {runs['pretrained']['test']['accuracy']:.1%}"
          + (f" (scratch {runs['scratch']['test']['accuracy']:.1%})" if with_scratch else "")
          + f" in {(time.perf_counter() - started) / 60:.1f} min", flush=True)


# ---------------------------------------------------------------------------------------------------- report
def mean_and_error(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return statistics.fmean(values), error


def collect(cache: Cache, args) -> list[dict]:
    """Rows of (start, budget, labels): accuracy and gain over scratch, mean and standard error over the seeds
    that have both."""
    rows = []
    starts = pretraining_starts(cache)
    fingerprints = {start: recipe_fingerprint(start) for start in ("scratch", "spectral", *starts)}

    def measured(key: str, start: str):  # only results of the recipes as they are now
        result = cache.get(key)
        return result if result and result.get("recipe") == fingerprints[start] else None

    budgets = sorted({float(key.split("/")[2][:-3]) for key in cache.data
                      if key.startswith("finetune/") and key.split("/")[1] in starts and "@" not in key})
    for labels in args.labels:
        suffix = lambda seed: f"/{labels or 'all'}/seed{seed}"  # noqa: E731
        for start, budget in [("scratch", None), ("spectral", None)] + [
                (objective, budget) for budget in budgets for objective in starts]:
            accuracies, gains = [], []
            for seed in args.seeds:
                name = f"finetune/{start}" + (f"/{budget_name(budget)}" if budget else "") + suffix(seed)
                scratch = measured(f"finetune/scratch{suffix(seed)}", "scratch")
                result = measured(name, start)
                if result and scratch:
                    accuracies.append(100 * result["accuracy"])
                    gains.append(100 * (result["accuracy"] - scratch["accuracy"]))
            if accuracies:
                pretraining = measured(f"pretrain/{start}" + (f"/{budget_name(budget)}" if budget else ""), start)
                rows.append({"start": start, "budget": budget, "labels": labels, "seeds": len(accuracies),
                             "accuracy": mean_and_error(accuracies), "gain": mean_and_error(gains),
                             "steps": pretraining["steps"] if pretraining else None,
                             "cpu_share": pretraining["cpu_share"] if pretraining else None})
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| labels | start | budget | pretraining steps | fine-tuned test accuracy | gain over scratch | seeds |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        accuracy, gain = row["accuracy"], row["gain"]
        budget = f"{row['budget']:g} min" if row["budget"] else ("1 step" if row["start"] == "spectral" else "-")
        print(f"| {row['labels'] or 'all'} | {row['start']} | {budget} | {row['steps'] or '-'} | "
              f"{accuracy[0]:.1f}% ± {accuracy[1]:.1f} | {gain[0]:+.1f} ± {gain[1]:.1f} | {row['seeds']} |")


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'hf_pretrain[plots]')")
        return
    figure, axis = plt.subplots(figsize=(7, 4.2))
    styles = {"mlm-tiny": "o-", "rtd-tiny": "s-"}
    for labels in sorted({row["labels"] for row in rows}, reverse=True):
        spectral = [row for row in rows if row["start"] == "spectral" and row["labels"] == labels]
        for objective in sorted({row["start"] for row in rows} - {"scratch", "spectral"}):
            points = sorted((row["budget"], *row["gain"]) for row in rows
                            if row["start"] == objective and row["labels"] == labels)
            if not points:
                continue
            budgets, gains, errors = zip(*points)
            if spectral:  # the curve starts at the closed-form start (drawn at 0 minutes)
                budgets, gains = (0.0, *budgets), (spectral[0]["gain"][0], *gains)
                errors = (spectral[0]["gain"][1], *errors)
            errors = [0.0 if math.isnan(e) else e for e in errors]
            axis.errorbar(budgets, gains, yerr=errors, fmt=styles.get(objective, "^-"), capsize=3,
                          label=f"{objective}, {labels or 'all'} labels", alpha=0.9 if labels else 0.6)
    axis.axhline(0.0, color="grey", linewidth=1)
    axis.set_xlabel("pretraining budget (minutes on 2 CPU cores; 0 = spectral embeddings only)")
    axis.set_ylabel("fine-tuned accuracy gain over scratch (points)")
    axis.set_title("Built-in task: gain from pretraining vs budget (mean ± s.e. over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot: {path}")


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(args.work_dir)
    cache = Cache(work / "results.json")
    if not args.report_only:
        torch.manual_seed(0)
        runs = {} if args.without_baselines else {("spectral", None): pretrain(cache, work, "spectral", None)}
        for budget in args.budgets:
            for objective in args.objectives:
                runs[(objective, budget)] = pretrain(cache, work, objective, budget)
        for labels in args.labels:
            for seed in args.seeds:
                for (start, budget), result in runs.items():
                    finetune(cache, work, start, budget, result, labels, seed, args.quick)
    cache.reload()  # what another invocation sharing the work dir measured meanwhile
    rows = collect(cache, args)
    print_table(rows)
    if rows and not args.quick:
        plot(rows, Path(args.plot))
    elif rows:
        plot(rows, work / "transfer_budget.png")
    return {"rows": rows, "cache": str(cache.path)}


if __name__ == "__main__":
    main()

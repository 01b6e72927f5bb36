#!/usr/bin/env python
"""Stock architectures trained by our loop vs the run_mlm.py / run_clm.py paths, at equal wall-clock.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_stock.py                  # 3 min per arm, 5 arms: ~17 min
    .venv/bin/python benchmarks/bench_stock.py --minutes 5 --parts mlm --out out.json
    .venv/bin/python benchmarks/bench_stock.py --quick --threads 1               # smoke run, about a minute

Part mlm: the shipped `mlm-tiny-modernbert` recipe (stock `ModernBertForMaskedLM`, hidden 256, 4 layers, 4 heads,
GeGLU 704, untied output matrix, 30% masking, lr 5e-4 wsd, batch 32 x 128) in three arms:
  ours        `Pretraining(load_recipe("mlm-tiny-modernbert", [...])).run()`: the recipe as shipped, only budget,
              seed, output folder and logging overridden (plus data.max_documents with --quick). Our loop trains
              the tokenizer, packs rows of concatenated documents, starts the token embeddings spectral, and runs
              the masked-LM head on the masked positions only (`MaskedPositionsHead`).
  run_mlm     the run_mlm.py path: `ModernBertForMaskedLM` of the same config (`stock_config` of the same recipe:
              its sizes, ModernBertConfig's defaults otherwise, so sparse_prediction off: the head projects every
              position) with the same initial weights (`new_stock_model`, seeded by train.seed; random token
              embeddings, as a run_mlm.py user has), `DataCollatorForLanguageModeling` with the recipe's masking
              (30%, 80/10/10), `transformers.Trainer` on run_mlm.py's `tokenize_function` + `group_texts` blocks
              of the same text split, tokenized by our run's trained tokenizer (RUN/tokenizer).
  run_mlm-sparse  the same with `sparse_prediction=True` (ModernBERT's own head-on-masked-positions switch).
Part clm: the shipped `clm-tiny-llama` recipe (stock `LlamaForCausalLM`, hidden 256, 4 layers, 4 heads, SwiGLU 704,
tied embeddings, Muon + AdamW, lr 1e-3 wsd, batch 32 x 128) in two arms:
  ours        `Pretraining(load_recipe("clm-tiny-llama", [...])).run()`, overridden as above: packed documents with
              per-document position_ids (attention stays inside each document).
  run_clm     the run_clm.py path: `LlamaForCausalLM` of the same config and initial weights, Trainer on run_clm.py's
              `tokenize_function` + `group_texts` blocks (labels = input_ids, [EOS] appended to each document so
              the token stream is ours), our run's tokenizer.
Trainer arms, both parts: the recipe's batch, peak lr, AdamW betas/eps, weight decay and clip; the recipe's lr
schedule (`lr_multiplier`: warmup 5%, wsd decay over the last 30%) as a function of the elapsed share of the
wall-clock budget, as our loop computes it (bench_clm.ScheduledTrainer); a callback stops them when the budget is
spent (bench_continue.TimeBudget). Not the same: Trainer's weight decay skips biases and norms and decays the
embeddings (our loop decays every matrix but the token embedding); Trainer has no Muon, so the clm peer runs AdamW
on every matrix where ours runs the recipe's Muon for the hidden ones.
Budget: every arm trains --minutes of wall clock from its first training step (tokenizer, packing, spectral init
and our initial eval lie outside every budget; our in-loop evals and checkpoints every 100 steps count in it).
Tokens/s = tokens seen / training seconds (ours: summary.json; Trainer: steps x batch x 128); step tok/s = median
single step.
Eval, identical for every arm of a part (each model gets what its own pipeline feeds it):
  mlm: the recipe's validation split packed into 128-token blocks by our packer and masked ONCE by our
       MaskingCollator (15%, 80/10/10, fixed seed) (bench_pretrain.fixed_eval_batches); input_ids only (all three
       arms train on rows of concatenated documents); mean cross-entropy and accuracy over the masked tokens.
  clm: the validation split packed and collated by CausalLMCollator (bench_clm.packed_batches); every next token
       inside a document is a target; mean cross-entropy, perplexity, next-token accuracy (bench_clm.clm_eval).
       Ours gets its per-document position_ids, the peer the plain rows; an extra row evaluates ours without them.
Targets: ours >= 1.3x the tokens/s of run_mlm (sparse_prediction off), and a lower eval loss than both mlm peers.
The clm figures carry no target. PASS/MISS as measured.
Noise: the arms run one after another (a wall-clock budget cannot alternate); each row prints its CPU share
(process CPU / (wall x torch threads)) and load average. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    TrainingArguments,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_clm import ScheduledTrainer, clm_eval, packed_batches, run_clm_blocks
from bench_continue import TimeBudget
from bench_pretrain import (
    CpuMeter,
    count_parameters,
    fixed_eval_batches,
    masked_lm_eval,
    run_mlm_blocks,
)

from hf_pretrain.console import setup_console
from hf_pretrain.data.pipeline import load_text_splits
from hf_pretrain.recipe import load_recipe
from hf_pretrain.training.loop import Pretraining
from hf_pretrain.training.metrics import read_metrics
from hf_pretrain.training.objectives.stock import new_stock_model, stock_config

BLOCK = 128  # the helpers imported above cut and pack 128-token blocks: the recipes must agree
RECIPES = {"mlm": "mlm-tiny-modernbert", "clm": "clm-tiny-llama"}
ARMS = {
    "mlm": {
        "ours": "ours (mlm-tiny-modernbert)",
        "run_mlm": "run_mlm.py path, ModernBERT",
        "run_mlm-sparse": "run_mlm.py path, sparse_prediction",
    },
    "clm": {
        "ours": "ours (clm-tiny-llama)",
        "run_clm": "run_clm.py path, Llama",
    },
}
QUICK_DOCUMENTS = 1000  # --quick reads only this many documents
QUICK_MINUTES = 0.1
TARGET_SPEEDUP = 1.3  # ours / run_mlm (sparse_prediction off), tokens/s


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget per arm")
    parser.add_argument("--parts", nargs="+", default=["mlm", "clm"], choices=list(RECIPES))
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: data.max_documents={QUICK_DOCUMENTS}, {QUICK_MINUTES} min per arm "
                             "(its numbers mean nothing)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench-stock"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="the results JSON (default: WORK_DIR/bench_stock.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes = min(args.minutes, QUICK_MINUTES)
    args.out = args.out or str(Path(args.work_dir) / "bench_stock.json")
    return args


def recipe_overrides(args) -> list[str]:
    """What every use of a recipe here shares: the seed and (with --quick) the data it reads."""
    return [f"train.seed={args.seed}"] + ([f"data.max_documents={QUICK_DOCUMENTS}"] if args.quick else [])


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               check=False).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------------------------------------------- ours
def run_ours(part: str, args, work: Path) -> tuple[dict, object]:
    """The shipped recipe through Pretraining; returns its numbers and the recipe it ran."""
    run_dir = work / f"{part}-ours"
    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover run folder would be RESUMED, not restarted
    overrides = recipe_overrides(args) + [
        f"output.dir={run_dir}", f"train.max_minutes={args.minutes}", "output.log_with=[]",
        "output.progress_bar=false",
    ]
    recipe = load_recipe(RECIPES[part], overrides)
    assert recipe.data.block_size == BLOCK, f"{RECIPES[part]}: block_size {recipe.data.block_size}, not {BLOCK}"
    pretraining = Pretraining(recipe)
    params = count_parameters(pretraining.accelerator.unwrap_model(pretraining.model))
    meter = CpuMeter()
    summary = pretraining.run()
    cpu = meter.stop()
    step_rates = [r["tokens_per_s"] for r in read_metrics(run_dir) if "tokens_per_s" in r]
    seconds = summary["minutes"] * 60
    result = {
        "model": ARMS[part]["ours"], "params": params, "steps": summary["steps"], "tokens": summary["tokens"],
        "train_seconds": seconds, "tokens_per_s": summary["tokens"] / seconds,
        "median_step_tokens_per_s": statistics.median(step_rates) if step_rates else float("nan"),
        "final_dir": summary["final_dir"], "tokenizer_dir": str(run_dir / "tokenizer"),
        "in_loop_final_eval": summary["final_eval"], "cpu": cpu, "overrides": overrides,
    }
    return result, recipe


# ---------------------------------------------------------------------------------------------------- Trainer arms
def run_trainer_arm(label: str, model, collator, recipe, tokenizer, blocks, out: Path, args) -> dict:
    """Trainer with the recipe's optimizer settings and its lr schedule over the elapsed share of the budget."""
    shutil.rmtree(out, ignore_errors=True)
    train = recipe.train
    budget = TimeBudget(args.minutes * 60)
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=train.batch_size, max_steps=10**7,
        learning_rate=train.lr, weight_decay=train.weight_decay, adam_beta1=train.beta1, adam_beta2=train.beta2,
        adam_epsilon=train.eps, max_grad_norm=train.clip_grad_norm or 0.0, save_strategy="no", eval_strategy="no",
        logging_steps=25, report_to="none", disable_tqdm=True, seed=args.seed, dataloader_drop_last=True,
        use_cpu=True,
    )
    trainer = ScheduledTrainer(model=model, args=training_args, train_dataset=blocks, data_collator=collator,
                               budget=budget, train_section=train)
    meter = CpuMeter()
    trainer.train()
    cpu = meter.stop()
    final = out / "final"
    trainer.model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    steps = trainer.state.global_step
    seconds = budget.step_ends[-1] - budget.start
    step_seconds = np.diff([budget.start, *budget.step_ends])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens_per_step = train.batch_size * BLOCK
    return {
        "model": label, "params": count_parameters(model), "steps": steps, "tokens": steps * tokens_per_step,
        "train_seconds": seconds, "tokens_per_s": steps * tokens_per_step / seconds,
        "median_step_tokens_per_s": tokens_per_step / float(np.median(step_seconds)),
        "last_logged_train_loss": losses[-1] if losses else None, "final_dir": str(final), "cpu": cpu,
        "train_blocks": len(blocks),
    }


# ---------------------------------------------------------------------------------------------------- parts
def part_mlm(args, work: Path) -> dict:
    arms = ARMS["mlm"]
    print(f"mlm 1/4 {arms['ours']}: Pretraining, {args.minutes:g} min", flush=True)
    results = {}
    results["ours"], recipe = run_ours("mlm", args, work)
    masking = recipe.masking
    assert not (masking.whole_word or masking.span), "DataCollatorForLanguageModeling masks single tokens only"
    tokenizer = AutoTokenizer.from_pretrained(results["ours"]["tokenizer_dir"])  # our run's trained tokenizer
    texts = load_text_splits(recipe)  # the split our run read (same seed, same data.max_documents)
    blocks = run_mlm_blocks(texts.train, tokenizer)
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=masking.mlm_probability, mask_replace_prob=masking.mask_replace_prob,
        random_replace_prob=masking.random_replace_prob,
    )
    for index, (name, sparse) in enumerate((("run_mlm", False), ("run_mlm-sparse", True)), start=2):
        print(f"mlm {index}/4 {arms[name]}: Trainer, {args.minutes:g} min", flush=True)
        model = new_stock_model(AutoModelForMaskedLM, stock_config(recipe, tokenizer, sparse_prediction=sparse), recipe)
        results[name] = run_trainer_arm(arms[name], model, collator, recipe, tokenizer, blocks, work / f"mlm-{name}",
                                        args)
        results[name]["sparse_prediction"] = sparse
    print("mlm 4/4 eval on fixed masks", flush=True)
    batches = fixed_eval_batches(tokenizer, texts.validation)
    evals = {name: masked_lm_eval(AutoModelForMaskedLM.from_pretrained(r["final_dir"]), batches,
                                  with_position_ids=False)
             for name, r in results.items()}
    return {"recipe": RECIPES["mlm"], "results": results, "eval": evals}


def part_clm(args, work: Path) -> dict:
    arms = ARMS["clm"]
    print(f"clm 1/3 {arms['ours']}: Pretraining, {args.minutes:g} min", flush=True)
    results = {}
    results["ours"], recipe = run_ours("clm", args, work)
    tokenizer = AutoTokenizer.from_pretrained(results["ours"]["tokenizer_dir"])
    texts = load_text_splits(recipe)
    blocks = run_clm_blocks(texts.train, tokenizer)
    print(f"clm 2/3 {arms['run_clm']}: Trainer, {args.minutes:g} min", flush=True)
    model = new_stock_model(AutoModelForCausalLM, stock_config(recipe, tokenizer), recipe)
    results["run_clm"] = run_trainer_arm(arms["run_clm"], model, None, recipe, tokenizer, blocks, work / "clm-run_clm",
                                         args)
    print("clm 3/3 eval", flush=True)
    batches = packed_batches(texts.validation, tokenizer)
    ours = AutoModelForCausalLM.from_pretrained(results["ours"]["final_dir"])
    evals = {"ours": clm_eval(ours, batches, with_position_ids=True),
             "run_clm": clm_eval(AutoModelForCausalLM.from_pretrained(results["run_clm"]["final_dir"]), batches,
                                 with_position_ids=False)}
    return {"recipe": RECIPES["clm"], "results": results, "eval": evals,
            "eval_ours_without_position_ids": clm_eval(ours, batches, with_position_ids=False)}


# ---------------------------------------------------------------------------------------------------- report
def print_part(part: str, args, out: dict) -> dict:
    """The part's table and its ratios; returns {figure: value} for the JSON."""
    results, evals = out["results"], out["eval"]
    clm = part == "clm"
    print()
    print(f"== {out['recipe']}: {args.minutes:g} min wall-clock per arm, batch 32 x {BLOCK}; "
          f"{torch.get_num_threads()} torch threads")
    header = (f"{'arm':36}{'params':>11}{'steps':>7}{'tokens seen':>13}{'tokens/s':>10}{'step tok/s':>11}"
              f"{'eval loss':>11}{'eval ppl' if clm else 'eval acc':>10}{'cpu share':>10}{'load':>11}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        e = evals[name]
        load = f"{r['cpu']['load_before']:.1f}->{r['cpu']['load_after']:.1f}"
        print(f"{r['model']:36}{r['params']:>11,}{r['steps']:>7,}{r['tokens']:>13,}{r['tokens_per_s']:>10,.0f}"
              f"{r['median_step_tokens_per_s']:>11,.0f}{e['loss']:>11.4f}"
              f"{e['perplexity'] if clm else e['accuracy']:>10.{2 if clm else 4}f}"
              f"{r['cpu']['cpu_share']:>10.2f}{load:>11}")
    if clm:
        e = out["eval_ours_without_position_ids"]
        print(f"{'  ours, eval without position_ids':36}{'':>52}{e['loss']:>11.4f}{e['perplexity']:>10.2f}")
        print(f"(eval: {evals['ours']['target_tokens']:,} next-token targets of the validation split's packed "
              "blocks, the same for both; ours with its per-document position_ids, the peer the plain rows)")
    else:
        print(f"(eval: {evals['ours']['masked_tokens']:,} masked tokens of the validation blocks, our MaskingCollator "
              "15%, fixed seed, the same masks for all; input_ids only)")
    shares = {name: r["cpu"]["cpu_share"] for name, r in results.items()}
    if max(shares.values()) - min(shares.values()) > 0.15 or min(shares.values()) < 0.8:
        print("WARNING: unequal or low CPU shares (" + ", ".join(f"{n} {s:.2f}" for n, s in shares.items())
              + "): other processes shared the cores during some arms; tokens/s and the loss reached in the budget "
                "are biased. Rerun on a quiet machine.")
    figures = {}
    ours = results["ours"]
    for name, r in results.items():
        if name == "ours":
            continue
        ratio = ours["tokens_per_s"] / r["tokens_per_s"]
        step_ratio = ours["median_step_tokens_per_s"] / r["median_step_tokens_per_s"]
        diff = evals["ours"]["loss"] - evals[name]["loss"]
        figures[f"tokens/s ours/{name}"] = ratio
        figures[f"step tokens/s ours/{name}"] = step_ratio
        figures[f"eval loss ours - {name}"] = diff
        extra = ""
        if clm:
            figures[f"eval ppl ours - {name}"] = evals["ours"]["perplexity"] - evals[name]["perplexity"]
            extra = f", ppl {evals['ours']['perplexity']:.2f} vs {evals[name]['perplexity']:.2f}"
        print(f"ours vs {r['model']}: tokens/s x{ratio:.2f} (per step x{step_ratio:.2f}); eval loss "
              f"{evals['ours']['loss']:.4f} vs {evals[name]['loss']:.4f} ({diff:+.4f}{extra})")
    return figures


def targets_of(figures: dict) -> dict:
    """PASS/MISS of the targets whose figures were measured."""
    mlm = figures.get("mlm", {})
    targets = {}
    if "tokens/s ours/run_mlm" in mlm:
        value = mlm["tokens/s ours/run_mlm"]
        targets[f"mlm: ours >= {TARGET_SPEEDUP}x run_mlm tokens/s (sparse_prediction off)"] = (
            value >= TARGET_SPEEDUP, f"{value:.2f}x")
    for name in ("run_mlm", "run_mlm-sparse"):
        key = f"eval loss ours - {name}"
        if key in mlm:
            targets[f"mlm: ours lower eval loss than {name}"] = (mlm[key] < 0, f"{mlm[key]:+.4f}")
    return {target: {"pass": ok, "value": value} for target, (ok, value) in targets.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    setup_console()  # the runs' reports (data, packing, resume) on stderr
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    environment = {
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
        "commit": git_commit(),
    }
    quick = " (QUICK: smoke run)" if args.quick else ""
    print(f"bench_stock: {args.minutes:g} min per arm, parts {args.parts}{quick}; "
          f"torch {environment['torch']}, transformers {environment['transformers']}, {environment['threads']} "
          f"torch threads, {environment['cpus']} CPUs, load average {environment['load_average_at_start']:.2f}, "
          f"commit {environment['commit']}; work dir {work}", flush=True)
    output = {"args": vars(args), "environment": environment, "parts": {}, "figures": {}}
    for part in args.parts:
        output["parts"][part] = (part_mlm if part == "mlm" else part_clm)(args, work)
    # the tables together at the end (the runs' logs are interleaved above)
    for part in args.parts:
        output["figures"][part] = print_part(part, args, output["parts"][part])
    output["targets"] = targets_of(output["figures"])
    print()
    print("== Targets" + (" (a --quick run: not a measurement)" if args.quick else ""))
    for target, verdict in output["targets"].items():
        print(f"{'PASS' if verdict['pass'] else 'MISS'}  {target}: {verdict['value']}")
    if "clm" in output["figures"]:
        for key, value in output["figures"]["clm"].items():
            print(f"info  clm {key}: {value:+.4f}" if " - " in key else f"info  clm {key}: {value:.2f}x")
    output["total_minutes"] = (time.perf_counter() - started) / 60
    output["environment"]["threads_at_end"] = torch.get_num_threads()
    output["environment"]["load_average_at_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(output, indent=2, default=str))
    print(f"\ntotal {output['total_minutes']:.1f} min; load average now {os.getloadavg()[0]:.2f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Pretraining at equal wall-clock: hf_pretrain's mlm-tiny recipe vs the run_mlm.py pipeline (BERT) vs ModernBERT.

    HF_HUB_OFFLINE=1 python benchmarks/bench_pretrain.py                 # 3 min per model + fine-tuning, ~16 min
    python benchmarks/bench_pretrain.py --minutes 5 --no-finetune --json out.json
    python benchmarks/bench_pretrain.py --quick                          # smoke run: 15 s pretraining budgets

What it does
  1. ours: `Pretraining(load_recipe("mlm-tiny", ["train.max_minutes=M", ...])).run()` — the recipe as shipped
     (byte-level BPE 8192 trained on the training split, packed blocks of 128, spectral token embeddings, an
     untied MLM output matrix, 30% masking, peak lr 5e-4 with warmup-stable-decay, batch 32, its in-loop
     eval/checkpoint every 100 steps counted inside the budget).
  2. BERT, the run_mlm.py path: `BertForMaskedLM` (hidden 256, 4 layers, 4 heads, intermediate 1024, max position
     128, BERT's default dropout 0.1), `DataCollatorForLanguageModeling` (mlm_probability 0.15, its default),
     `transformers.Trainer` with run_mlm's defaults (lr 5e-5, linear decay, no warmup, weight decay 0, AdamW
     0.9/0.999/1e-8, clip 1.0), batch 32. Same tokenizer (ours, from run 1) and the same training text, tokenized
     and cut into 128-token blocks exactly like run_mlm.py (`tokenize_function` + `group_texts`, 1000-row batches).
  3. ModernBERT: `ModernBertForMaskedLM` (sparse_prediction=True, GeGLU width chosen for the parameter count
     closest to ours, transformers' default local/global attention layout), `DataCollatorForLanguageModeling`
     with mlm_probability 0.3, Trainer, peak lr 8e-4 (ModernBERT paper, base), AdamW 0.9/0.98/1e-6, weight
     decay 0.01 and the same warmup-stable-decay shape as ours (5% warmup, decay over the final 30%): the best
     recipe a user can assemble from transformers today, same data blocks as BERT.
     Parameters: ours 7.5M (5.4M plus its untied 2.1M MLM output matrix), BERT 5.4M, ModernBERT's GeGLU width
     matched to ours' total.
  Budget: every model trains for the same wall-clock minutes, measured from the first training step (setup,
  tokenizer training and tokenization are outside it for everyone). The Trainer runs stop from a callback
  (control.should_training_stop) when the time is up; their lr schedule is stretched over the number of steps
  expected in the budget, estimated from the timing of the first 20 steps of the run itself (max_steps is set
  huge so it never limits) — what a user who knows their budget does. Ours schedules by elapsed time.
  4. Eval, measured the same way for all three: the validation split (the one our runs hold out:
     load_text_sources(builtin=True, validation_fraction=0.03, seed=0)) packed into 128-token blocks, masked ONCE
     by our MaskingCollator (15%, 80/10/10, fixed seed) — identical masked positions and replacements for every
     model; eval mode, no_grad; mean cross-entropy over masked tokens (+ masked-token accuracy). Each model gets
     the inputs its own training pipeline feeds it: ours also the per-document position_ids of our packing (it
     trains with them: attention stays within documents); the Trainer models input_ids only, like group_texts.
     An extra row evaluates ours WITHOUT position_ids (a plain block like the peers see), to separate the
     document-aware attention from the rest.
  5. --finetune (default on): the built-in 8-class task (load_builtin_task) with --labeled-examples training
     examples (default 256, the quickstart's budget: up to 20 epochs with early stopping; 0: all of them for
     --finetune-epochs, 2 by default instead of the recipe's 5), fine-tuned with hf_pretrain.finetune and ONE set
     of settings for every model — pretrained (the folder each run produced, with our tokenizer) and the same
     architecture from random weights (compare_scratch). Settings: the shipped finetune-classification recipe
     (lr 3e-4, its warm start, 10% warmup + linear decay, batch 32, max length 128, 10% of train held out for
     validation, best epoch by validation macro-F1, early stopping patience 2, seed 42). The models are of one
     size class (5-8M parameters), so one lr fits all. Each family keeps its own default dropout.
  Results: benchmarks/RESULTS.md#pretrain-equal-wall-clock.
Noise: the three budgets run one after another in this process (a wall-clock budget cannot alternate), so a
change in machine load between runs biases the comparison. The script prints the load average and the CPU share
this process got during each run (1.0 = all its threads busy; well below 1 = other processes competed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    ModernBertConfig,
    ModernBertForMaskedLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

transformers.logging.set_verbosity_error()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hf_pretrain.console import setup_console  # noqa: E402
from hf_pretrain.data.masking import MaskingCollator  # noqa: E402
from hf_pretrain.data.packing import pack_dataset  # noqa: E402
from hf_pretrain.data.sources import load_text_sources  # noqa: E402
from hf_pretrain.recipe import load_recipe  # noqa: E402
from hf_pretrain.training.loop import Pretraining  # noqa: E402
from hf_pretrain.training.metrics import read_metrics  # noqa: E402

BLOCK = 128
BATCH = 32
HIDDEN, LAYERS, HEADS = 256, 4, 4
BERT_INTERMEDIATE = 1024
CALIBRATION_STEPS = 20  # Trainer runs: the lr schedule's length is estimated from these first steps
EVAL_SEED = 20240607
EVAL_MLM_PROBABILITY = 0.15
LABELS = {
    "ours": "ours (mlm-tiny recipe)",
    "bert": "BERT + run_mlm defaults",
    "modernbert": "ModernBERT (sparse, 30%, 8e-4)",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget per model")
    parser.add_argument("--models", nargs="+", default=["ours", "bert", "modernbert"], choices=list(LABELS))
    parser.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--finetune-epochs", type=float, default=2.0,
                        help="fine-tuning epochs with --labeled-examples 0 (with a labeled subset: up to 20, "
                             "early stopping)")
    parser.add_argument("--finetune-lr", type=float, default=3e-4)
    parser.add_argument("--labeled-examples", type=int, default=256,
                        help="labeled training examples for fine-tuning (default 256 = the quickstart's 32 per "
                             "class, with 20 epochs and early stopping; 0: all 1,168 with --finetune-epochs)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 0.25 min budgets (and 1 fine-tuning epoch with --labeled-examples 0)")
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench-pretrain"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes = min(args.minutes, 0.25)
        args.finetune_epochs = min(args.finetune_epochs, 1.0)
    if "ours" not in args.models:
        parser.error("'ours' must be among --models: its run trains the tokenizer every model uses")
    return args


# ---------------------------------------------------------------------------------------------------- helpers
class CpuMeter:
    """Wall time, and the share of this process's threads' capacity it used (CPU time / (wall x threads))."""

    def __init__(self):
        self.wall0, self.cpu0, self.load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]

    def stop(self) -> dict:
        wall = time.perf_counter() - self.wall0
        cpu = time.process_time() - self.cpu0
        return {"wall_s": wall, "cpu_share": cpu / max(wall * torch.get_num_threads(), 1e-9),
                "load_before": self.load0, "load_after": os.getloadavg()[0]}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def vocab_rows(tokenizer) -> int:
    return int(math.ceil(len(tokenizer) / 64) * 64)  # what our objective gives the embedding (aligned GEMMs)


# ---------------------------------------------------------------------------------------------------- ours
def run_ours(args, work: Path) -> dict:
    run_dir = work / "ours"
    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover run folder would be RESUMED, not restarted
    overrides = [
        f"output.dir={run_dir}",
        f"train.max_minutes={args.minutes}",
        f"train.seed={args.seed}",
        "output.log_with=[]",
        "output.progress_bar=false",
    ]
    recipe = load_recipe("mlm-tiny", overrides)
    pretraining = Pretraining(recipe)
    model = pretraining.accelerator.unwrap_model(pretraining.model)
    params = count_parameters(model)
    meter = CpuMeter()
    summary = pretraining.run()
    cpu = meter.stop()
    records = read_metrics(run_dir)
    step_rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    seconds = summary["minutes"] * 60
    return {
        "model": LABELS["ours"], "params": params, "steps": summary["steps"], "tokens": summary["tokens"],
        "train_seconds": seconds, "tokens_per_s": summary["tokens"] / seconds,
        "median_step_tokens_per_s": statistics.median(step_rates) if step_rates else float("nan"),
        "final_dir": summary["final_dir"], "tokenizer_dir": str(run_dir / "tokenizer"),
        "in_loop_eval": summary["final_eval"], "cpu": cpu,
        "train_blocks": len(pretraining.objective.train_dataset),
    }


# ---------------------------------------------------------------------------------------------------- Trainer runs
def run_mlm_blocks(texts, tokenizer):
    """run_mlm.py without --line_by_line: tokenize_function + group_texts (1000-row map batches)."""

    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    tokenized = texts.map(tokenize_function, batched=True, remove_columns=texts.column_names)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // BLOCK) * BLOCK
        return {k: [t[i : i + BLOCK] for i in range(0, total_length, BLOCK)] for k, t in concatenated.items()}

    return tokenized.map(group_texts, batched=True)


class Budget:
    """Shared by the callback (which times steps and stops the run) and the lr schedule (which needs the
    expected number of steps). The estimate is refined over the first CALIBRATION_STEPS steps, then frozen."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expected_steps = None  # unknown until the first timed step
        self.start = None
        self.step_ends: list[float] = []


class WallClockBudget(TrainerCallback):
    def __init__(self, budget: Budget):
        self.budget = budget

    def on_train_begin(self, args, state, control, **kwargs):
        self.budget.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        budget = self.budget
        now = time.perf_counter()
        budget.step_ends.append(now)
        elapsed = now - budget.start
        steps = len(budget.step_ends)
        if 2 <= steps <= CALIBRATION_STEPS + 1:  # the first step carries one-off costs: time from its end
            per_step = (now - budget.step_ends[0]) / (steps - 1)
            budget.expected_steps = max(steps + int((budget.seconds - elapsed) / per_step), steps + 1)
        if elapsed >= budget.seconds:
            control.should_training_stop = True
        return control


def lr_shape(kind: str, budget: Budget):
    """Multiplier of the peak lr at a step, given the (estimated) number of steps in the budget."""

    def linear(step):  # run_mlm: linear decay to 0, no warmup
        total = budget.expected_steps
        return 1.0 if total is None else max(0.0, 1.0 - step / total)

    def wsd(step, warmup=0.05, decay=0.3):  # ours' shape: warmup, hold, linear decay over the last 30%
        total = budget.expected_steps
        if total is None:
            return 1e-3
        progress = step / total
        warm = min(1.0, max(progress, 1e-6) / warmup)
        return warm if progress <= 1 - decay else warm * max(0.0, (1 - progress) / decay)

    return {"linear": linear, "wsd": wsd}[kind]


class BudgetTrainer(Trainer):
    """Trainer whose lr schedule follows the budget's step estimate instead of max_steps."""

    def __init__(self, *args, budget: Budget, schedule: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.budget, self.schedule = budget, schedule

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lr_shape(self.schedule, self.budget)
            )
        return self.lr_scheduler


def build_peer(name: str, tokenizer, target_params: int):
    torch.manual_seed(0)
    if name == "bert":
        config = BertConfig(
            vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            intermediate_size=BERT_INTERMEDIATE, max_position_embeddings=BLOCK, pad_token_id=tokenizer.pad_token_id,
        )
        return BertForMaskedLM(config), {}

    def modernbert(intermediate):
        return ModernBertConfig(
            vocab_size=vocab_rows(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, intermediate_size=intermediate, max_position_embeddings=BLOCK,
            pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
            sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id, sparse_prediction=True,
        )

    # GeGLU: Wi is (2 x intermediate, hidden); pick the width whose total parameter count is closest to ours.
    # Every linear with `intermediate` in it is bias-free, so params are affine in it: two probes suffice.
    p0 = count_parameters(ModernBertForMaskedLM(modernbert(0 + 64)))
    p1 = count_parameters(ModernBertForMaskedLM(modernbert(1 + 64)))
    intermediate = round(64 + (target_params - p0) / (p1 - p0))
    torch.manual_seed(0)
    return ModernBertForMaskedLM(modernbert(intermediate)), {"intermediate_size": intermediate}


def run_peer(name: str, args, work: Path, tokenizer, blocks, target_params: int) -> dict:
    model, extra = build_peer(name, tokenizer, target_params)
    model.config._attn_implementation = "sdpa"
    params = count_parameters(model)
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    if name == "bert":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
        settings = dict(learning_rate=5e-5)  # run_mlm: TrainingArguments defaults (wd 0, 0.9/0.999/1e-8)
        schedule = "linear"
    else:
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
        settings = dict(learning_rate=8e-4, adam_beta2=0.98, adam_epsilon=1e-6, weight_decay=0.01)
        schedule = "wsd"
    budget = Budget(args.minutes * 60)
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=BATCH, max_steps=10**7,
        save_strategy="no", eval_strategy="no", logging_steps=50, report_to="none", disable_tqdm=True,
        seed=args.seed, dataloader_drop_last=True, use_cpu=True, **settings,
    )
    trainer = BudgetTrainer(
        model=model, args=training_args, train_dataset=blocks, data_collator=collator,
        callbacks=[WallClockBudget(budget)], budget=budget, schedule=schedule,
    )
    meter = CpuMeter()
    trainer.train()
    cpu = meter.stop()
    steps = trainer.state.global_step
    seconds = budget.step_ends[-1] - budget.start
    step_seconds = np.diff([budget.start, *budget.step_ends])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    final = out / "final"
    trainer.model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    tokens = steps * BATCH * BLOCK
    return {
        "model": LABELS[name], "params": params, "steps": steps, "tokens": tokens, "train_seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "median_step_tokens_per_s": BATCH * BLOCK / float(np.median(step_seconds)),
        "expected_steps": budget.expected_steps, "final_dir": str(final), "cpu": cpu,
        "last_logged_train_loss": losses[-1] if losses else None, "train_blocks": len(blocks), **extra,
    }


# ---------------------------------------------------------------------------------------------------- eval
def fixed_eval_batches(tokenizer, validation_texts) -> list[dict]:
    packed = pack_dataset(validation_texts, tokenizer, block_size=BLOCK, use_cache=False).dataset
    collator = MaskingCollator(tokenizer, mlm_probability=EVAL_MLM_PROBABILITY, seed=EVAL_SEED)
    rows = [packed[i] for i in range(len(packed))]
    return [collator(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]


@torch.no_grad()
def masked_lm_eval(model, batches, with_position_ids: bool) -> dict:
    """Mean cross-entropy and accuracy over the masked tokens, summed over all batches."""
    model.eval()
    loss_sum, correct, items = 0.0, 0, 0
    for batch in batches:
        inputs = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
        if with_position_ids:
            inputs["position_ids"] = batch["position_ids"]
        logits = model(**inputs).logits
        labels = batch["labels"]
        targets = labels[labels != -100]
        if logits.dim() == 3:  # dense head (BERT): keep the masked positions
            logits = logits[labels != -100]
        loss_sum += torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum").item()
        correct += int((logits.argmax(-1) == targets).sum())
        items += targets.numel()
    return {"loss": loss_sum / items, "accuracy": correct / items, "masked_tokens": items}


# ---------------------------------------------------------------------------------------------------- fine-tuning
def finetune_all(args, work: Path, results: dict) -> dict:
    from hf_pretrain.finetune import finetune, load_finetune_recipe

    scores = {}
    for name, result in results.items():
        overrides = [
            f"model={result['final_dir']}", f"output.dir={work / 'finetune' / name}", "compare_scratch=true",
            "output.progress_bar=false", f"train.lr={args.finetune_lr}",
            *([f"data.max_train_examples={args.labeled_examples}", "train.epochs=20"] if args.labeled_examples
              else [f"train.epochs={args.finetune_epochs}"]),
        ]
        meter = CpuMeter()
        out = finetune(load_finetune_recipe("finetune-classification", overrides))
        cpu = meter.stop()
        runs = out["runs"]
        scores[name] = {
            run: {"test_accuracy": runs[run]["test"]["accuracy"], "test_f1": runs[run]["test"]["f1"],
                  "steps": runs[run]["steps"], "minutes": runs[run]["train_minutes"]}
            for run in ("pretrained", "scratch")
        }
        scores[name]["cpu"] = cpu
        print(f"  fine-tuned {name}: pretrained {scores[name]['pretrained']['test_accuracy']:.4f}, "
              f"scratch {scores[name]['scratch']['test_accuracy']:.4f} ({cpu['wall_s'] / 60:.1f} min)", flush=True)
    return scores


# ---------------------------------------------------------------------------------------------------- report
def print_pretraining_table(args, results: dict, evals: dict, ours_no_pos: dict | None) -> None:
    print()
    print(f"== Pretraining, {args.minutes:g} min wall-clock each, batch {BATCH} x {BLOCK} tokens; "
          f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    header = (f"{'model':34}{'params':>11}{'steps':>8}{'tokens seen':>13}{'tokens/s':>10}{'step tok/s':>11}"
              f"{'eval MLM loss':>15}{'eval acc':>10}{'cpu share':>11}{'load':>11}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        e = evals[name]
        load = f"{r['cpu']['load_before']:.1f}->{r['cpu']['load_after']:.1f}"
        print(f"{r['model']:34}{r['params']:>11,}{r['steps']:>8,}{r['tokens']:>13,}{r['tokens_per_s']:>10,.0f}"
              f"{r['median_step_tokens_per_s']:>11,.0f}{e['loss']:>15.4f}{e['accuracy']:>10.4f}"
              f"{r['cpu']['cpu_share']:>11.2f}{load:>11}")
    if ours_no_pos:
        print(f"{'  ours, eval without position_ids':34}{'':>11}{'':>8}{'':>13}{'':>10}{'':>11}"
              f"{ours_no_pos['loss']:>15.4f}{ours_no_pos['accuracy']:>10.4f}")
    print(f"(eval: {evals['ours']['masked_tokens']:,} masked tokens of the validation blocks, our MaskingCollator "
          f"15%, seed {EVAL_SEED}, same masks for all; tokens/s = tokens seen / training seconds; step tok/s = "
          "median single step; cpu share = process CPU / (wall x threads))")
    shares = {name: r["cpu"]["cpu_share"] for name, r in results.items()}
    if max(shares.values()) - min(shares.values()) > 0.15 or min(shares.values()) < 0.8:
        print("WARNING: the runs got unequal or low CPU shares "
              + ", ".join(f"{n} {s:.2f}" for n, s in shares.items())
              + ": other processes shared the cores during some runs, so steps and tokens/s (and the eval loss "
              "reached in the budget) are biased; rerun on a quiet machine. benchmarks/bench_mlm_step.py measures "
              "step time alternating in one process.")
    ours = results["ours"]
    for name in results:
        if name == "ours":
            continue
        r, e = results[name], evals[name]
        verdict_loss = "PASS" if evals["ours"]["loss"] < e["loss"] else "MISS"
        verdict_speed = "PASS" if ours["tokens_per_s"] > r["tokens_per_s"] else "MISS"
        print(f"ours vs {r['model']}: eval loss {evals['ours']['loss']:.4f} vs {e['loss']:.4f} "
              f"(diff {evals['ours']['loss'] - e['loss']:+.4f}, {verdict_loss}); tokens/s x"
              f"{ours['tokens_per_s'] / r['tokens_per_s']:.2f} ({verdict_speed}); per-step tokens/s x"
              f"{ours['median_step_tokens_per_s'] / r['median_step_tokens_per_s']:.2f}; params x"
              f"{ours['params'] / r['params']:.3f}")


def print_finetune_table(args, results: dict, tunes: dict | None) -> None:
    if tunes:
        print()
        budget = (f"{args.labeled_examples} labeled examples, up to 20 epochs" if args.labeled_examples
                  else f"all labeled examples, {args.finetune_epochs:g} epochs")
        print(f"== Fine-tuning on the built-in task (8 classes), identical settings for all: hf_pretrain.finetune, "
              f"{budget}, lr {args.finetune_lr:g}, batch 32, warmup 10% + linear, max len 128, "
              "best epoch by validation macro-F1, early stopping")
        header = f"{'model':34}{'pretrained acc':>16}{'scratch acc':>13}{'gain (pts)':>12}{'pretrained F1':>15}{'scratch F1':>12}"
        print(header)
        print("-" * len(header))
        for name, t in tunes.items():
            p, s = t["pretrained"], t["scratch"]
            print(f"{results[name]['model']:34}{p['test_accuracy']:>16.4f}{s['test_accuracy']:>13.4f}"
                  f"{100 * (p['test_accuracy'] - s['test_accuracy']):>+12.1f}{p['test_f1']:>15.4f}{s['test_f1']:>12.4f}")


def main(argv=None):
    args = parse_args(argv)
    setup_console()  # the runs' reports (data, packing, resume) on stderr
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"bench_pretrain: {args.minutes:g} min per model, models {args.models}, load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, work dir {work}", flush=True)
    results: dict[str, dict] = {}

    print("1/4 ours: mlm-tiny through Pretraining", flush=True)
    results["ours"] = run_ours(args, work)
    tokenizer = AutoTokenizer.from_pretrained(results["ours"]["tokenizer_dir"])
    sources = load_text_sources(builtin=True, validation_fraction=0.03, seed=args.seed)
    blocks = run_mlm_blocks(sources.train, tokenizer)
    for name in ("bert", "modernbert"):
        if name in args.models:
            print(f"{2 if name == 'bert' else 3}/4 {LABELS[name]}: Trainer", flush=True)
            results[name] = run_peer(name, args, work, tokenizer, blocks, results["ours"]["params"])

    print("4/4 eval on fixed masks", flush=True)
    batches = fixed_eval_batches(tokenizer, sources.validation)
    evals = {}
    ours_model = AutoModelForMaskedLM.from_pretrained(results["ours"]["final_dir"], trust_remote_code=True)
    evals["ours"] = masked_lm_eval(ours_model, batches, with_position_ids=True)
    ours_no_pos = masked_lm_eval(ours_model, batches, with_position_ids=False)
    for name in results:
        if name != "ours":
            model = AutoModelForMaskedLM.from_pretrained(results[name]["final_dir"])
            evals[name] = masked_lm_eval(model, batches, with_position_ids=False)

    # printed (and saved) before fine-tuning, so a fine-tuning failure never loses the pretraining numbers
    print_pretraining_table(args, results, evals, ours_no_pos)
    save_json(args, results, evals, ours_no_pos, None)
    tunes = None
    if args.finetune:
        print("\nfine-tuning every pretrained model and its architecture from scratch", flush=True)
        tunes = finetune_all(args, work, results)
        print_pretraining_table(args, results, evals, ours_no_pos)
        print_finetune_table(args, results, tunes)
        save_json(args, results, evals, ours_no_pos, tunes)
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min; load average now {os.getloadavg()[0]:.2f}")


def save_json(args, results, evals, ours_no_pos, tunes) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "pretraining": results, "eval": evals, "eval_ours_without_position_ids": ours_no_pos,
             "finetune": tunes}, indent=2, default=str))


if __name__ == "__main__":
    main()

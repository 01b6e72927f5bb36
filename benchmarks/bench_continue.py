#!/usr/bin/env python
"""Continued pretraining of a RoBERTa checkpoint at equal wall-clock: `hf-pretrain pretrain mlm-continue` vs the
run_mlm.py path (Trainer + DataCollatorForLanguageModeling + group_texts).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_continue.py                  # ~9 min on 2 cores
    .venv/bin/python benchmarks/bench_continue.py --minutes 1 --no-finetune --json out.json
    .venv/bin/python benchmarks/bench_continue.py --quick                           # smoke run (~2-3 min)

1. Data: the built-in corpus split by stdlib package. Domain = the docstrings of the built-in task's 8 packages
   (the task's test texts are already left out of the corpus), 10% of them held out by a hash of the text;
   base = every other package.
2. The "Hub checkpoint": a byte-level BPE tokenizer (train_tokenizer, RoBERTa's special tokens) trained on the
   base text, and a RobertaForMaskedLM (hidden 256, 4 layers, 4 heads, intermediate 1024) pretrained on the base
   text for --base-minutes (1) with Trainer + DataCollatorForLanguageModeling(0.15) on group_texts blocks of 128
   (lr 5e-4, 6% warmup, linear decay).
3. Continued on the domain for --minutes (2) each (from the first training step): (a) ours, the real CLI in a
   subprocess, the mlm-continue recipe as shipped (lr 2e-4, 10% warmup + linear, 15% masking, batch 32 x 128,
   AdamW 0.9/0.98/1e-6, wd 0.01, clip 1.0, its in-loop eval/checkpoints inside the budget) with only the budget,
   data, seed and output changed; (b) Trainer with the same settings (run_mlm.py's tokenize_function + group_texts,
   DataCollatorForLanguageModeling(0.15)), stopped by a callback when the time is up, its lr following the same
   schedule function (hf_pretrain.training.schedules.lr_multiplier) over elapsed time, as ours does.
4. Eval: the held-out domain text packed into 128-token blocks and masked ONCE (MaskingCollator, 15%, fixed seed);
   every model gets exactly those input_ids/labels (no position_ids: RoBERTa makes its own); mean cross-entropy
   over the masked tokens.
5. Fine-tuning: every model (base, ours, run_mlm) through hf_pretrain.finetune with the finetune-classification
   recipe (lr 3e-4, warm start), --labeled-examples (256) training examples, 10 epochs, best epoch by validation
   macro-F1, identical settings. Early stopping is off: this post-LN RoBERTa stays at chance for its first epochs
   and patience 2 stopped it there (benchmarks/RESULTS.md#unrecorded).
The two continued runs are sequential: the table prints each one's CPU share (other work on the cores shows).
Results: benchmarks/RESULTS.md#continue.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    RobertaConfig,
    RobertaForMaskedLM,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_pretrain  # noqa: E402  (run_mlm.py's tokenize_function + group_texts, the fixed-mask eval, CpuMeter)
from bench_pretrain import CpuMeter, masked_lm_eval, run_mlm_blocks  # noqa: E402

from hf_pretrain.data.builtin import load_builtin_corpus, load_builtin_task, stable_fraction  # noqa: E402
from hf_pretrain.data.masking import MaskingCollator  # noqa: E402
from hf_pretrain.data.packing import pack_dataset  # noqa: E402
from hf_pretrain.data.tokenizer import train_tokenizer  # noqa: E402
from hf_pretrain.recipe import load_recipe  # noqa: E402
from hf_pretrain.training.metrics import read_metrics  # noqa: E402
from hf_pretrain.training.schedules import lr_multiplier  # noqa: E402

BLOCK = 128
BATCH = 32
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 256, 4, 4, 1024
VOCAB = 8192
ROBERTA_SPECIALS = {"pad_token": "<pad>", "unk_token": "<unk>", "cls_token": "<s>", "sep_token": "</s>",
                    "mask_token": "<mask>"}
DOMAIN_HOLDOUT = 0.1
EVAL_SEED = 20240607
BASE_LR, BASE_WARMUP = 5e-4, 0.06
assert bench_pretrain.BLOCK == BLOCK, "run_mlm_blocks cuts bench_pretrain.BLOCK-token blocks"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="wall-clock budget of each continued run")
    parser.add_argument("--base-minutes", type=float, default=1.0, help="pretraining of the starting checkpoint")
    parser.add_argument("--finetune", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--labeled-examples", type=int, default=256)
    parser.add_argument("--finetune-epochs", type=float, default=10.0)
    parser.add_argument("--finetune-lr", type=float, default=3e-4)
    parser.add_argument("--quick", action="store_true", help="smoke run: 0.25 min budgets, 64 labeled examples")
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench-continue"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.base_minutes, args.labeled_examples, args.finetune_epochs = 0.25, 0.25, 64, 2.0
    return args


# ---------------------------------------------------------------------------------------------------- data
def split_corpus(work: Path) -> dict:
    """Base text (packages outside the task), domain train/held-out text (the task's packages) as JSON Lines."""
    corpus = load_builtin_corpus()  # the task's test texts are left out
    domain_packages = set(load_builtin_task()["train"].features["label"].names)
    base, train, held_out = [], [], []
    for text, package in zip(corpus["text"], corpus["package"]):
        if package not in domain_packages:
            base.append(text)
        elif stable_fraction(text, "bench-continue-holdout") < DOMAIN_HOLDOUT:
            held_out.append(text)
        else:
            train.append(text)
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, texts in (("domain-train", train), ("domain-heldout", held_out)):
        files[name] = folder / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return {"base": base, "domain_train": train, "domain_heldout": held_out, "files": files,
            "domain_packages": sorted(domain_packages)}


# ---------------------------------------------------------------------------------------------------- Trainer
class TimeBudget(TrainerCallback):
    """Stops the Trainer when `seconds` have passed since its first step began, and times every step."""

    def __init__(self, seconds: float):
        self.seconds, self.start, self.step_ends = seconds, None, []

    def elapsed(self) -> float:
        return 0.0 if self.start is None else time.perf_counter() - self.start

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(time.perf_counter())
        if self.elapsed() >= self.seconds:
            control.should_training_stop = True
        return control


class TimeScheduledTrainer(Trainer):
    """Trainer whose lr is hf_pretrain's schedule function of the elapsed share of the wall-clock budget."""

    def __init__(self, *args, budget: TimeBudget, warmup: float, **kwargs):
        super().__init__(*args, callbacks=[budget], **kwargs)
        self.budget, self.warmup = budget, warmup

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            def shape(step):
                return lr_multiplier("linear", step, self.budget.elapsed() / self.budget.seconds, self.warmup)

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, shape)
        return self.lr_scheduler


def train_with_trainer(model, tokenizer, blocks, out: Path, minutes: float, lr: float, warmup: float,
                       seed: int) -> dict:
    """The run_mlm.py path: DataCollatorForLanguageModeling(0.15) + Trainer, stopped after `minutes`."""
    budget = TimeBudget(minutes * 60)
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=BATCH, max_steps=10**7, learning_rate=lr,
        weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6, max_grad_norm=1.0,
        save_strategy="no", eval_strategy="no", logging_steps=10, report_to="none", disable_tqdm=True,
        seed=seed, dataloader_drop_last=True, use_cpu=True,
    )
    trainer = TimeScheduledTrainer(
        model=model, args=training_args, train_dataset=blocks,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
        budget=budget, warmup=warmup,
    )
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
    return {
        "steps": steps, "tokens": steps * BATCH * BLOCK, "train_seconds": seconds,
        "tokens_per_s": steps * BATCH * BLOCK / seconds,
        "median_step_tokens_per_s": BATCH * BLOCK / float(np.median(step_seconds)),
        "last_logged_train_loss": losses[-1] if losses else None, "final_dir": str(final), "cpu": cpu,
        "train_blocks": len(blocks),
    }


def build_base_checkpoint(args, work: Path, base_texts: list[str]) -> dict:
    """Tokenizer + RobertaForMaskedLM pretrained briefly on the base text: the stand-in for a Hub checkpoint."""
    tokenizer = train_tokenizer(base_texts, kind="bpe", vocab_size=VOCAB, special_tokens=ROBERTA_SPECIALS,
                                model_max_length=BLOCK)
    torch.manual_seed(args.seed)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, max_position_embeddings=BLOCK + 2, type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    model = RobertaForMaskedLM(config)
    blocks = run_mlm_blocks(datasets.Dataset.from_dict({"text": base_texts}), tokenizer)
    out = work / "base"
    shutil.rmtree(out, ignore_errors=True)
    result = train_with_trainer(model, tokenizer, blocks, out, args.base_minutes, BASE_LR, BASE_WARMUP, args.seed)
    result["params"] = sum(p.numel() for p in model.parameters())
    return result


# ---------------------------------------------------------------------------------------------------- ours
def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_ours(args, work: Path, base_dir: str, files: dict) -> dict:
    run_dir = work / "ours"
    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover run folder would be resumed
    cli = Path(sys.executable).with_name("hf-pretrain")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "hf_pretrain"]
    command += [
        "pretrain", "mlm-continue", f"model.init_from={base_dir}", f"tokenizer.path={base_dir}",
        "data.source=files", f"data.train_files={files['domain-train']}",
        f"data.validation_files={files['domain-heldout']}", f"train.max_minutes={args.minutes}",
        "train.max_steps=null", f"train.seed={args.seed}", f"output.dir={run_dir}", "output.log_with=[]",
        "output.progress_bar=false",
    ]
    print("  $ " + " ".join(command), flush=True)
    wall0, load0 = time.perf_counter(), os.getloadavg()[0]
    log = work / "ours.log"
    metrics = run_dir / "metrics.jsonl"
    first = last = None  # (wall, process CPU seconds) when the first / latest training step was seen logged
    steps_seen = 0
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
        while process.poll() is None:
            time.sleep(0.5)
            steps = metrics.read_text().count('"tokens_per_s"') if metrics.exists() else 0
            if steps > steps_seen:
                sample = (time.perf_counter(), process_cpu_seconds(process.pid))
                first, last, steps_seen = first or sample, sample, steps
    wall = time.perf_counter() - wall0
    if process.returncode != 0:
        print(log.read_text()[-4000:])
        raise SystemExit(f"hf-pretrain exited with {process.returncode}; log: {log}")
    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_metrics(run_dir)
    step_rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    packing = [line for line in log.read_text().splitlines() if "packing" in line]
    # CPU share of the subprocess between its first and last logged training steps (polled every 0.5 s).
    span = (last[0] - first[0]) if first and last else 0.0
    share = (last[1] - first[1]) / (span * torch.get_num_threads()) if span > 0 else float("nan")
    seconds = summary["minutes"] * 60
    return {
        "steps": summary["steps"], "tokens": summary["tokens"], "train_seconds": seconds,
        "tokens_per_s": summary["tokens"] / seconds,
        "median_step_tokens_per_s": statistics.median(step_rates) if step_rates else float("nan"),
        "final_dir": summary["final_dir"], "in_loop_eval": summary["final_eval"],
        "process_wall_s": wall, "packing_log": packing,
        "cpu": {"wall_s": wall, "cpu_share": share,
                "load_before": load0, "load_after": os.getloadavg()[0]},
    }


# ---------------------------------------------------------------------------------------------------- eval, fine-tuning
def fixed_eval_batches(tokenizer, texts: list[str]) -> list[dict]:
    packed = pack_dataset(datasets.Dataset.from_dict({"text": texts}), tokenizer, block_size=BLOCK,
                          use_cache=False).dataset
    collator = MaskingCollator(tokenizer, mlm_probability=0.15, seed=EVAL_SEED, with_position_ids=False)
    rows = [packed[i] for i in range(len(packed))]
    return [collator(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]


def finetune_model(args, work: Path, name: str, model_dir: str) -> dict:
    from hf_pretrain.finetune import finetune, load_finetune_recipe

    overrides = [
        f"model={model_dir}", f"output.dir={work / 'finetune' / name}", "output.progress_bar=false",
        f"train.lr={args.finetune_lr}", "train.seed=42", f"data.max_train_examples={args.labeled_examples}",
        f"train.epochs={args.finetune_epochs}", "train.early_stopping_patience=null",
    ]
    meter = CpuMeter()
    out = finetune(load_finetune_recipe("finetune-classification", overrides))
    run = out["runs"]["pretrained"]
    return {"test_accuracy": run["test"]["accuracy"], "test_f1": run["test"]["f1"], "steps": run["steps"],
            "cpu": meter.stop()}


# ---------------------------------------------------------------------------------------------------- report
LABELS = {"base": "starting checkpoint (base text only)", "ours": "ours: hf-pretrain mlm-continue",
          "run_mlm": "run_mlm.py path: Trainer + collator"}


def print_table(args, results: dict, evals: dict, tunes: dict | None) -> None:
    print()
    print(f"== Continued pretraining of RobertaForMaskedLM ({results['base']['params']:,} params), "
          f"{args.minutes:g} min wall-clock each on the domain text, batch {BATCH} x {BLOCK}; torch "
          f"{torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    header = (f"{'model':38}{'steps':>7}{'tokens/s':>10}{'step tok/s':>12}{'eval MLM loss':>15}{'eval acc':>10}"
              f"{'fine-tuned acc':>16}{'macro F1':>10}{'cpu share':>11}{'load':>11}")
    print(header)
    print("-" * len(header))
    for name in ("base", "ours", "run_mlm"):
        r, e = results[name], evals[name]
        continued = name != "base"
        t = (tunes or {}).get(name)
        load = f"{r['cpu']['load_before']:.1f}->{r['cpu']['load_after']:.1f}"
        steps = f"{r['steps']:,}" if continued else ""
        rate = f"{r['tokens_per_s']:,.0f}" if continued else ""
        step_rate = f"{r['median_step_tokens_per_s']:,.0f}" if continued else ""
        accuracy = f"{t['test_accuracy']:.4f}" if t else "-"
        f1 = f"{t['test_f1']:.4f}" if t else "-"
        print(f"{LABELS[name]:38}{steps:>7}{rate:>10}{step_rate:>12}{e['loss']:>15.4f}{e['accuracy']:>10.4f}"
              f"{accuracy:>16}{f1:>10}{r['cpu']['cpu_share']:>11.2f}{load:>11}")
    ours, peer = results["ours"], results["run_mlm"]
    print(f"(base row: its own pretraining, {results['base']['steps']} steps / {args.base_minutes:g} min on the "
          f"base text, is not compared. Eval: {evals['ours']['masked_tokens']:,} masked tokens of the held-out "
          f"domain text, same masks for every model, seed {EVAL_SEED}. tokens/s = tokens seen / budget seconds "
          "(ours: its in-loop eval and checkpoint inside); step tok/s = median single step. Fine-tuned: built-in "
          f"task test split, {args.labeled_examples} labeled examples, finetune-classification, lr "
          f"{args.finetune_lr:g}, {args.finetune_epochs:g} epochs, no early stopping. cpu share = process CPU / "
          "(wall x threads) while training; load = load average before -> after)")
    speed = ours["tokens_per_s"] / peer["tokens_per_s"]
    step_speed = ours["median_step_tokens_per_s"] / peer["median_step_tokens_per_s"]
    diff = evals["ours"]["loss"] - evals["run_mlm"]["loss"]
    print(f"ours / run_mlm.py path: tokens/s x{speed:.2f} ({'PASS' if speed >= 1.3 else 'MISS'} vs the 1.3x "
          f"target), per-step x{step_speed:.2f}; eval loss {evals['ours']['loss']:.4f} vs "
          f"{evals['run_mlm']['loss']:.4f} ({diff:+.4f}, {'PASS' if diff < 0 else 'MISS'})", end="")
    if tunes:
        gap = 100 * (tunes["ours"]["test_accuracy"] - tunes["run_mlm"]["test_accuracy"])
        print(f"; fine-tuned accuracy {tunes['ours']['test_accuracy']:.1%} vs {tunes['run_mlm']['test_accuracy']:.1%} "
              f"({gap:+.1f} points)")
    else:
        print()
    shares = [ours["cpu"]["cpu_share"], peer["cpu"]["cpu_share"]]
    if abs(shares[0] - shares[1]) > 0.15 or min(shares) < 0.8:
        print(f"WARNING: CPU shares {shares[0]:.2f} (ours) and {shares[1]:.2f} (run_mlm): other processes shared "
              "the cores, so tokens/s and the loss reached in the budget are biased; rerun on a quiet machine.")


def main(argv=None):
    args = parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"bench_continue: {args.minutes:g} min per continued run, base {args.base_minutes:g} min, load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, work dir {work}", flush=True)
    recipe = load_recipe("mlm-continue")
    assert (recipe.train.batch_size, recipe.data.block_size, recipe.masking.mlm_probability) == (BATCH, BLOCK, 0.15)
    lr, warmup = recipe.train.lr, recipe.train.warmup  # the Trainer run gets the recipe's own values
    assert recipe.train.schedule == "linear"

    data = split_corpus(work)
    print(f"1/5 data: base {len(data['base']):,} docs; domain ({', '.join(data['domain_packages'])}) "
          f"{len(data['domain_train']):,} train + {len(data['domain_heldout']):,} held out", flush=True)
    print(f"2/5 starting checkpoint: tokenizer + RoBERTa, {args.base_minutes:g} min of Trainer on the base text",
          flush=True)
    results = {"base": build_base_checkpoint(args, work, data["base"])}
    base_dir = results["base"]["final_dir"]
    print(f"  {results['base']['steps']} steps, last train loss {results['base']['last_logged_train_loss']}",
          flush=True)

    print(f"3/5 ours: hf-pretrain pretrain mlm-continue, {args.minutes:g} min", flush=True)
    results["ours"] = run_ours(args, work, base_dir, data["files"])
    print(f"  {results['ours']['steps']} steps; " + "; ".join(results["ours"]["packing_log"]), flush=True)

    print(f"4/5 run_mlm.py path: Trainer, {args.minutes:g} min", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    domain = datasets.load_dataset("json", data_files=str(data["files"]["domain-train"]), split="train")
    blocks = run_mlm_blocks(domain, tokenizer)
    model = AutoModelForMaskedLM.from_pretrained(base_dir)
    results["run_mlm"] = train_with_trainer(model, tokenizer, blocks, work / "run_mlm", args.minutes, lr, warmup,
                                            args.seed)
    results["run_mlm"]["params"] = results["base"]["params"]
    print(f"  {results['run_mlm']['steps']} steps", flush=True)

    print("5/5 eval on fixed masks" + (", then fine-tuning" if args.finetune else ""), flush=True)
    batches = fixed_eval_batches(tokenizer, data["domain_heldout"])
    evals = {name: masked_lm_eval(AutoModelForMaskedLM.from_pretrained(r["final_dir"]), batches, False)
             for name, r in results.items()}
    print_table(args, results, evals, None)
    tunes = None
    if args.finetune:
        tunes = {}
        for name, r in results.items():
            tunes[name] = finetune_model(args, work, name, r["final_dir"])
            print(f"  fine-tuned {name}: {tunes[name]['test_accuracy']:.4f} "
                  f"({tunes[name]['cpu']['wall_s'] / 60:.1f} min)", flush=True)
        print_table(args, results, evals, tunes)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "eval": evals,
                                               "finetune": tunes}, indent=2, default=str))
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

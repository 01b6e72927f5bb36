#!/usr/bin/env python
"""Causal LM: hf_pretrain's decoder (the clm-tiny recipe) vs transformers' GPT2LMHeadModel and LlamaForCausalLM.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_clm.py                 # ~11-12 min on 2 cores
    .venv/bin/python benchmarks/bench_clm.py --no-train --steps 30              # part 1 only (step time), ~2 min
    .venv/bin/python benchmarks/bench_clm.py --no-step --minutes 5 --json out.json
    .venv/bin/python benchmarks/bench_clm.py --quick                            # smoke run, about a minute

Common to both parts
  * Data: the clm-tiny recipe's text splits (`load_text_splits`: the built-in corpus, its 3% validation split,
    seed train.seed). One tokenizer for every model: ours for clm (byte-level BPE 8192, [BOS] text, [EOS] after
    each document), trained once here with the recipe's own tokenizer settings and function (`train_tokenizer`,
    objective clm, on `texts_for_tokenizer` of the training split) and handed to our run as `tokenizer.path`.
  * Models, fp32, SDPA attention, no dropout, tied input/output embeddings, vocabulary rows rounded to 64 (8192),
    hidden 256, 4 layers, 4 heads, context 128:
      - ours: `PretrainDecoderForCausalLM` exactly as the recipe builds it (`model_config_from_recipe`: RMSNorm,
        rotary, SwiGLU 704, no biases);
      - GPT-2: `GPT2LMHeadModel` (LayerNorm, learned positions, GELU MLP with biases), `n_inner` the multiple of 16
        whose parameter count is closest to ours; dropout 0 (its default 0.1 would only slow it on a 3-minute
        budget);
      - Llama: `LlamaForCausalLM` (`tie_word_embeddings=True`, as ours; untied it would carry 2.1M more
        parameters), `intermediate_size` matched the same way (it comes out at ours: the two blocks have the same
        weights).
  * Each model gets the inputs its own training pipeline feeds it: ours the recipe's packed blocks through
    `CausalLMCollator` (input_ids, per-document position_ids, labels with -100 at each document's first token: its
    attention stays inside each document); the peers run_clm.py's rows (input_ids, an all-ones attention_mask,
    labels = input_ids: attention runs across the documents of a row).

Part 1 (`--steps`, default 20): one training step = forward with labels, backward, clip_grad_norm_(1.0),
  optimizer step (ours: the optimizer its loop builds from the recipe, Muon + fused AdamW for clm-tiny; the peers:
  torch's AdamW), zero_grad (bench_mlm_step.py's `train_step`), on 4 fixed batches of 32 x 128 tokens cut from the packed
  training blocks (the same tokens for every model). `--warmup` untimed steps each, then timed steps round-robin
  over the models (the order rotating every round) until each model has --steps "clean" steps (this process got
  >= 90% of its threads' CPU time) or --max-seconds passed. Median step time -> tokens/s, ratios ours / peer.
  An extra row, "ours, no position_ids", is our model on the same rows without position_ids (plain causal
  attention, SDPA's is_causal kernel, as the peers run): the difference to ours is the per-document mask's cost.
  FLOPs per step are counted the same way for every model: 6 x (matmul weights + the LM head) x tokens + the
  attention matmuls over the whole row (ours' `training_flops`; GPT-2's Conv1D layers are counted too).

Part 2 (`--minutes`, default 3): equal wall-clock pretraining, one run after another, each timed from its first
  training step (tokenizer, packing, model building and our initial eval lie outside every budget).
    - ours: `Pretraining(load_recipe("clm-tiny", [...])).run()`, the recipe as shipped (peak lr 1e-3, warmup 5%,
      wsd decay over the last 30% of the budget, Muon for the hidden matrices and AdamW 0.9/0.98/1e-6 for the rest,
      weight decay 0.1, clip 1.0, batch 32), only budget, seed, output folder, logging and tokenizer.path
      overridden. "ours-adamw" is the same run with train.optimizer=adamw. Its in-loop evals and checkpoints (every
      100 steps) count inside its budget.
    - GPT-2 and Llama: `transformers.Trainer` on run_clm.py's `tokenize_function` + `group_texts` blocks of 128
      (1000-row map batches, labels = input_ids), the same tokenizer; `tokenize_function` appends the tokenizer's
      [EOS] to each document so the token stream is ours (run_clm.py's does not: with GPT-2's tokenizer a user
      adds it). Trainer gets the recipe's optimizer settings (lr, betas, eps, weight decay, clip, batch) and the
      recipe's lr schedule: hf_pretrain's own `lr_multiplier` as a function of the elapsed share of the budget,
      as our loop computes it. Chosen over run_clm.py's defaults (lr 5e-5, linear decay, no warmup) because those
      hardly move a randomly initialized 5M-parameter model in 3 minutes (bench_pretrain.py's BERT row shows
      what they do); 1e-3 with warmup suits pre-norm models of this size, which GPT-2 and Llama both are.
      Trainer's weight decay skips biases and norms and decays the embedding, our loop decays every matrix but the
      token embedding (`build_optimizer`); a callback stops the run when the budget is spent.
  Eval, identical for all: the validation split packed by our packer into blocks of 128 (pack_dataset) and
  collated by CausalLMCollator; the targets are every next token inside a document (the first token of a row and
  of each document, always [BOS] there, is not scored: ours is never asked to predict it). Mean cross-entropy ->
  perplexity, and next-token accuracy. Ours also gets the per-document position_ids (it trains with them); a second
  row evaluates it without them (plain causal attention over the row, as the peers read it).
  Targets (issue 18 item 7): ours >= 1.3x GPT-2's tokens/s (part 1, and part 2's training throughput); ours has a
  lower eval perplexity than both peers at equal wall-clock. Printed as PASS/MISS, as measured.
Noise: part 2's runs are sequential (a wall-clock budget cannot alternate), so the table prints each run's CPU share
and load average. Results: benchmarks/RESULTS.md#clm.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainingArguments,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
datasets.disable_progress_bars()

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_continue import TimeBudget  # noqa: E402  (stops a Trainer when its wall-clock budget is spent)
from bench_mlm_step import CLEAN_CPU_SHARE, train_step  # noqa: E402  (the step every model runs in part 1)
from bench_pretrain import CpuMeter, count_parameters  # noqa: E402

from hf_pretrain.console import setup_console  # noqa: E402
from hf_pretrain.data.collation import IGNORE_INDEX, CausalLMCollator  # noqa: E402
from hf_pretrain.data.packing import pack_dataset  # noqa: E402
from hf_pretrain.data.pipeline import load_text_splits, texts_for_tokenizer  # noqa: E402
from hf_pretrain.data.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402
from hf_pretrain.models import PretrainDecoderConfig, PretrainDecoderForCausalLM  # noqa: E402
from hf_pretrain.models.layers import attention_flops  # noqa: E402
from hf_pretrain.recipe import load_recipe  # noqa: E402
from hf_pretrain.training.loop import Pretraining  # noqa: E402
from hf_pretrain.training.optimizers import build_optimizer  # noqa: E402
from hf_pretrain.training.metrics import read_metrics  # noqa: E402
from hf_pretrain.training.objectives import model_config_from_recipe, vocab_rows  # noqa: E402
from hf_pretrain.training.schedules import lr_multiplier  # noqa: E402

RECIPE = "clm-tiny"
BLOCK, BATCH = 128, 32
NUM_DISTINCT_BATCHES = 4
PART1_DOCUMENTS = 1000  # part 1 packs its batches from this many documents of the training split
QUICK_DOCUMENTS = 400  # --quick reads only this many documents
LABELS = {
    "ours": "ours (clm-tiny, PretrainDecoder)",
    "ours-rows": "ours, no position_ids",
    "ours-adamw": "ours, train.optimizer=adamw",
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
}
PEERS = ("gpt2", "llama")
TARGET_SPEEDUP_VS_GPT2 = 1.3


# ---------------------------------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="part 1: timed clean steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="part 1: untimed steps per model first")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="part 1 on a busy machine: stop timing after this many seconds even without --steps "
                             "clean steps per model")
    parser.add_argument("--minutes", type=float, default=3.0, help="part 2: wall-clock training budget per model")
    parser.add_argument("--models", nargs="+", default=["ours", "ours-rows", "ours-adamw", "gpt2", "llama"],
                        choices=list(LABELS),
                        help="ours-rows (part 1 only): our model fed the same rows without position_ids, i.e. plain "
                             "causal attention over the row as the peers run it; it shows what the per-document "
                             "mask costs; ours-adamw: our model and loop with train.optimizer=adamw instead of "
                             "the recipe's muon, which shows what the optimizer brings")
    parser.add_argument("--step", action=argparse.BooleanOptionalAction, default=True, help="run part 1")
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=True, help="run part 2")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_DOCUMENTS} documents, 2 timed steps, 0.1 min budgets")
    parser.add_argument("--work-dir", default=str(REPO / "runs" / "bench-clm"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.max_seconds = min(args.steps, 2), min(args.warmup, 1), min(args.max_seconds, 30)
        args.minutes = min(args.minutes, 0.1)
    if "ours" not in args.models:
        parser.error("'ours' must be among --models")
    return args


def base_overrides(args) -> list[str]:
    """Recipe overrides every use of the recipe here shares (the data it reads)."""
    return [f"train.seed={args.seed}"] + ([f"data.max_documents={QUICK_DOCUMENTS}"] if args.quick else [])


# ---------------------------------------------------------------------------------------------------- data
def prepare_tokenizer_and_texts(args, work: Path):
    """The recipe's text splits, and a tokenizer trained as the recipe trains its own (saved under work/)."""
    recipe = load_recipe(RECIPE, base_overrides(args))
    assert (recipe.data.block_size, recipe.train.batch_size) == (BLOCK, BATCH), "clm-tiny changed: update BLOCK/BATCH"
    texts = load_text_splits(recipe)
    train_texts, eval_texts = texts.train, texts.validation
    section = recipe.tokenizer
    folder = work / "tokenizer"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    tokenizer = train_tokenizer(
        texts_for_tokenizer(train_texts, section.max_train_documents), kind=section.kind,
        vocab_size=section.vocab_size, lowercase=section.lowercase, layout="decoder", model_max_length=BLOCK,
    )
    tokenizer.save_pretrained(folder)
    print(f"  tokenizer: {section.kind} {len(tokenizer)} tokens, trained in {time.perf_counter() - started:.0f} s "
          f"on {len(train_texts):,} documents", flush=True)
    return recipe, train_texts, eval_texts, load_tokenizer(folder), folder


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def packed_batches(texts, tokenizer, limit: int | None = None) -> list[dict]:
    """Our packed blocks of `texts`, collated as our run collates them (CausalLMCollator, position_ids)."""
    packed = pack_dataset(texts, tokenizer, block_size=BLOCK, use_cache=False).dataset
    rows = [packed[i] for i in range(min(len(packed), limit or len(packed)))]
    collator = CausalLMCollator(pad_id(tokenizer), with_position_ids=True)
    return [collator(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]


def peer_batch(batch: dict) -> dict:
    """What run_clm.py's default_data_collator hands GPT-2/Llama for the same tokens: input_ids, the tokenizer's
    all-ones attention_mask, labels = input_ids (the model shifts them)."""
    ids = batch["input_ids"]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def run_clm_blocks(texts, tokenizer):
    """run_clm.py's tokenize_function + group_texts (1000-row map batches), with [EOS] after each document."""
    eos = tokenizer.eos_token_id

    def tokenize_function(examples):
        output = tokenizer(examples["text"])
        output["input_ids"] = [ids + [eos] for ids in output["input_ids"]]
        output["attention_mask"] = [mask + [1] for mask in output["attention_mask"]]
        return output

    tokenized = texts.map(tokenize_function, batched=True, remove_columns=texts.column_names)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // BLOCK) * BLOCK
        result = {k: [t[i : i + BLOCK] for i in range(0, total_length, BLOCK)] for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    return tokenized.map(group_texts, batched=True)


# ---------------------------------------------------------------------------------------------------- models
def ours_config(recipe, tokenizer) -> PretrainDecoderConfig:
    """What CausalLMObjective.build_model gives the recipe's model (vocabulary and special ids from the tokenizer)."""
    return model_config_from_recipe(
        PretrainDecoderConfig, recipe, vocab_size=vocab_rows(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def build_model(name: str, recipe, tokenizer, width: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    if name in ("ours", "ours-rows", "ours-adamw"):
        return PretrainDecoderForCausalLM(ours_config(recipe, tokenizer)).float()
    config = recipe.model.config
    hidden, layers, heads = config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if name == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=vocab_rows(tokenizer), n_positions=BLOCK, n_embd=hidden, n_layer=layers, n_head=heads,
            n_inner=width, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, **ids,
        )
        return GPT2LMHeadModel._from_config(gpt2, attn_implementation="sdpa").float()
    if name == "llama":
        llama = LlamaConfig(
            vocab_size=vocab_rows(tokenizer), hidden_size=hidden, intermediate_size=width, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=BLOCK,
            rms_norm_eps=1e-5, tie_word_embeddings=True, attention_dropout=0.0, **ids,
        )
        return LlamaForCausalLM._from_config(llama, attn_implementation="sdpa").float()
    raise ValueError(name)


def matched_width(name: str, recipe, tokenizer, target: int) -> int:
    """The MLP width (a multiple of 16: ragged widths run the GEMMs slower) whose total parameter count is closest
    to `target`. Parameters are affine in the width, so two probes give the slope."""
    p0 = count_parameters(build_model(name, recipe, tokenizer, 64))
    p1 = count_parameters(build_model(name, recipe, tokenizer, 128))
    guess = 64 + (target - p0) * 64 / (p1 - p0)
    candidates = [16 * (int(guess) // 16) + 16 * k for k in (-1, 0, 1, 2)]
    return min(candidates, key=lambda w: abs(p0 + (p1 - p0) * (w - 64) / 64 - target))


def matmul_weights(model) -> int:
    """Weights that run as matmuls in a training step: every 2-D parameter except lookup tables (token and
    position embeddings), plus the LM head once (it is the tied token embedding in all three models)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    body = sum(p.numel() for p in model.parameters() if p.ndim == 2 and id(p) not in embeddings)
    return body + model.get_output_embeddings().weight.numel()


def step_flops(model, tokens: int) -> float:
    config = model.config
    return float(6 * matmul_weights(model) * tokens + attention_flops(config.num_hidden_layers, BLOCK,
                                                                      config.hidden_size, tokens))


# ---------------------------------------------------------------------------------------------------- part 1
def part_step_time(args, recipe, tokenizer, train_texts, widths: dict) -> dict:
    # the first documents of the training split are plenty for 4 batches (packing them all takes seconds)
    head = train_texts.select(range(min(len(train_texts), PART1_DOCUMENTS)))
    ours_batches = packed_batches(head, tokenizer, limit=NUM_DISTINCT_BATCHES * BATCH)
    ours_batches = [b for b in ours_batches if b["input_ids"].shape[0] == BATCH] or ours_batches
    inputs = {
        "ours": ours_batches,
        "ours-rows": [{k: v for k, v in b.items() if k != "position_ids"} for b in ours_batches],
        "ours-adamw": ours_batches,
        "gpt2": [peer_batch(b) for b in ours_batches],
        "llama": [peer_batch(b) for b in ours_batches],
    }
    names = list(args.models)
    models, optimizers, params = {}, {}, {}
    for name in names:
        models[name] = build_model(name, recipe, tokenizer, widths.get(name), args.seed).train()
        # The step's optimizer (the lr does not change the time): ours the one its loop builds from the recipe
        # (clm-tiny: Muon for the hidden matrices, fused AdamW for the rest); ours-adamw our loop's fused AdamW;
        # the peers torch's AdamW with the recipe's settings, as Trainer runs them on a CPU.
        train = recipe.train
        if name in ("ours", "ours-rows", "ours-adamw"):
            arm = load_recipe(RECIPE, base_overrides(args) + (["train.optimizer=adamw"] if name == "ours-adamw" else []))
            optimizers[name] = build_optimizer(models[name], arm.train, fused=True)
        else:
            optimizers[name] = torch.optim.AdamW(models[name].parameters(), lr=train.lr,
                                                 betas=(train.beta1, train.beta2), eps=train.eps,
                                                 weight_decay=train.weight_decay)
        params[name] = count_parameters(models[name])
    losses = {name: [] for name in names}
    for i in range(args.warmup):
        for name in names:
            losses[name].append(train_step(models[name], optimizers[name], inputs[name][i % len(ours_batches)]))
    times = {name: [] for name in names}
    shares = {name: [] for name in names}
    threads = torch.get_num_threads()
    start, i = time.perf_counter(), 0
    while True:
        clean = min(sum(s >= CLEAN_CPU_SHARE for s in shares[name]) for name in names)
        if clean >= args.steps or (i >= args.steps and time.perf_counter() - start > args.max_seconds):
            break
        order = names[i % len(names):] + names[: i % len(names)]
        batch_index = (args.warmup + i) % len(ours_batches)
        i += 1
        for name in order:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            losses[name].append(train_step(models[name], optimizers[name], inputs[name][batch_index]))
            wall = time.perf_counter() - wall0
            times[name].append(wall)
            shares[name].append((time.process_time() - cpu0) / (wall * threads))
    tokens = ours_batches[0]["input_ids"].numel()
    results = {}
    for name in names:
        clean_times = [t for t, s in zip(times[name], shares[name]) if s >= CLEAN_CPU_SHARE]
        reliable = len(clean_times) >= 3
        median = statistics.median(clean_times if reliable else times[name])
        flops = step_flops(models[name], tokens)
        results[name] = {
            "model": LABELS[name], "params": params[name], "median_step_s": median, "tokens_per_s": tokens / median,
            "min_step_s": min(times[name]), "max_step_s": max(times[name]), "step_gflop": flops / 1e9,
            "gflops": flops / median / 1e9, "clean_steps": len(clean_times), "timed_steps": len(times[name]),
            "reliable": reliable, "median_cpu_share": statistics.median(shares[name]),
            "first_loss": losses[name][0], "last_loss": losses[name][-1],
        }
    if "ours" in models and hasattr(models["ours"], "training_flops"):
        results["ours"]["training_flops_gflop"] = models["ours"].training_flops(tokens, BLOCK) / 1e9
    return {"results": results, "rounds": i, "tokens_per_step": tokens, "step_times_s": times, "cpu_share": shares}


def print_step_table(args, part: dict) -> dict:
    results = part["results"]
    print()
    print(f"== Part 1: one training step (fwd + bwd + clip + AdamW), batch {BATCH} x {BLOCK}, fp32, "
          f"{torch.get_num_threads()} threads, median of the clean steps of {part['rounds']} round-robin rounds "
          f"after {args.warmup} warm-up")
    header = (f"{'model':34}{'params':>11}{'ms/step':>9}{'(min-max)':>12}{'tokens/s':>10}{'ours is':>9}"
              f"{'GFLOP':>7}{'GFLOP/s':>9}{'clean':>7}{'cpu':>6}{'loss':>13}")
    print(header)
    print("-" * len(header))
    ours = results["ours"]
    for name, r in results.items():
        ratio = ours["tokens_per_s"] / r["tokens_per_s"]
        spread = f"{1e3 * r['min_step_s']:.0f}-{1e3 * r['max_step_s']:.0f}"
        print(f"{r['model']:34}{r['params']:>11,}{1e3 * r['median_step_s']:>9.0f}{spread:>12}"
              f"{r['tokens_per_s']:>10,.0f}{ratio:>8.2f}x{r['step_gflop']:>7.1f}{r['gflops']:>9.1f}"
              f"{r['clean_steps']:>4}/{r['timed_steps']:<2}{r['median_cpu_share']:>6.2f}"
              f"{r['first_loss']:>7.2f}>{r['last_loss']:<5.2f}")
    print(f"(GFLOP = matmul FLOPs per step counted alike for all; clean = steps with >= {CLEAN_CPU_SHARE:.0%} CPU "
          "share, medians use only those; cpu = median CPU share; loss = first > last step's training loss)")
    if "training_flops_gflop" in ours:
        print(f"(ours' own training_flops: {ours['training_flops_gflop']:.1f} GFLOP per step)")
    if not all(r["reliable"] for r in results.values()):
        print("WARNING: fewer than 3 clean steps for some model: the machine was busy; medians are of all steps.")
    verdicts = {}
    for name in PEERS:
        if name in results:
            ratio = ours["tokens_per_s"] / results[name]["tokens_per_s"]
            verdicts[f"step tokens/s ours/{name}"] = ratio
    return verdicts


# ---------------------------------------------------------------------------------------------------- part 2
def run_ours(args, work: Path, tokenizer_dir: Path, name: str = "ours") -> dict:
    run_dir = work / name
    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover run folder would be RESUMED, not restarted
    overrides = base_overrides(args) + [
        f"output.dir={run_dir}", f"train.max_minutes={args.minutes}", "output.log_with=[]",
        "output.progress_bar=false", f"tokenizer.path={tokenizer_dir}",
    ] + (["train.optimizer=adamw"] if name == "ours-adamw" else [])
    recipe = load_recipe(RECIPE, overrides)
    pretraining = Pretraining(recipe)
    params = count_parameters(pretraining.accelerator.unwrap_model(pretraining.model))
    meter = CpuMeter()
    summary = pretraining.run()
    cpu = meter.stop()
    records = read_metrics(run_dir)
    step_rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    seconds = summary["minutes"] * 60
    return {
        "model": LABELS[name], "params": params, "steps": summary["steps"], "tokens": summary["tokens"],
        "train_seconds": seconds, "tokens_per_s": summary["tokens"] / seconds,
        "median_step_tokens_per_s": statistics.median(step_rates) if step_rates else float("nan"),
        "final_dir": summary["final_dir"], "in_loop_final_eval": summary["final_eval"], "cpu": cpu,
        "train_blocks": len(pretraining.objective.train_dataset), "overrides": overrides,
    }


class ScheduledTrainer(Trainer):
    """Trainer whose lr multiplier is hf_pretrain's `lr_multiplier` of the elapsed share of the wall-clock budget,
    with the recipe's schedule, warmup, decay fraction and floor: the schedule our loop gives ours."""

    def __init__(self, *args, budget: TimeBudget, train_section, **kwargs):
        super().__init__(*args, callbacks=[budget], **kwargs)
        self.budget, self.train_section = budget, train_section

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.lr_scheduler is None:
            t = self.train_section

            def shape(step):
                progress = self.budget.elapsed() / self.budget.seconds
                return lr_multiplier(t.schedule, step, progress, t.warmup, t.decay_fraction, t.min_lr_ratio)

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, shape)
        return self.lr_scheduler


def run_peer(name: str, args, work: Path, recipe, tokenizer, blocks, width: int) -> dict:
    model = build_model(name, recipe, tokenizer, width, args.seed)
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    train = recipe.train
    budget = TimeBudget(args.minutes * 60)
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=BATCH, max_steps=10**7,
        learning_rate=train.lr, weight_decay=train.weight_decay, adam_beta1=train.beta1, adam_beta2=train.beta2,
        adam_epsilon=train.eps, max_grad_norm=train.clip_grad_norm, save_strategy="no", eval_strategy="no",
        logging_steps=25, report_to="none", disable_tqdm=True, seed=args.seed, dataloader_drop_last=True,
        use_cpu=True,
    )
    trainer = ScheduledTrainer(model=model, args=training_args, train_dataset=blocks, budget=budget,
                               train_section=train)
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
    tokens = steps * BATCH * BLOCK
    return {
        "model": LABELS[name], "params": count_parameters(model), "width": width, "steps": steps, "tokens": tokens,
        "train_seconds": seconds, "tokens_per_s": tokens / seconds,
        "median_step_tokens_per_s": BATCH * BLOCK / float(np.median(step_seconds)),
        "last_logged_train_loss": losses[-1] if losses else None, "final_dir": str(final), "cpu": cpu,
        "train_blocks": len(blocks),
    }


@torch.no_grad()
def clm_eval(model, batches: list[dict], with_position_ids: bool) -> dict:
    """Summed next-token cross-entropy over the targets the collator's labels keep (position t predicts t + 1)."""
    model.eval()
    loss_sum, correct, items = 0.0, 0, 0
    for batch in batches:
        inputs = {"input_ids": batch["input_ids"], "use_cache": False}
        if with_position_ids:
            inputs["position_ids"] = batch["position_ids"]
        logits = model(**inputs).logits[:, :-1]  # (B, L-1, V)
        targets = batch["labels"][:, 1:]
        valid = targets != IGNORE_INDEX
        logits, targets = logits[valid].float(), targets[valid]
        loss_sum += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        correct += int((logits.argmax(-1) == targets).sum())
        items += targets.numel()
    loss = loss_sum / items
    return {"loss": loss, "perplexity": math.exp(loss), "accuracy": correct / items, "target_tokens": items}


def print_train_table(args, results: dict, evals: dict, ours_rows_eval: dict | None) -> dict:
    print()
    print(f"== Part 2: pretraining, {args.minutes:g} min wall-clock each, batch {BATCH} x {BLOCK}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    header = (f"{'model':34}{'params':>11}{'steps':>7}{'tokens/s':>10}{'step tok/s':>11}{'eval loss':>11}"
              f"{'eval ppl':>10}{'next-tok acc':>13}{'cpu share':>10}{'load':>11}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        e = evals[name]
        load = f"{r['cpu']['load_before']:.1f}->{r['cpu']['load_after']:.1f}"
        print(f"{r['model']:34}{r['params']:>11,}{r['steps']:>7,}{r['tokens_per_s']:>10,.0f}"
              f"{r['median_step_tokens_per_s']:>11,.0f}{e['loss']:>11.4f}{e['perplexity']:>10.2f}"
              f"{e['accuracy']:>13.4f}{r['cpu']['cpu_share']:>10.2f}{load:>11}")
    if ours_rows_eval:
        e = ours_rows_eval
        print(f"{'  ours, eval without position_ids':34}{'':>11}{'':>7}{'':>10}{'':>11}{e['loss']:>11.4f}"
              f"{e['perplexity']:>10.2f}{e['accuracy']:>13.4f}")
    print(f"(eval: {evals['ours']['target_tokens']:,} next-token targets of the validation split's packed blocks, "
          "the same for all; tokens/s = tokens seen / training seconds; step tok/s = median single step; cpu share = "
          "process CPU / (wall x threads))")
    in_loop = results["ours"].get("in_loop_final_eval") or {}
    if "loss" in in_loop:
        print(f"(ours' own final in-loop eval: loss {in_loop['loss']:.4f}, over the recipe's eval_batches)")
    shares = [r["cpu"]["cpu_share"] for r in results.values()]
    if max(shares) - min(shares) > 0.15 or min(shares) < 0.8:
        print("WARNING: the runs got unequal or low CPU shares ("
              + ", ".join(f"{n} {r['cpu']['cpu_share']:.2f}" for n, r in results.items())
              + "): other processes shared the cores during some runs; steps, tokens/s and the perplexity reached "
              "in the budget are biased. Part 1 alternates the models in one process and is not.")
    verdicts = {}
    ours = results["ours"]
    for name in PEERS:
        if name in results:
            verdicts[f"train tokens/s ours/{name}"] = ours["tokens_per_s"] / results[name]["tokens_per_s"]
            verdicts[f"eval ppl ours - {name}"] = evals["ours"]["perplexity"] - evals[name]["perplexity"]
    return verdicts


def part_train(args, work: Path, recipe, tokenizer, tokenizer_dir: Path, train_texts, eval_texts,
               widths: dict) -> dict:
    results = {}
    print(f"part 2, ours: {RECIPE} through Pretraining, {args.minutes:g} min", flush=True)
    results["ours"] = run_ours(args, work, tokenizer_dir)
    print(f"  {results['ours']['steps']} steps", flush=True)
    if "ours-adamw" in args.models:
        print(f"part 2, ours with train.optimizer=adamw, {args.minutes:g} min", flush=True)
        results["ours-adamw"] = run_ours(args, work, tokenizer_dir, "ours-adamw")
        print(f"  {results['ours-adamw']['steps']} steps", flush=True)
    peers = [name for name in PEERS if name in args.models]
    if peers:
        blocks = run_clm_blocks(train_texts, tokenizer)
        for name in peers:
            print(f"part 2, {LABELS[name]}: Trainer, {args.minutes:g} min", flush=True)
            results[name] = run_peer(name, args, work, recipe, tokenizer, blocks, widths[name])
            print(f"  {results[name]['steps']} steps", flush=True)
    print("part 2, eval", flush=True)
    batches = packed_batches(eval_texts, tokenizer)
    evals = {"ours": clm_eval(AutoModelForCausalLM.from_pretrained(results["ours"]["final_dir"]), batches, True)}
    ours_rows = clm_eval(AutoModelForCausalLM.from_pretrained(results["ours"]["final_dir"]), batches, False)
    if "ours-adamw" in results:
        evals["ours-adamw"] = clm_eval(AutoModelForCausalLM.from_pretrained(results["ours-adamw"]["final_dir"]),
                                       batches, True)
    for name in peers:
        evals[name] = clm_eval(AutoModelForCausalLM.from_pretrained(results[name]["final_dir"]), batches, False)
    verdicts = print_train_table(args, results, evals, ours_rows)
    return {"results": results, "eval": evals, "eval_ours_without_position_ids": ours_rows, "verdicts": verdicts}


# ---------------------------------------------------------------------------------------------------- main
def print_targets(step_verdicts: dict, train_verdicts: dict) -> dict:
    print()
    print("== Targets (issue 18 item 7)")
    targets = {}
    for key, label in (("step tokens/s ours/gpt2", "part 1, step"), ("train tokens/s ours/gpt2", "part 2, training")):
        for verdicts in (step_verdicts, train_verdicts):
            if key in verdicts:
                ok = verdicts[key] >= TARGET_SPEEDUP_VS_GPT2
                targets[f"ours >= {TARGET_SPEEDUP_VS_GPT2}x GPT-2 tokens/s ({label})"] = (ok, f"{verdicts[key]:.2f}x")
    for name in PEERS:
        key = f"eval ppl ours - {name}"
        if key in train_verdicts:
            ok = train_verdicts[key] < 0
            targets[f"ours lower eval perplexity than {LABELS[name]}"] = (ok, f"{train_verdicts[key]:+.2f}")
    for key in ("step tokens/s ours/llama", "train tokens/s ours/llama"):
        for verdicts in (step_verdicts, train_verdicts):
            if key in verdicts:
                print(f"info  {key}: {verdicts[key]:.2f}x (no target)")
    for target, (ok, value) in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {target}: {value}")
    return {k: {"pass": ok, "value": v} for k, (ok, v) in targets.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_console()  # the runs' reports (data, packing, resume) on stderr
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"bench_clm: torch {torch.__version__}, transformers {transformers.__version__}, python "
          f"{platform.python_version()}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; work dir {work}", flush=True)
    recipe, train_texts, eval_texts, tokenizer, tokenizer_dir = prepare_tokenizer_and_texts(args, work)
    target = count_parameters(build_model("ours", recipe, tokenizer))
    widths = {name: matched_width(name, recipe, tokenizer, target) for name in PEERS if name in args.models}
    sizes = {"ours": target} | {name: count_parameters(build_model(name, recipe, tokenizer, widths[name]))
                                for name in widths}
    print("parameters: " + ", ".join(
        f"{LABELS[name]} {sizes[name]:,}" + (f" (MLP width {widths[name]})" if name in widths else " (SwiGLU 704)")
        for name in sizes), flush=True)

    output = {"args": vars(args), "params": sizes, "widths": widths, "torch": torch.__version__,
              "transformers": transformers.__version__, "threads": torch.get_num_threads()}
    step_verdicts, train_verdicts = {}, {}
    if args.step:
        print(f"part 1: step time, {args.steps} clean steps per model, alternating", flush=True)
        meter = CpuMeter()
        output["step"] = part_step_time(args, recipe, tokenizer, train_texts, widths)
        output["step"]["cpu"] = meter.stop()
        step_verdicts = print_step_table(args, output["step"])
    if args.train:
        output["train"] = part_train(args, work, recipe, tokenizer, tokenizer_dir, train_texts, eval_texts, widths)
        train_verdicts = output["train"]["verdicts"]
        if args.step:  # the step table again, next to the training table
            print_step_table(args, output["step"])
    output["targets"] = print_targets(step_verdicts, train_verdicts)
    output["total_minutes"] = (time.perf_counter() - started) / 60
    print(f"\ntotal {output['total_minutes']:.1f} min; load average now {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(output, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

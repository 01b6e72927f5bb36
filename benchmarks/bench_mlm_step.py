#!/usr/bin/env python
"""One masked-LM training step: hf_pretrain's encoder vs BERT vs ModernBERT, same process, same batches.

    HF_HUB_OFFLINE=1 python benchmarks/bench_mlm_step.py                    # defaults: a few minutes on 2 cores
    python benchmarks/bench_mlm_step.py --models ours bert --steps 10 --json out.json
    python benchmarks/bench_mlm_step.py --profile ours                       # torch.profiler of one model's step

What it does
  * Builds the models at equal dimensions (hidden, layers, heads) and as close as possible to equal parameters:
    BERT has a plain MLP of width --intermediate (4 x hidden); ours and ModernBERT have gated MLPs whose width is
    chosen (unless --gated-intermediate is given) so that our total parameter count is closest to BERT's.
    All models run fp32, SDPA attention, no dropout (BERT's 0.1 default is set to 0 so every model does the
    same work; `--models bert-dropout` adds BERT with its defaults as an extra row).
  * Batches: random token ids (no special ids) in packed blocks of --seq tokens, masked by transformers'
    DataCollatorForLanguageModeling (15% selected; 80% [MASK], 10% random, 10% unchanged; fixed seed) — the
    run_mlm.py / Trainer path. The features carry an all-ones attention_mask, as a tokenizer's output does, so
    the collator returns one and every model receives it (what Trainer passes). Every model gets the same
    tensors. With SDPA, an all-ones mask costs BERT and ours nothing (transformers turns it into None);
    ModernBERT builds a sliding-window mask for its local layers whatever is passed.
  * A step = forward with labels, backward, clip_grad_norm_(1.0), torch.optim.AdamW.step() (foreach default),
    zero_grad(set_to_none=True). Warm-up steps, then timed steps ROUND-ROBIN over the models (the order rotates
    every round), so machine noise hits all models alike. Reports the median step time and tokens/s.
  * Peak memory: each model runs in its own sub-process; we report its peak resident set size (Linux VmHWM,
    reset just before the model is built) during model build + 3 training steps, minus its RSS just before:
    weights, gradients, AdamW states, the activation peak and allocator caches — what the OS had to give.
  * Reference throughput of this machine: torch.mm on large square fp32 matrices (best of a few reps) = the
    matmul peak; plus the GEMMs of the shapes our step runs (forward, grad-input and grad-weight GEMM of every
    linear layer) and SDPA forward+backward at our attention shape.
  * FLOPs per step, counted analytically (matmuls only): 6 x (params of the encoder's linear layers) x tokens,
    + 3 x 4 x B x L^2 x C per layer for QK^T and AV (forward + backward), + the MLM head (dense C x C and decoder
    C x V) on the tokens it runs on (masked ones with sparse prediction, all tokens for BERT): 6 x N x C x (C+V).
    For ours these are all USEFUL FLOPs; achieved GFLOP/s = FLOPs / median step time, and its fraction of the
    measured matmul peak is the MFU on this CPU. ModernBERT's sliding-window layers are counted at full L^2
    (SDPA on CPU computes the masked-out scores anyway), i.e. its executed FLOPs.
  * Targets (from the issue): ours >= 1.4 x BERT tokens/s; ours >= ModernBERT tokens/s; ours useful FLOP/s
    >= 85% of the measured fp32 matmul peak. Printed as PASS/MISS, exactly as measured.
Results: benchmarks/RESULTS.md#mlm-step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from torch.nn import functional as F  # noqa: E402

transformers.logging.set_verbosity_error()

from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM  # noqa: E402

MODEL_CHOICES = ("ours", "bert", "modernbert", "modernbert-global", "bert-dropout")
DEFAULT_MODELS = ("ours", "bert", "modernbert", "modernbert-global")
LABELS = {
    "ours": "ours (PretrainEncoderForMaskedLM)",
    "bert": "BertForMaskedLM",
    "modernbert": "ModernBertForMaskedLM",
    "modernbert-global": "ModernBERT, all layers global",
    "bert-dropout": "BertForMaskedLM, dropout 0.1",
}
# special ids inside the vocabulary: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
NUM_SPECIAL = 5
NUM_DISTINCT_BATCHES = 4
# A timed step is "clean" when this process got at least this share of its threads' CPU time during it. On a quiet
# machine PyTorch's OpenMP threads are busy all step (measured 0.96-1.00); when other processes compete it drops
# to 0.3-0.6 and the step is several times slower.
CLEAN_CPU_SHARE = 0.9
UNCLEAN_REFERENCE: list[str] = []  # reference timings that never got a clean run


# ----------------------------------------------------------------------------------------------- arguments
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=1024, help="BERT's (plain) MLP width")
    parser.add_argument("--gated-intermediate", type=int, default=None,
                        help="gated MLP width of ours and ModernBERT (default: the value whose parameter count is "
                             "closest to BERT's)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mask-prob", type=float, default=0.15)
    parser.add_argument("--steps", type=int, default=12, help="timed (clean) steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--max-seconds", type=float, default=240.0,
                        help="on a busy machine, keep timing until every model has --steps clean steps or this "
                             "many seconds have passed")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--models", nargs="+", choices=MODEL_CHOICES, default=list(DEFAULT_MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-model memory sub-processes")
    parser.add_argument("--no-peak", action="store_true", help="skip the matmul-peak measurement")
    parser.add_argument("--json", metavar="OUT", help="write all results to this JSON file")
    parser.add_argument("--profile", choices=MODEL_CHOICES, default=None,
                        help="instead of the benchmark: torch.profiler of this model's step, top ops by self CPU")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--profile-rows", type=int, default=25)
    parser.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_gi", dest="gi", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------- models
def ours_config(args, gated_intermediate: int) -> PretrainEncoderConfig:
    return PretrainEncoderConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=gated_intermediate, mlp_type="gated",
        max_position_embeddings=max(args.seq, 512), pad_token_id=PAD, sparse_prediction=True,
    )


def bert_config(args, dropout: float = 0.0) -> transformers.BertConfig:
    # max_position_embeddings = seq: the learned position table is the only parameter BERT has that the
    # rotary models do not; sizing it to the sequence keeps the parameter counts comparable.
    return transformers.BertConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.intermediate, hidden_act="gelu",
        max_position_embeddings=args.seq, pad_token_id=PAD,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    )


def modernbert_config(args, gated_intermediate: int, all_global: bool = False) -> transformers.ModernBertConfig:
    extra = {"global_attn_every_n_layers": 1} if all_global else {}
    return transformers.ModernBertConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=gated_intermediate,
        max_position_embeddings=max(args.seq, 512),
        pad_token_id=PAD, bos_token_id=CLS, eos_token_id=SEP, cls_token_id=CLS, sep_token_id=SEP,
        sparse_prediction=True, **extra,
    )


def build_model(name: str, args, gated_intermediate: int) -> torch.nn.Module:
    if name == "ours":
        model = PretrainEncoderForMaskedLM._from_config(ours_config(args, gated_intermediate), attn_implementation="sdpa")
    elif name in ("bert", "bert-dropout"):
        config = bert_config(args, dropout=0.1 if name == "bert-dropout" else 0.0)
        model = transformers.BertForMaskedLM._from_config(config, attn_implementation="sdpa")
    elif name in ("modernbert", "modernbert-global"):
        config = modernbert_config(args, gated_intermediate, all_global=name == "modernbert-global")
        model = transformers.ModernBertForMaskedLM._from_config(config, attn_implementation="sdpa")
    else:
        raise ValueError(name)
    return model.float().train()


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are yielded once


def choose_gated_intermediate(args) -> tuple[int, dict]:
    """The gated width whose total parameter count (ours) is closest to BERT's. Ours is linear in it."""
    target = count_params(build_model("bert", args, 0))
    guess = round(2 * args.intermediate / 3)
    base = count_params(build_model("ours", args, guess))
    slope = 3 * args.hidden * args.layers  # up (C -> 2I) + down (I -> C), no biases
    best = guess + round((target - base) / slope)
    # Among multiples of 16 only: a ragged width (e.g. 697) runs the MLP GEMMs ~25% slower on this CPU, which
    # would handicap ours and ModernBERT alike for nothing (measured with --profile).
    aligned = [16 * (best // 16) + 16 * k for k in (-1, 0, 1, 2)]
    candidates = {gi: abs(count_params(build_model("ours", args, gi)) - target) for gi in aligned}
    best = min(candidates, key=candidates.get)
    return best, {"bert_params": target, "two_thirds_guess": guess}


# ----------------------------------------------------------------------------------------------- data
def make_collator(args, seed: int):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {"[PAD]": PAD, "[UNK]": UNK, "[CLS]": CLS, "[SEP]": SEP, "[MASK]": MASK}
    vocab.update({f"t{i}": i for i in range(NUM_SPECIAL, args.vocab)})
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="[UNK]")),
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=args.seq,
    )
    return transformers.DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=args.mask_prob, seed=seed)


def make_batches(args) -> list[dict]:
    """NUM_DISTINCT_BATCHES collated batches, identical for every model (and every sub-process)."""
    collator = make_collator(args, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(NUM_DISTINCT_BATCHES):
        ids = torch.randint(NUM_SPECIAL, args.vocab, (args.batch, args.seq), generator=generator)
        features = [{"input_ids": row.tolist(), "attention_mask": [1] * args.seq} for row in ids]
        batch = collator(features)
        batches.append({k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")})
    return batches


# ----------------------------------------------------------------------------------------------- step
def make_optimizer(model):
    return torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)


def train_step(model, optimizer, batch) -> float:
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


# ----------------------------------------------------------------------------------------------- FLOPs
def step_flops(name: str, args, gated_intermediate: int, num_masked: float) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3 x forward), counted analytically."""
    B, L, C, V, n = args.batch, args.seq, args.hidden, args.vocab, args.layers
    tokens = B * L
    if name.startswith("bert"):
        layer_linear = 4 * C * C + 2 * C * args.intermediate
        head_tokens = tokens  # BERT's head runs on every position
    else:
        gi = gated_intermediate
        layer_linear = 4 * C * C + 3 * C * gi  # qkv + out + up (C -> 2I) + down (I -> C)
        head_tokens = num_masked  # sparse prediction
    linear = 6 * layer_linear * n * tokens
    if name == "ours":
        # Our last block runs its output projection and MLP only where predictions are made: not done, not counted.
        linear -= 6 * (C * C + 3 * C * gated_intermediate) * (tokens - num_masked)
    attention = 3 * 4 * B * L * L * C * n
    head = 6 * head_tokens * C * (C + V)
    return float(linear + attention + head)


# ----------------------------------------------------------------------------------------------- machine
def best_time(fn, reps: int) -> float:
    """Best wall time of `reps` clean runs of fn (see CLEAN_CPU_SHARE); on a busy machine up to 5 x reps tries,
    then the best of whatever ran."""
    fn()
    threads = torch.get_num_threads()
    best_clean, best_any, clean = float("inf"), float("inf"), 0
    for _ in range(5 * reps):
        cpu_start, start = time.process_time(), time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        best_any = min(best_any, wall)
        if (time.process_time() - cpu_start) / (wall * threads) >= CLEAN_CPU_SHARE:
            best_clean, clean = min(best_clean, wall), clean + 1
            if clean >= reps:
                break
    if not clean:
        UNCLEAN_REFERENCE.append(getattr(fn, "__name__", "?"))
    return best_clean if clean else best_any


def matmul_peak(sizes=(2048, 4096), reps=3) -> dict:
    result = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        t = best_time(lambda: torch.mm(a, b, out=out), 3 * reps if n <= 2048 else reps)
        result[n] = 2 * n**3 / t / 1e9
    return result


def model_gemms(args, gated_intermediate: int, num_masked: int, reps=3) -> dict:
    """Forward, grad-input and grad-weight GEMM of each linear layer of our step, with nn.Linear's layouts
    (weight is (out, in)); plus SDPA forward + backward at our attention shape."""
    T, C, V, gi, n = args.batch * args.seq, args.hidden, args.vocab, gated_intermediate, args.layers
    shapes = [  # (name, rows, in, out, times per step)
        ("qkv", T, C, 3 * C, n), ("attn out", T, C, C, n), ("mlp up", T, C, 2 * gi, n), ("mlp down", T, gi, C, n),
        ("head dense", num_masked, C, C, 1), ("decoder", num_masked, C, V, 1),
    ]
    rows, total_flops, total_time = [], 0.0, 0.0
    for label, m, k, o, times in shapes:
        x, w, g = torch.randn(m, k), torch.randn(o, k), torch.randn(m, o)
        t_fwd = best_time(lambda: torch.mm(x, w.t()), reps)
        t_dx = best_time(lambda: torch.mm(g, w), reps)
        t_dw = best_time(lambda: torch.mm(g.t(), x), reps)
        flops = 3 * 2 * m * k * o
        t = t_fwd + t_dx + t_dw
        rows.append({"gemm": label, "shape": f"({m},{k})x({k},{o})", "gflops": flops / t / 1e9,
                     "fwd": 2 * m * k * o / t_fwd / 1e9, "dx": 2 * m * k * o / t_dx / 1e9, "dw": 2 * m * k * o / t_dw / 1e9,
                     "ms_per_step": 1e3 * t * times})
        total_flops += flops * times
        total_time += t * times
    # attention: SDPA forward + backward at (B, H, L, D)
    B, H, L, D = args.batch, args.heads, args.seq, C // args.heads
    q, k, v = (torch.randn(B, H, L, D, requires_grad=True) for _ in range(3))

    def sdpa_fwd_bwd():
        out = F.scaled_dot_product_attention(q, k, v)
        out.backward(torch.ones_like(out))

    t_attn = best_time(sdpa_fwd_bwd, reps)
    attn_flops = 3 * 4 * B * L * L * C
    rows.append({"gemm": "sdpa fwd+bwd", "shape": f"({B},{H},{L},{D})", "gflops": attn_flops / t_attn / 1e9,
                 "ms_per_step": 1e3 * t_attn * n})
    return {"rows": rows, "linear_gflops": total_flops / total_time / 1e9, "linear_ms_per_step": 1e3 * total_time,
            "attention_ms_per_step": 1e3 * t_attn * n,
            "matmul_only_ms_per_step": 1e3 * (total_time + t_attn * n)}


# ----------------------------------------------------------------------------------------------- memory
def rss_kib(field: str) -> int:
    """VmRSS (current) or VmHWM (peak) of this process, from /proc/self/status (Linux). ru_maxrss is not usable
    here: a sub-process inherits its parent's high-water mark across fork + exec."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def memory_child(args) -> None:
    """Runs in a sub-process: peak RSS growth from just before building the model to after 3 steps."""
    batches = make_batches(args)
    before = rss_kib("VmRSS")
    reset_peak_rss()
    model = build_model(args.memory_child, args, args.gi)
    optimizer = make_optimizer(model)
    built = rss_kib("VmHWM")
    for i in range(3):
        train_step(model, optimizer, batches[i % len(batches)])
    after = rss_kib("VmHWM")
    print(json.dumps({"before_kib": before, "built_kib": built, "peak_kib": after}))


def measure_memory(name: str, args, gated_intermediate: int) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", name, "--_gi", str(gated_intermediate)]
    for flag in ("hidden", "layers", "heads", "intermediate", "vocab", "seq", "batch", "seed"):
        cmd += [f"--{flag}", str(getattr(args, flag))]
    cmd += ["--mask-prob", str(args.mask_prob)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  memory sub-process for {name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"peak_rss_growth_mb": (data["peak_kib"] - data["before_kib"]) / 1024,
            "step_rss_growth_mb": (data["peak_kib"] - data["built_kib"]) / 1024}


# ----------------------------------------------------------------------------------------------- profile
GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}


def run_profile(args, gated_intermediate: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    name = args.profile
    batches = make_batches(args)
    model = build_model(name, args, gated_intermediate)
    optimizer = make_optimizer(model)
    for i in range(max(2, args.warmup)):
        train_step(model, optimizer, batches[i % len(batches)])
    steps = args.profile_steps
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            train_step(model, optimizer, batches[i % len(batches)])
    wall = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events) / steps / 1e3  # ms per step
    print(f"profile of {LABELS[name]}: {steps} steps, {wall * 1e3:.0f} ms/step wall under the profiler, "
          f"{total_self:.0f} ms/step of op self-CPU time (summed over {torch.get_num_threads()} threads' caller)")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.profile_rows, max_name_column_width=48))
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS) / steps / 1e3
    print(f"GEMM ops ({', '.join(sorted(GEMM_OPS))}): {gemm:.1f} ms/step ({100 * gemm / total_self:.1f}% of self CPU)")
    print("top non-GEMM ops, ms/step and % of self CPU:")
    others = sorted((e for e in events if e.key not in GEMM_OPS), key=lambda e: e.self_cpu_time_total, reverse=True)
    for e in others[: args.profile_rows]:
        ms = e.self_cpu_time_total / steps / 1e3
        print(f"  {e.key:<52} {ms:8.1f} ms  {100 * ms / total_self:5.1f}%  calls/step {e.count / steps:g}")


# ----------------------------------------------------------------------------------------------- main
def fmt_int(n: float) -> str:
    return f"{n / 1e6:.3f}M"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.memory_child:
        memory_child(args)
        return 0

    gated_intermediate, choice_info = (
        (args.gated_intermediate, {}) if args.gated_intermediate else choose_gated_intermediate(args)
    )
    if args.profile:
        run_profile(args, gated_intermediate)
        return 0

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    print(f"hidden {args.hidden}, layers {args.layers}, heads {args.heads}, BERT intermediate {args.intermediate}, "
          f"gated intermediate {gated_intermediate}"
          + (f" (2/3 x {args.intermediate} = {choice_info['two_thirds_guess']}; chosen for the closest parameter count)"
             if choice_info else "")
          + f", vocab {args.vocab}, seq {args.seq}, batch {args.batch}, mask prob {args.mask_prob}")

    batches = make_batches(args)
    masked = [int((b["labels"] != -100).sum()) for b in batches]
    mean_masked = sum(masked) / len(masked)
    print(f"batches: {len(batches)} distinct, DataCollatorForLanguageModeling (seed {args.seed}), attention_mask all "
          f"ones passed to every model; masked tokens per batch {masked} (mean {mean_masked / (args.batch * args.seq):.1%})")

    models, optimizers, params, attn = {}, {}, {}, {}
    for name in args.models:
        torch.manual_seed(args.seed)
        models[name] = build_model(name, args, gated_intermediate)
        optimizers[name] = make_optimizer(models[name])
        params[name] = count_params(models[name])
        attn[name] = models[name].config._attn_implementation
    embedding_params = {name: sum(p.numel() for n, p in models[name].named_parameters() if "embeddings" in n)
                        for name in models}
    print("parameters: " + ", ".join(
        f"{name} {fmt_int(params[name])} ({fmt_int(params[name] - embedding_params[name])} non-embedding, attn={attn[name]})"
        for name in models))

    # --- machine reference
    peak, gemms, reference_busy, gemms_busy = {}, None, False, False
    if not args.no_peak:
        peak = matmul_peak()
        reference_busy = bool(UNCLEAN_REFERENCE)
        UNCLEAN_REFERENCE.clear()
        gemms = model_gemms(args, gated_intermediate, round(mean_masked))
        gemms_busy = bool(UNCLEAN_REFERENCE)
        print("fp32 torch.mm peak: " + ", ".join(f"{n}^2: {g:.1f} GFLOP/s" for n, g in peak.items()))
        print("our step's GEMM shapes (fwd + grad-input + grad-weight, best of 3):")
        for row in gemms["rows"]:
            extra = (f"  [fwd {row['fwd']:.0f}, dx {row['dx']:.0f}, dw {row['dw']:.0f}]" if "fwd" in row else "")
            print(f"  {row['gemm']:<13} {row['shape']:<22} {row['gflops']:7.1f} GFLOP/s  {row['ms_per_step']:7.1f} ms/step{extra}")
        print(f"  => linear layers {gemms['linear_gflops']:.1f} GFLOP/s; matmuls alone would take "
              f"{gemms['matmul_only_ms_per_step']:.0f} ms/step (linear {gemms['linear_ms_per_step']:.0f} + "
              f"attention {gemms['attention_ms_per_step']:.0f})"
              + ("  (UNRELIABLE: some of these never got a clean run)" if gemms_busy else ""))
    peak_gflops = max(peak.values()) if peak else None

    # --- warm-up, then round-robin timing
    names = list(models)
    losses = {name: [] for name in names}
    for i in range(args.warmup):
        for name in names:
            losses[name].append(train_step(models[name], optimizers[name], batches[i % len(batches)]))
    times = {name: [] for name in names}
    cpu_share = {name: [] for name in names}  # process CPU time / (wall x threads): < ~0.9 means others ran too
    threads = torch.get_num_threads()
    # Rounds go on until every model has --steps CLEAN steps (cpu share >= CLEAN_CPU_SHARE: nobody else ran) or
    # --max-seconds have passed; on a quiet machine that is exactly --steps rounds.
    timing_start, i = time.perf_counter(), 0
    while True:
        clean = min(sum(c >= CLEAN_CPU_SHARE for c in cpu_share[name]) for name in names)
        if clean >= args.steps or (i >= args.steps and time.perf_counter() - timing_start > args.max_seconds):
            break
        order = names[i % len(names):] + names[: i % len(names)]  # rotate who goes first
        batch = batches[(args.warmup + i) % len(batches)]
        i += 1
        for name in order:
            cpu_start, start = time.process_time(), time.perf_counter()
            losses[name].append(train_step(models[name], optimizers[name], batch))
            wall = time.perf_counter() - start
            times[name].append(wall)
            cpu_share[name].append((time.process_time() - cpu_start) / (wall * threads))
    del models, optimizers

    if peak:  # measure the peak again after the timed steps and keep the best: a busy moment only lowers it
        UNCLEAN_REFERENCE.clear()
        peak_after = matmul_peak()
        print("fp32 torch.mm peak after the timed steps: " + ", ".join(f"{n}^2: {g:.1f}" for n, g in peak_after.items()))
        peak = {n: max(peak[n], peak_after[n]) for n in peak}
        peak_gflops = max(peak.values())
        reference_busy = reference_busy and bool(UNCLEAN_REFERENCE)

    # --- memory, one sub-process per model (after timing, so it does not disturb it)
    memory = {}
    if not args.no_memory:
        for name in names:
            memory[name] = measure_memory(name, args, gated_intermediate)

    # --- results
    tokens = args.batch * args.seq
    results = {}
    rounds = i
    for name in names:
        clean_times = [t for t, c in zip(times[name], cpu_share[name]) if c >= CLEAN_CPU_SHARE]
        reliable = len(clean_times) >= 3
        median = statistics.median(clean_times if reliable else times[name])
        flops = step_flops(name, args, gated_intermediate, mean_masked)
        results[name] = {
            "label": LABELS[name], "params": params[name], "median_step_s": median,
            "min_step_s": min(times[name]), "max_step_s": max(times[name]),
            "tokens_per_s": tokens / median, "step_gflop": flops / 1e9, "gflops": flops / median / 1e9,
            "frac_of_peak": (flops / median / 1e9 / peak_gflops) if peak_gflops else None,
            "first_loss": losses[name][0], "last_loss": losses[name][-1],
            "median_cpu_share": statistics.median(cpu_share[name]),
            "clean_steps": len(clean_times), "timed_steps": len(times[name]), "reliable": reliable,
            **(memory.get(name) or {}),
        }

    print()
    header = (f"{'model':<32} {'params':>8} {'step ms':>8} {'(min-max)':>11} {'tokens/s':>9} {'ours/x':>7} "
              f"{'GFLOP':>6} {'GFLOP/s':>8} {'%peak':>6} {'RSS MB':>7} {'clean':>6} {'loss':>11}")
    print(header)
    print("-" * len(header))
    for name in names:
        r = results[name]
        ratio = (results["ours"]["tokens_per_s"] / r["tokens_per_s"]) if "ours" in results else float("nan")
        pct = f"{100 * r['frac_of_peak']:.0f}%" if r["frac_of_peak"] is not None else "-"
        rss = f"{r['peak_rss_growth_mb']:.0f}" if "peak_rss_growth_mb" in r else "-"
        spread = f"{1e3 * r['min_step_s']:.0f}-{1e3 * r['max_step_s']:.0f}"
        clean = f"{r['clean_steps']}/{r['timed_steps']}"
        print(f"{r['label']:<32} {fmt_int(r['params']):>8} {1e3 * r['median_step_s']:8.0f} "
              f"{spread:>11} {r['tokens_per_s']:9.0f} "
              f"{ratio:7.2f} {r['step_gflop']:6.1f} {r['gflops']:8.1f} {pct:>6} {rss:>7} {clean:>6} "
              f"{r['first_loss']:5.2f}>{r['last_loss']:5.2f}")
    print(f"step = fwd+bwd+clip+AdamW+zero_grad, fp32, median of the clean steps of {rounds} round-robin rounds "
          f"after {args.warmup} warm-up; ours/x = our tokens/s over the row's; GFLOP = matmul FLOPs per step (ours: useful FLOPs)"
          + (f"; %peak = of the best torch.mm ({peak_gflops:.1f} GFLOP/s)" if peak_gflops else ""))
    print("RSS MB = peak RSS (VmHWM) of a sub-process over model build + 3 steps, minus its RSS before the build "
          "(weights + grads + AdamW states + activation peak + allocator caches)")
    print(f"clean = steps during which this process got >= {CLEAN_CPU_SHARE:.0%} of {threads} threads' CPU time "
          "(nobody else ran); medians use only those")
    busy = not all(r["reliable"] for r in results.values())
    if busy:
        print("WARNING: fewer than 3 clean steps for some model: the machine was busy and its median is unreliable. "
              "Ratios at the fastest step of each model: " + ", ".join(
                  f"ours/{name} {min(times[name]) / min(times['ours']):.2f}" for name in names if name != "ours"
                  and "ours" in names))

    # --- targets
    targets = {}
    if "ours" in results:
        ours = results["ours"]
        if "bert" in results:
            ratio = ours["tokens_per_s"] / results["bert"]["tokens_per_s"]
            targets["ours >= 1.4x BERT tokens/s"] = (ratio >= 1.4, f"{ratio:.2f}x")
        if "modernbert" in results:
            ratio = ours["tokens_per_s"] / results["modernbert"]["tokens_per_s"]
            targets["ours >= ModernBERT tokens/s"] = (ratio >= 1.0, f"{ratio:.2f}x")
        if peak_gflops:
            targets["ours useful FLOP/s >= 85% of fp32 matmul peak"] = (
                ours["frac_of_peak"] >= 0.85, f"{100 * ours['frac_of_peak']:.1f}% ({ours['gflops']:.1f} of {peak_gflops:.1f} GFLOP/s)"
                + ("  (UNRELIABLE: the peak never got a clean measurement)" if reference_busy else ""))
        if gemms and not gemms_busy:
            ideal = gemms["matmul_only_ms_per_step"]
            print(f"our step {1e3 * ours['median_step_s']:.0f} ms vs {ideal:.0f} ms for its GEMMs + SDPA alone at the "
                  f"measured shape throughput: {1e3 * ours['median_step_s'] - ideal:.0f} ms/step "
                  f"({100 * (1 - ideal / (1e3 * ours['median_step_s'])):.0f}%) is everything else")
    for target, (ok, value) in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {target}: {value}" + ("  (UNRELIABLE: busy machine)" if busy else ""))

    if args.json:
        with open(args.json, "w") as handle:
            json.dump({
                "args": {k: v for k, v in vars(args).items() if k not in ("memory_child", "gi")},
                "gated_intermediate": gated_intermediate, "threads": torch.get_num_threads(),
                "torch": torch.__version__, "transformers": transformers.__version__,
                "masked_per_batch": masked, "matmul_peak_gflops": peak, "gemms": gemms, "results": results,
                "step_times_s": times, "cpu_share": cpu_share, "machine_busy": busy, "reference_busy": reference_busy, "targets": {k: {"pass": ok, "value": v} for k, (ok, v) in targets.items()},
            }, handle, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The GPU checks (issue item 7) in one command: speed and MFU at BERT-base size, attention kernels, FSDP2
checkpoints on one GPU, the fp16 non-finite-step guard. `benchmarks/gpu_check.sh` runs this file.

    bash benchmarks/gpu_check.sh                                    # on one H100/H200, under 8 minutes
    python benchmarks/gpu_check.py --tiny --device cpu --out x.json # every part, tiny models, fp32 (the tests)
    python benchmarks/gpu_check.py --parts speed,attention --compile

Each part runs in its own sub-process with a hard time limit (a hang or a CUDA fault costs that part only), and the
results file is rewritten after every part. Nothing is downloaded: models are built from configs, inputs are random
ids, and the fp16 part's run uses the package's built-in corpus.

Parts
  speed      Our `mlm-base` encoder (recipes/mlm-base.yaml's config) vs `BertForMaskedLM` and `ModernBertForMaskedLM`
             at equal hidden size, layers, heads, MLP weights (BERT's plain 3072 = the gated 2048 of ours and
             ModernBERT in weights) and vocabulary; the same batches (packed rows, a fixed number of masked positions,
             80/10/10 replacement); bf16 autocast with fp32 weights and fused AdamW as the loop runs it on a GPU;
             forward + backward + clip + step, turns rotating between the models after warm-up. Tokens/s, and MFU =
             the FLOPs hf_pretrain's loop logs for each model (ours: `training_flops`; transformers models:
             `objectives.transformers_flops`: 6 x linear weights x tokens, the MLM head on the masked tokens only,
             attention over the whole row) / step time / the datasheet peak (`training.metrics.peak_tflops`).
             A row "ours, packed documents" adds per-document position ids (what training feeds it): the cost of
             the block-diagonal attention mask. Targets: ours >= 45% MFU, ours >= 1.5x ModernBERT's tokens/s.
  attention  Our encoder and our decoder, each with the same weights, on packed documents (position ids restarting
             inside a row: the varlen path of flash attention) and on right-padded rows: outputs of sdpa and of
             flash_attention_2/3 (where installed) against eager. On a GPU the reference is eager in fp32 and every
             implementation runs under bf16 autocast; the tolerance is 2x the error eager itself makes in bf16
             (a kernel that rounds differently stays inside it, a token reading across a document or into padding
             does not). In fp32 (CPU) the tolerance is 1e-4. Also: a packed row equals its documents run one by one.
  fsdp       FSDP2 (`fully_shard`) on a 1-process group (nccl on a GPU, gloo on the CPU) through
             hf_pretrain.training.checkpoint: train 2 steps, save, train on (the uninterrupted run); a fresh sharded
             model with other weights resumes from the checkpoint: weights and optimizer state equal, then the same
             losses for the next steps.
  fp16       hf_pretrain's loop (`Pretraining`, a tiny mlm recipe on the built-in corpus) with an inf injected into
             the loss of one step: that step is skipped (weights and optimizer state untouched), the run goes on
             without an error, and a GradScaler lowers its scale. On a GPU: precision fp16, Accelerate's own scaler.
             On a CPU Accelerate runs fp16 as fp32 without a scaler, so the part runs twice: as Accelerate does, and
             with a CPU GradScaler put where Accelerate keeps its own (the code path a GPU takes).
DeepSpeed ZeRO-2 is not checked: DeepSpeed support is being removed from the package (it could not be verified).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARTS = ("speed", "attention", "fsdp", "fp16")
# Seconds each part may take on a GPU (sum 425 s: with start-up the whole run stays under 8 minutes).
PART_TIMEOUTS = {"speed": 200, "attention": 90, "fsdp": 60, "fp16": 75}
TINY_PART_TIMEOUT = 180  # a shared 2-core CPU: generous, the tiny parts take seconds
DEFAULT_BUDGET_SECONDS = 450
MFU_TARGET = 0.45
MODERNBERT_SPEED_TARGET = 1.5
FP32_TOLERANCE = 1e-4
BF16_TOLERANCE_FACTOR = 2.0
PAD, CLS, SEP, MASK, NUM_SPECIAL = 0, 2, 3, 4, 5
NUM_DISTINCT_BATCHES = 4


# ----------------------------------------------------------------------------------------------- arguments
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {','.join(PARTS)}")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--tiny", action="store_true", help="tiny models and batches (the CPU tests)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (a .md table beside it); default $OUT/gpu_check.json when $OUT is set, "
                             "else benchmarks/gpu_check_results.json")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS,
                        help="seconds for all parts together; a part gets the smaller of its own limit and what "
                             "is left")
    parser.add_argument("--part-timeout", type=float, default=None, help="one limit (seconds) for every part")
    parser.add_argument("--compile", action="store_true", help="speed: torch.compile every model")
    parser.add_argument("--mask-prob", type=float, default=0.15, help="speed: share of positions masked")
    parser.add_argument("--batch", type=int, default=None, help="speed: rows per step (default: the recipe's 64)")
    parser.add_argument("--rounds", type=int, default=None, help="speed: timed turns per model")
    parser.add_argument("--_run-part", dest="run_part", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_part-out", dest="part_out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    if args.out is None:
        args.out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else \
            REPO / "benchmarks" / "gpu_check_results.json"
    return args


def pick_device(args) -> torch.device:
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return torch.device(args.device)


def check(name: str, value, target: str, passed: bool | None) -> dict:
    """One figure against its target; passed None = could not be judged (e.g. unknown device peak)."""
    return {"name": name, "value": value, "target": target, "passed": passed}


# ----------------------------------------------------------------------------------------------- inputs
def packed_position_ids(batch: int, length: int, generator: torch.Generator, shortest: int) -> torch.Tensor:
    """(B, L) positions restarting at 0 at each document of a packed row: documents of random lengths in
    [shortest, L/2], so every row holds several."""
    rows = []
    for _ in range(batch):
        positions = []
        while len(positions) < length:
            size = int(torch.randint(shortest, max(shortest + 1, length // 2), (1,), generator=generator))
            positions.extend(range(size))
        rows.append(positions[:length])
    return torch.tensor(rows)


def masked_batch(batch: int, length: int, vocab: int, mask_prob: float, generator: torch.Generator) -> dict:
    """Random ids with exactly round(mask_prob x B x L) positions selected (every batch the same count, so
    sparse-prediction shapes do not change between steps); 80% become [MASK], 10% a random id, 10% stay."""
    ids = torch.randint(NUM_SPECIAL, vocab, (batch, length), generator=generator)
    count = max(1, round(mask_prob * batch * length))
    chosen = torch.randperm(batch * length, generator=generator)[:count]
    labels = torch.full((batch * length,), -100, dtype=torch.long)
    labels[chosen] = ids.view(-1)[chosen]
    inputs = ids.view(-1).clone()
    roll = torch.rand(count, generator=generator)
    inputs[chosen[roll < 0.8]] = MASK
    random_ones = chosen[(roll >= 0.8) & (roll < 0.9)]
    inputs[random_ones] = torch.randint(NUM_SPECIAL, vocab, (len(random_ones),), generator=generator)
    return {"input_ids": inputs.view(batch, length), "labels": labels.view(batch, length)}


# ----------------------------------------------------------------------------------------------- part: speed
def speed_sizes(args) -> dict:
    """The recipe's encoder (mlm-base) or a tiny one; BERT's plain MLP width 1.5x the gated width = equal weights."""
    from hf_pretrain.recipe import load_recipe

    if args.tiny:
        sizes = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                 "max_position_embeddings": 64, "vocab_size": 512, "seq": 64, "batch": 4, "recipe_mask_prob": None}
    else:
        recipe = load_recipe("mlm-base")
        sizes = {**recipe.model.config, "vocab_size": recipe.tokenizer.vocab_size, "seq": recipe.data.block_size,
                 "batch": recipe.train.batch_size, "recipe_mask_prob": recipe.masking.mlm_probability}
    if args.batch:
        sizes["batch"] = args.batch
    sizes["bert_intermediate_size"] = sizes["intermediate_size"] * 3 // 2
    return sizes


def speed_models(sizes: dict) -> dict:
    import transformers

    from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM

    common = {"vocab_size": sizes["vocab_size"], "hidden_size": sizes["hidden_size"],
              "num_hidden_layers": sizes["num_hidden_layers"], "num_attention_heads": sizes["num_attention_heads"]}
    ours = PretrainEncoderForMaskedLM._from_config(
        PretrainEncoderConfig(**common, intermediate_size=sizes["intermediate_size"],
                              max_position_embeddings=sizes["max_position_embeddings"], pad_token_id=PAD,
                              sparse_prediction=True),
        attn_implementation="sdpa")
    # Dropout 0 for BERT as for the others (their defaults): every model does the same work.
    bert = transformers.BertForMaskedLM._from_config(
        transformers.BertConfig(**common, intermediate_size=sizes["bert_intermediate_size"], hidden_act="gelu",
                                max_position_embeddings=sizes["seq"], pad_token_id=PAD,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        attn_implementation="sdpa")
    modernbert = transformers.ModernBertForMaskedLM._from_config(
        transformers.ModernBertConfig(**common, intermediate_size=sizes["intermediate_size"],
                                      max_position_embeddings=max(sizes["seq"], 512), pad_token_id=PAD,
                                      bos_token_id=CLS, eos_token_id=SEP, cls_token_id=CLS, sep_token_id=SEP,
                                      sparse_prediction=True),
        attn_implementation="sdpa")
    return {"ours": ours, "BertForMaskedLM": bert, "ModernBertForMaskedLM": modernbert}


def run_speed(args, device: torch.device) -> dict:
    from hf_pretrain.training.metrics import peak_tflops
    from hf_pretrain.training.objectives.stock import transformers_flops

    sizes = speed_sizes(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    warmup = 2 if args.tiny else 5
    rounds = args.rounds or (3 if args.tiny else 8)
    steps_per_turn = 2 if args.tiny else 5
    generator = torch.Generator().manual_seed(0)
    batch, seq = sizes["batch"], sizes["seq"]
    batches = [masked_batch(batch, seq, sizes["vocab_size"], args.mask_prob, generator)
               for _ in range(NUM_DISTINCT_BATCHES)]
    positions = packed_position_ids(batch, seq, generator, shortest=max(8, seq // 16))
    tokens = batch * seq
    predicted = int((batches[0]["labels"] != -100).sum())

    models = speed_models(sizes)
    raw = dict(models)
    print(f"speed: models built ({sizes['hidden_size']} hidden, {sizes['num_hidden_layers']} layers), batch "
          f"{batch} x {seq}, {predicted} masked", flush=True)  # progress, for the part's log
    rows = {"ours": "ours", "ours, packed documents": "ours", "BertForMaskedLM": "BertForMaskedLM",
            "ModernBertForMaskedLM": "ModernBertForMaskedLM"}
    inputs = {}  # row -> the batches it is fed, on the device
    for row, name in rows.items():
        extra = {"position_ids": positions} if row == "ours, packed documents" else {}
        # The transformers models get the all-ones attention_mask a Trainer passes; ours what its collator gives.
        if name != "ours":
            extra = {"attention_mask": torch.ones(batch, seq, dtype=torch.long)}
        inputs[row] = [{k: v.to(device) for k, v in {**b, **extra}.items()} for b in batches]
    optimizers = {}
    for name, model in models.items():
        model.to(device).train()
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01,
                                             fused=device.type == "cuda")
        if args.compile:
            models[name] = torch.compile(model)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(row: str, index: int) -> torch.Tensor:
        name = rows[row]
        model, optimizer = models[name], optimizers[name]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(**inputs[row][index % NUM_DISTINCT_BATCHES]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    started = time.perf_counter()
    losses = {}
    for row in rows:
        for index in range(warmup):
            losses[row] = step(row, index)
    synchronize()
    warmup_seconds = time.perf_counter() - started
    print(f"speed: warm-up done in {warmup_seconds:.0f} s; timing {rounds} rounds", flush=True)
    step_times = {row: [] for row in rows}
    peak_activation_gb = {row: 0.0 for row in rows}
    order = list(rows)
    for round_index in range(rounds):
        for row in order[round_index % len(order):] + order[:round_index % len(order)]:
            synchronize()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                resident = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            for index in range(steps_per_turn):
                losses[row] = step(row, round_index * steps_per_turn + index)
            synchronize()
            step_times[row].append((time.perf_counter() - start) / steps_per_turn)
            if device.type == "cuda":
                peak = (torch.cuda.max_memory_allocated(device) - resident) / 2**30
                peak_activation_gb[row] = max(peak_activation_gb[row], peak)

    peak, peak_source = peak_tflops(device, "bf16" if dtype == torch.bfloat16 else "fp32")
    results = {}
    for row, name in rows.items():
        model = raw[name]
        flops = (model.training_flops(tokens, predicted, seq) if name == "ours"
                 else transformers_flops(model, tokens, predicted, seq))
        seconds = statistics.median(step_times[row])
        results[row] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "step_seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "tflops_per_step": flops / 1e12,
            "mfu": flops / seconds / (peak * 1e12) if math.isfinite(peak) else None,
            "last_loss": float(losses[row]),
            "peak_activation_gb": peak_activation_gb[row] if device.type == "cuda" else None,
        }
    # Ours under the transformers models' counting (its last block's skipped work counted as done): the MFU it
    # would show if it did that work in the same time.
    ours_peer_flops = transformers_flops(raw["ours"], tokens, predicted, seq)
    results["ours"]["mfu_counted_like_transformers"] = (
        ours_peer_flops / results["ours"]["step_seconds"] / (peak * 1e12) if math.isfinite(peak) else None)

    ours = results["ours"]
    mfu = ours["mfu"]
    ratio_modernbert = ours["tokens_per_s"] / results["ModernBertForMaskedLM"]["tokens_per_s"]
    checks = [
        check("ours MFU", mfu, f">= {MFU_TARGET:.0%}", None if mfu is None else mfu >= MFU_TARGET),
        check("ours / ModernBERT tokens/s", ratio_modernbert, f">= {MODERNBERT_SPEED_TARGET}",
              ratio_modernbert >= MODERNBERT_SPEED_TARGET),
    ]
    figures = {
        "models": results,
        "ours_over_bert_tokens_per_s": ours["tokens_per_s"] / results["BertForMaskedLM"]["tokens_per_s"],
        "ours_over_modernbert_tokens_per_s": ratio_modernbert,
        "parameters_relative_to_ours": {row: r["parameters"] / ours["parameters"] for row, r in results.items()},
        "peak_tflops": peak, "peak_source": peak_source, "dtype": str(dtype).replace("torch.", ""),
        "batch": batch, "seq": seq, "tokens_per_step": tokens, "masked_per_step": predicted,
        "sizes": sizes, "compiled": args.compile, "warmup_steps": warmup, "timed_steps": rounds * steps_per_turn,
        "warmup_seconds": warmup_seconds,
    }
    notes = ["MFU counts each model's useful FLOPs as hf_pretrain's loop logs them (MLM head on masked tokens "
             "only; ModernBERT's local-attention layers counted at full row length, as SDPA computes them)."]
    if sizes.get("recipe_mask_prob") not in (None, args.mask_prob):
        notes.append(f"masked {args.mask_prob:.0%} of positions (BERT's rate); the mlm-base recipe trains at "
                     f"{sizes['recipe_mask_prob']:.0%} (--mask-prob)")
    if all(c["passed"] for c in checks):
        status = "pass"
    else:
        status = "miss"
    return {"status": status, "figures": figures, "checks": checks, "notes": notes}


# ----------------------------------------------------------------------------------------------- part: attention
def flash_implementations(device: torch.device) -> dict:
    """attn_implementation -> None if it can run here, else why not. Only local packages: transformers' fallback
    to a Hub kernel (the `kernels` package) would download, so a missing flash_attn is reported, not replaced."""
    import importlib.util

    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    found = {}
    for name, package, available in (("flash_attention_2", "flash_attn", is_flash_attn_2_available),
                                     ("flash_attention_3", "flash_attn_interface", is_flash_attn_3_available)):
        if importlib.util.find_spec(package) is None:
            found[name] = f"skipped: {package} not installed"
        elif device.type != "cuda":
            found[name] = "skipped: needs a CUDA device"
        elif not available():
            found[name] = f"skipped: {package} is installed but transformers cannot use it on this device"
        else:
            found[name] = None
    return found


def attention_models(args) -> dict:
    from hf_pretrain.models import (
        PretrainDecoderConfig,
        PretrainDecoderForCausalLM,
        PretrainEncoderConfig,
        PretrainEncoderForMaskedLM,
    )
    from hf_pretrain.recipe import load_recipe

    torch.manual_seed(0)
    if args.tiny:
        tiny = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                "max_position_embeddings": 64, "vocab_size": 256}
        return {"encoder": (PretrainEncoderForMaskedLM(PretrainEncoderConfig(**tiny)).model, 48, 3),
                "decoder": (PretrainDecoderForCausalLM(PretrainDecoderConfig(**tiny)).model, 48, 3)}
    encoder = load_recipe("mlm-base")
    decoder = load_recipe("clm-base")
    return {
        "encoder": (PretrainEncoderForMaskedLM(PretrainEncoderConfig(
            **encoder.model.config, vocab_size=encoder.tokenizer.vocab_size)).model, encoder.data.block_size, 4),
        "decoder": (PretrainDecoderForCausalLM(PretrainDecoderConfig(
            **decoder.model.config, vocab_size=decoder.tokenizer.vocab_size)).model, decoder.data.block_size, 4),
    }


def attention_inputs(length: int, batch: int, vocab: int) -> dict:
    """'packed': documents back to back, positions restarting (no padding); 'padded': one document per row, right
    padding of different lengths. Each with the (B, L) bool of positions whose outputs are compared."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(NUM_SPECIAL, vocab, (batch, length), generator=generator)
    positions = packed_position_ids(batch, length, generator, shortest=max(4, length // 16))
    lengths = torch.tensor([length - (row * length) // (batch + 1) for row in range(batch)])
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return {
        "packed": ({"input_ids": ids, "position_ids": positions}, torch.ones(batch, length, dtype=torch.bool)),
        "padded": ({"input_ids": ids, "attention_mask": attention_mask}, attention_mask.bool()),
    }


def run_attention(args, device: torch.device) -> dict:
    low_precision = device.type == "cuda"
    if low_precision:  # the fp32 reference really in fp32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    flash = flash_implementations(device)
    implementations = ["eager", "sdpa"] + [name for name, reason in flash.items() if reason is None]
    figures, checks = {"implementations": implementations, "unavailable": {k: v for k, v in flash.items() if v},
                       "precision": "bf16 autocast vs fp32 eager" if low_precision else "fp32"}, []

    def outputs(model, inputs, implementation: str, bf16: bool) -> torch.Tensor:
        model.set_attn_implementation(implementation)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            kwargs = {"use_cache": False} if hasattr(model.config, "use_cache") else {}
            return model(**{k: v.to(device) for k, v in inputs.items()}, **kwargs).last_hidden_state.float()

    for family, (model, length, batch) in attention_models(args).items():
        model.to(device).eval()
        for layout, (inputs, compared) in attention_inputs(length, batch, model.config.vocab_size).items():
            compared = compared.to(device)
            reference = outputs(model, inputs, "eager", bf16=False)
            key = f"{family}/{layout}"
            errors = {}
            if low_precision:
                eager_error = (outputs(model, inputs, "eager", bf16=True) - reference)[compared].abs().max().item()
                tolerance = BF16_TOLERANCE_FACTOR * eager_error
                errors["eager"] = eager_error
            else:
                tolerance = FP32_TOLERANCE
            for implementation in implementations:
                if implementation == "eager":
                    continue
                try:
                    error = (outputs(model, inputs, implementation, low_precision) - reference)[compared]
                    errors[implementation] = error.abs().max().item()
                    checks.append(check(f"{key} {implementation} max abs diff vs fp32 eager", errors[implementation],
                                        f"<= {tolerance:.3g}", errors[implementation] <= tolerance))
                except Exception as error:  # a kernel refusing this input is a finding, not the end of the part
                    errors[implementation] = f"{type(error).__name__}: {error}"
                    checks.append(check(f"{key} {implementation}", errors[implementation], "runs", False))
            figures[key] = {"max_abs_diff": errors, "tolerance": tolerance,
                            "reference_max_abs": reference[compared].abs().max().item()}
            if layout == "packed":  # isolation: each document of row 0 alone, in fp32 eager, gives the same outputs
                row_positions = inputs["position_ids"][0]
                starts = (row_positions == 0).nonzero().flatten().tolist() + [length]
                worst = 0.0
                for start, end in zip(starts[:-1], starts[1:]):
                    alone = {"input_ids": inputs["input_ids"][:1, start:end],
                             "position_ids": row_positions[None, start:end]}
                    worst = max(worst, (outputs(model, alone, "eager", bf16=False)[0]
                                        - reference[0, start:end]).abs().max().item())
                figures[key]["documents_alone_max_abs_diff"] = worst
                checks.append(check(f"{key} eager fp32: packed row = its documents one by one", worst,
                                    f"<= {FP32_TOLERANCE:g}", worst <= FP32_TOLERANCE))
        model.to("cpu")
    status = "pass" if all(c["passed"] for c in checks) else "fail"
    notes = [f"{name}: {reason}" for name, reason in flash.items() if reason]
    notes.append("flex_attention: not checked (our models do not declare flex support); paged|eager: a "
                 "generation cache layout, not a training path; Hub kernels (`kernels` package): need a download.")
    return {"status": status, "figures": figures, "checks": checks, "notes": notes}


# ----------------------------------------------------------------------------------------------- part: fsdp
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_fsdp(args, device: torch.device) -> dict:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM
    from hf_pretrain.training.checkpoint import (
        TrainerState,
        is_sharded,
        load_model_weights,
        optimizer_from_files,
        save_checkpoint,
    )

    if args.tiny:
        sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                 "max_position_embeddings": 32, "vocab_size": 128}
        batch, length = 4, 16
    else:
        sizes = {"hidden_size": 768, "num_hidden_layers": 4, "num_attention_heads": 12, "intermediate_size": 2048,
                 "max_position_embeddings": 512, "vocab_size": 32768}
        batch, length = 8, 512
    bf16 = device.type == "cuda"
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"})
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    dist.init_process_group(backend)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_fsdp_"))
    try:
        mesh = init_device_mesh(device.type, (1,))

        def sharded_model(seed: int):
            torch.manual_seed(seed)
            model = PretrainEncoderForMaskedLM(PretrainEncoderConfig(**sizes)).to(device).train()
            for layer in model.model.layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            decayed = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embeddings" not in n]
            other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embeddings" not in n)]
            optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": other,
                                           "weight_decay": 0.0}], lr=1e-3)
            return model, optimizer

        generator = torch.Generator().manual_seed(2)
        batches = {step: {k: v.to(device) for k, v in masked_batch(batch, length, sizes["vocab_size"], 0.15,
                                                                  generator).items()} for step in range(1, 5)}

        def train_step(model, optimizer, step: int) -> float:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batches[step]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.item()

        def full_tensors(model, optimizer) -> dict:
            def whole(tensor):
                return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().cpu().clone()

            tensors = {f"weights/{n}": whole(p) for n, p in model.named_parameters()}
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            for index, parameter in enumerate(parameters):
                for name, value in optimizer.state[parameter].items():
                    tensors[f"optimizer/{index}/{name}"] = whole(value)
            return tensors

        model, optimizer = sharded_model(seed=0)
        uninterrupted = {step: train_step(model, optimizer, step) for step in (1, 2)}
        start = time.perf_counter()
        folder = save_checkpoint(work, model, None, optimizer, TrainerState(step=2), keep_last=2,
                                 recipe_yaml="objective: mlm\n", is_main=True)
        save_seconds = time.perf_counter() - start
        saved = full_tensors(model, optimizer)
        uninterrupted.update({step: train_step(model, optimizer, step) for step in (3, 4)})
        final_uninterrupted = full_tensors(model, optimizer)
        del model, optimizer

        resumed_model, resumed_optimizer = sharded_model(seed=1)
        start = time.perf_counter()
        load_model_weights(resumed_model, folder)
        optimizer_from_files(resumed_optimizer, folder, model=resumed_model)
        load_seconds = time.perf_counter() - start
        loaded = full_tensors(resumed_model, resumed_optimizer)
        different = sorted(name for name in saved if name not in loaded or not torch.equal(saved[name], loaded[name]))
        missing = sorted(set(saved) ^ set(loaded))
        resumed = {step: train_step(resumed_model, resumed_optimizer, step) for step in (3, 4)}
        final_resumed = full_tensors(resumed_model, resumed_optimizer)
        weight_diff = max((final_resumed[n] - final_uninterrupted[n]).abs().max().item()
                          for n in final_uninterrupted if n.startswith("weights/"))
        checkpoint_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
        tied = resumed_model.decoder.weight is resumed_model.get_input_embeddings().weight
        sharded = is_sharded(resumed_model)
    finally:
        dist.destroy_process_group()
        shutil.rmtree(work, ignore_errors=True)
    # On a GPU the backward kernels may sum in another order from run to run: the step after resume (forward
    # only on equal weights) must match exactly, the one after that to float rounding.
    later_tolerance = 0.0 if device.type == "cpu" else 1e-5 * abs(uninterrupted[4])
    checks = [
        check("model is FSDP2-sharded", sharded, "True", sharded),
        check("tensors in checkpoint = saved (weights + optimizer state)", len(saved) - len(different),
              f"== {len(saved)}", not different and not missing),
        check("tied decoder/embeddings after resume", tied, "True", tied),
        check("loss step 3, resumed - uninterrupted", resumed[3] - uninterrupted[3], "== 0",
              resumed[3] == uninterrupted[3]),
        check("loss step 4, resumed - uninterrupted", resumed[4] - uninterrupted[4], f"abs <= {later_tolerance:.2g}",
              abs(resumed[4] - uninterrupted[4]) <= later_tolerance),
    ]
    figures = {"backend": backend, "world_size": 1, "sizes": sizes, "batch": batch, "length": length,
               "losses_uninterrupted": uninterrupted, "losses_resumed": resumed,
               "weights_max_abs_diff_after_step_4": weight_diff, "tensors_compared": len(saved),
               "tensors_different": different[:10], "checkpoint_mb": checkpoint_mb, "save_seconds": save_seconds,
               "load_seconds": load_seconds}
    status = "pass" if all(c["passed"] for c in checks) else "fail"
    return {"status": status, "figures": figures, "checks": checks, "notes": []}


# ----------------------------------------------------------------------------------------------- part: fp16
POISONED_STEP = 3


def fp16_recipe(run_dir: Path, precision: str):
    from hf_pretrain.recipe import recipe_from_dict

    return recipe_from_dict({
        "model": {"config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 64, "max_position_embeddings": 32}},
        "tokenizer": {"vocab_size": 256},
        "data": {"source": "builtin", "block_size": 32, "max_documents": 120, "validation_fraction": 0.1},
        "train": {"batch_size": 4, "max_steps": POISONED_STEP + 3, "eval_every": 100, "eval_batches": 1,
                  "save_every": 100, "max_bad_steps": 3, "precision": precision, "num_workers": 0},
        "output": {"dir": str(run_dir), "log_with": [], "progress_bar": False},
    })


def loop_with_poisoned_step(run_dir: Path, precision: str, cpu_grad_scaler: bool) -> dict:
    """One tiny `Pretraining` run whose loss is inf on POISONED_STEP; what happened around that step."""
    from accelerate.state import AcceleratorState

    from hf_pretrain.training.loop import Pretraining
    from hf_pretrain.training.metrics import parse_metrics
    from hf_pretrain.training.objectives import build_objective

    # Accelerate keeps one state per process; each run here asks for its own precision.
    AcceleratorState._reset_state(reset_partial_state=True)
    seen = {"weights": {}, "optimizer": {}, "scale": {}}

    def snapshot(run, step: int) -> None:
        model = run.accelerator.unwrap_model(run.model)
        seen["weights"][step] = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
        seen["optimizer"][step] = {f"{i}/{name}": t.detach().cpu().clone()
                                   for i, state in enumerate(run.optimizer.state.values())
                                   for name, t in state.items() if torch.is_tensor(t)}
        scaler = run.accelerator.scaler
        seen["scale"][step] = float(scaler.get_scale()) if scaler is not None else None

    class PoisonedStep(Pretraining):
        def forward_loss(self, batch, items_in_step):
            step = self.state.step + 1
            if step not in seen["weights"]:
                snapshot(self, step)
            loss = super().forward_loss(batch, items_in_step)
            return loss * float("inf") if step == POISONED_STEP else loss

    def objective_with_cpu_scaler(recipe, accelerator, run_dir):
        # Where Accelerate keeps its own GradScaler on a GPU: backward scales, clip_grad_norm_ unscales, the
        # prepared optimizer steps through it. Called before accelerator.prepare, so the optimizer picks it up.
        accelerator.native_amp = True
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        return build_objective(recipe, accelerator, run_dir)

    result = {"precision": precision, "cpu_grad_scaler": cpu_grad_scaler}
    try:
        run = PoisonedStep(fp16_recipe(run_dir, precision),
                           objective_factory=objective_with_cpu_scaler if cpu_grad_scaler else None)
        result["scaler"] = type(run.accelerator.scaler).__name__ if run.accelerator.scaler is not None else None
        summary = run.run()
        result["finished"] = True
        result["skipped_steps"] = summary.get("skipped_steps")
    except Exception as error:
        result["finished"] = False
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback_tail"] = traceback.format_exc()[-1500:]
        if "unscale_() has already been called" in str(error):
            result["diagnosis"] = ("the loop did not call optimizer.step() on the skipped step, so Accelerate's "
                                   "GradScaler never ran update(); the next step's unscale_ refuses")
    metrics = run_dir / "metrics.jsonl"
    records = parse_metrics(metrics.read_text())[0] if metrics.exists() else []
    result["skipped_in_metrics"] = [r["step"] for r in records if "skipped" in r]
    result["steps_logged"] = max((r["step"] for r in records if "loss" in r), default=0)
    before, after = POISONED_STEP, POISONED_STEP + 1
    if before in seen["weights"] and after in seen["weights"]:
        result["weights_untouched_by_skipped_step"] = all(
            torch.equal(seen["weights"][before][n], seen["weights"][after][n]) for n in seen["weights"][before])
        result["optimizer_untouched_by_skipped_step"] = (
            seen["optimizer"][before].keys() == seen["optimizer"][after].keys()
            and all(torch.equal(seen["optimizer"][before][n], seen["optimizer"][after][n])
                    for n in seen["optimizer"][before]))
    if after + 1 in seen["weights"]:
        result["weights_changed_after_skip"] = any(
            not torch.equal(seen["weights"][after][n], seen["weights"][after + 1][n]) for n in seen["weights"][after])
    result["scale_before_after"] = [seen["scale"].get(before), seen["scale"].get(after)]
    return result


def fp16_checks(label: str, result: dict) -> list[dict]:
    checks = [
        check(f"{label}: run finished without an error", result.get("error", "finished"), "finished",
              result["finished"]),
        check(f"{label}: steps marked skipped", result["skipped_in_metrics"], f"[{POISONED_STEP}]",
              result["skipped_in_metrics"] == [POISONED_STEP]),
        check(f"{label}: skipped step left weights and optimizer state untouched",
              [result.get("weights_untouched_by_skipped_step"), result.get("optimizer_untouched_by_skipped_step")],
              "[True, True]", bool(result.get("weights_untouched_by_skipped_step"))
              and bool(result.get("optimizer_untouched_by_skipped_step"))),
        check(f"{label}: training went on after the skip", result.get("weights_changed_after_skip"), "True",
              bool(result.get("weights_changed_after_skip"))),
    ]
    if result.get("scaler"):
        before, after = result["scale_before_after"]
        checks.append(check(f"{label}: GradScaler lowered its scale", result["scale_before_after"], "after < before",
                            before is not None and after is not None and after < before))
    return checks


def run_fp16(args, device: torch.device) -> dict:
    work = Path(tempfile.mkdtemp(prefix="gpu_check_fp16_"))
    os.environ["HF_PRETRAIN_CACHE"] = str(work / "cache")  # tokenized data of these runs only, removed after
    runs = {}
    if device.type == "cuda":
        runs["fp16 (Accelerate's GradScaler)"] = loop_with_poisoned_step(work / "fp16", "fp16", cpu_grad_scaler=False)
    else:
        runs["fp32 (as Accelerate runs fp16 on a CPU)"] = loop_with_poisoned_step(work / "fp32", "fp32",
                                                                                  cpu_grad_scaler=False)
        runs["fp16 with a CPU GradScaler"] = loop_with_poisoned_step(work / "scaler", "fp16", cpu_grad_scaler=True)
    shutil.rmtree(work, ignore_errors=True)
    checks = [c for label, result in runs.items() for c in fp16_checks(label, result)]
    notes = [f"{label}: {result['diagnosis']}" for label, result in runs.items() if result.get("diagnosis")]
    if device.type == "cpu":
        notes.append("CPU: Accelerate runs precision fp16 as fp32 without a scaler; the second run puts a CPU "
                     "GradScaler where Accelerate keeps its CUDA one.")
    status = "pass" if all(c["passed"] for c in checks) else "fail"
    return {"status": status, "figures": {"runs": runs, "poisoned_step": POISONED_STEP}, "checks": checks,
            "notes": notes}


PART_FUNCTIONS = {"speed": run_speed, "attention": run_attention, "fsdp": run_fsdp, "fp16": run_fp16}


# ----------------------------------------------------------------------------------------------- running the parts
def run_part_here(args) -> None:
    """Inside the part's sub-process: run it and write its result (an exception is a result too)."""
    import transformers

    transformers.logging.set_verbosity_error()
    device = pick_device(args)
    if args.tiny:
        torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is fastest and steady
    start = time.perf_counter()
    try:
        result = PART_FUNCTIONS[args.run_part](args, device)
    except Exception as error:
        result = {"status": "error", "error": f"{type(error).__name__}: {error}",
                  "traceback_tail": traceback.format_exc()[-3000:], "checks": [], "figures": {}, "notes": []}
    result["seconds"] = time.perf_counter() - start
    args.part_out.write_text(json.dumps(result, indent=2, default=str))


def run_part_subprocess(args, part: str, timeout: float, log_path: Path) -> dict:
    """The part in its own process group, killed whole when the limit passes."""
    result_path = log_path.with_suffix(".json")
    result_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--_run-part", part,
               "--_part-out", str(result_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                   start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return {"status": "timeout", "seconds": time.perf_counter() - start,
                    "error": f"killed after {timeout:.0f} s", "log_tail": log_path.read_text()[-2000:],
                    "checks": [], "figures": {}, "notes": []}
        except BaseException:  # this process is being stopped (SIGTERM from the shell's timeout, Ctrl-C)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    if result_path.exists():
        return json.loads(result_path.read_text())
    return {"status": "error", "seconds": time.perf_counter() - start,
            "error": f"the part's process exited with {process.returncode} without a result",
            "log_tail": log_path.read_text()[-3000:], "checks": [], "figures": {}, "notes": []}


def environment(device: torch.device) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    def installed(distribution: str) -> str | None:
        try:
            return version(distribution)  # without importing it: the parent process stays light
        except PackageNotFoundError:
            return None

    def git(*command) -> str | None:
        try:
            return subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        name = f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        name = (f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"{torch.get_num_threads()} threads")
    status = git("status", "--porcelain")
    return {"device": name, "torch": torch.__version__, "transformers": installed("transformers"),
            "accelerate": installed("accelerate"), "flash_attn": installed("flash-attn"),
            "python": platform.python_version(),
            "commit": git("rev-parse", "HEAD") or "unknown (no git)",
            "uncommitted_changes": None if status is None else bool(status),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    text = text.replace("|", "/")  # a pipe would end the table cell
    return text if len(text) <= 80 else text[:77] + "..."


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# gpu_check — {env['device']}", "",
             f"torch {env['torch']}, transformers {env['transformers']}, accelerate {env['accelerate']}, "
             f"flash-attn {env['flash_attn'] or 'not installed'}; commit {env['commit']}"
             f"{' (with uncommitted changes)' if env['uncommitted_changes'] else ''}; {env['date']}; "
             f"{'tiny models' if report['tiny'] else 'full size'}; {report['total_seconds']:.0f} s", "",
             "| part | status | s | check | value | target | result |", "|---|---|---|---|---|---|---|"]
    for part, result in report["parts"].items():
        rows = result.get("checks") or [check(result.get("error", "-"), "", "", None)]
        for index, row in enumerate(rows):
            verdict = {True: "PASS", False: "FAIL", None: "?"}[row["passed"]]
            head = (part, result["status"], f"{result.get('seconds', 0):.0f}") if index == 0 else ("", "", "")
            lines.append(f"| {' | '.join(head)} | {row['name']} | {format_value(row['value'])} | {row['target']} "
                         f"| {verdict} |")
    speed = report["parts"].get("speed", {}).get("figures", {}).get("models")
    if speed:
        lines += ["", "| speed | parameters | step ms | tokens/s | MFU |", "|---|---|---|---|---|"]
        for row, figures in speed.items():
            mfu = "n/a" if figures["mfu"] is None else f"{figures['mfu']:.1%}"
            lines.append(f"| {row} | {figures['parameters']:,} | {1e3 * figures['step_seconds']:.1f} | "
                         f"{figures['tokens_per_s']:,.0f} | {mfu} |")
    notes = [f"- {part}: {note}" for part, result in report["parts"].items() for note in result.get("notes", [])]
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


class Stopped(Exception):
    """SIGTERM: the part running now is killed and the results so far are written."""


def stop(signal_number, frame):
    raise Stopped(f"stopped by signal {signal_number}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_part:
        run_part_here(args)
        return 0
    device = pick_device(args)
    if device.type == "cpu" and not args.tiny and args.device == "auto":
        # Full-size models on a CPU take far longer than the budget: most likely a CPU build of torch on a GPU machine.
        print(f"gpu_check: torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda}). "
              "Install a CUDA build of torch, or run `--tiny --device cpu` (the CPU test mode), or force full size "
              "on the CPU with `--device cpu`.", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, stop)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logs = args.out.parent / f"{args.out.stem}-logs"
    logs.mkdir(exist_ok=True)
    report = {"tiny": args.tiny, "environment": environment(device), "parts": {}, "total_seconds": 0.0,
              "budget_seconds": args.budget}
    start = time.perf_counter()
    for part in args.parts:
        left = args.budget - (time.perf_counter() - start)
        own = args.part_timeout or (TINY_PART_TIMEOUT if args.tiny else PART_TIMEOUTS[part])
        part_start = time.perf_counter()
        if left < 5:
            result = {"status": "timeout", "error": "no time left in --budget", "checks": [], "figures": {},
                      "notes": [], "seconds": 0.0}
        else:
            try:
                result = run_part_subprocess(args, part, min(own, left), logs / f"{part}.log")
            except Stopped as error:
                result = {"status": "timeout", "error": str(error), "checks": [], "figures": {}, "notes": [],
                          "seconds": time.perf_counter() - part_start}
        report["parts"][part] = result
        report["total_seconds"] = time.perf_counter() - start
        failed = [c["name"] for c in result.get("checks", []) if c["passed"] is False]
        print(f"{part}: {result['status']} in {result.get('seconds', 0):.0f} s"
              + (f" — {result['error']}" if result.get("error") else "")
              + (f" — not met: {'; '.join(failed)}" if failed else ""), flush=True)
        # Written after every part: what ran is kept even if the whole command is killed.
        args.out.write_text(json.dumps(report, indent=2, default=str))
        args.out.with_suffix(".md").write_text(markdown(report))
        if isinstance(result.get("error"), str) and result["error"].startswith("stopped by signal"):
            break
    print(f"results: {args.out} and {args.out.with_suffix('.md')}")
    return 0 if all(r["status"] in ("pass", "skipped") for r in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

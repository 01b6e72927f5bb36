"""The machine a run trains on: the Accelerator a recipe asks for (precision, trackers, the seeded sampler), the
engines refused before any work, and how the run describes its hardware."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType

from ..recipe import Recipe, RecipeError, resolve_precision
from .metrics import available_trackers


def build_accelerator(recipe: Recipe, run_dir: Path) -> Accelerator:
    """Accelerate's set-up for the recipe: mixed precision (fp32 on CPUs), trackers that are installed, a data order
    seeded by train.seed (exact resume), and the lr schedule stepped by the loop itself. DeepSpeed is refused, and
    Muon under FSDP."""
    train = recipe.train
    refuse_unverified_engine(os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true")
    precision = resolve_precision(train.precision)  # "fp32", "bf16" or "fp16"
    log_with = available_trackers(recipe.output.log_with)
    accelerator = Accelerator(
        mixed_precision="no" if precision == "fp32" else precision,
        cpu=not torch.cuda.is_available(),
        log_with=log_with or None,
        project_dir=str(run_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train.seed),
        step_scheduler_with_optimizer=False,
    )
    refuse_unverified_engine(accelerator.distributed_type == DistributedType.DEEPSPEED)
    if train.optimizer == "muon" and accelerator.distributed_type == DistributedType.FSDP:
        raise RecipeError(
            "train.optimizer='muon' is not available with FSDP: its Newton-Schulz step works on whole matrices, "
            "and on FSDP's sharded ones it has not been run; use train.optimizer=adamw, or DDP."
        )
    return accelerator


def fused_optimizer_fits(accelerator: Accelerator) -> bool:
    """Fused AdamW (CPU and CUDA kernels) is the fastest, and skips a non-finite step on a device flag; FSDP2's
    sharded parameters take the unfused one."""
    return accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU)


def refuse_unverified_engine(deepspeed: bool) -> None:
    """DeepSpeed's own clipping, accumulation, fp16 overflow skip and engine checkpoints have never run with this
    loop (that needs a GPU), so a DeepSpeed launch stops before any work instead of training on unchecked paths.
    Checked twice: from `accelerate launch`'s environment before the Accelerator exists (building one for DeepSpeed
    fails on a missing `deepspeed` package with a less useful message), and from the Accelerator itself."""
    if deepspeed:
        raise RecipeError(
            "accelerate launch config: distributed_type=DEEPSPEED is not supported (DeepSpeed has not been run and "
            "verified with this training loop); use FSDP2 (recipes/accelerate/fsdp.yaml) or DDP "
            "(recipes/accelerate/ddp.yaml) instead."
        )


def resolved_precision_name(accelerator) -> str:
    """What the run computed in: "fp32", "bf16" or "fp16" (a recipe's `auto` resolved on this machine)."""
    return {"no": "fp32"}.get(accelerator.mixed_precision, accelerator.mixed_precision)


def describe_hardware(accelerator) -> str:
    """E.g. "1 x NVIDIA H100 80GB HBM3, bf16" or "2 CPU threads x 1 process, fp32"."""
    precision = resolved_precision_name(accelerator)
    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} x {torch.cuda.get_device_name(accelerator.device)}, {precision}"
    return f"{torch.get_num_threads()} CPU threads x {accelerator.num_processes} process(es), {precision}"

"""The `train` and `output` sections: optimizer, schedule, budget, eval and checkpoint cadence; where a run goes."""

from __future__ import annotations

from dataclasses import dataclass

from .fields import RecipeError, choice, listing, ranged, setting


@dataclass
class TrainSection:
    """Optimizer, schedule, budget, evaluation and checkpoint cadence."""

    seed: int = setting(0, "seed of the initial weights, the data order, the noise and dropout")
    batch_size: int = ranged(32, low=1, doc="rows per process per micro-step")
    grad_accum: int = ranged(1, low=1, doc="micro-steps per optimizer step (gradient accumulation)")
    lr: float = ranged(1e-3, low=0.0, low_open=True, doc="peak learning rate")
    encoder_lr_scale: float = ranged(
        1.0, low=0.0, low_open=True,
        doc="denoising autoencoders: the encoder's lr is lr x this; the decoder and an untied output layer get lr")
    embedding_lr_scale: float = ranged(
        1.0, low=0.0, low_open=True,
        doc="the token embedding matrix's lr is lr x this (x encoder_lr_scale too where that applies); below 1 it "
            "keeps a closed-form start (model.embedding_init: spectral) while the layers learn; tied, it is the "
            "output layer as well")
    weight_decay: float = ranged(
        0.01, low=0.0, doc="decoupled weight decay of the matrices (not of norms, biases and embeddings)")
    beta1: float = ranged(0.9, low=0.0, high=1.0, doc="AdamW's first-moment decay")
    beta2: float = ranged(0.98, low=0.0, high=1.0, doc="AdamW's second-moment decay")
    eps: float = ranged(1e-6, low=0.0, low_open=True, doc="AdamW's epsilon")
    optimizer: str = choice(
        "adamw", "adamw", "muon",
        doc="adamw everywhere, or muon: Muon (orthogonalized momentum) for the hidden weight matrices and AdamW "
            "for embeddings, output layers, norms and biases (hf_pretrain/training/optimizers.py)")
    schedule: str = choice(
        "wsd", "wsd", "linear", "cosine", "constant",
        doc="lr schedule after warmup: wsd (warmup-stable-decay), linear or cosine decay, or constant")
    warmup: float = ranged(0.06, low=0.0, doc="warmup: below 1 a fraction of the budget, else a number of steps")
    decay_fraction: float = ranged(0.3, low=0.0, high=1.0, doc="wsd: the final share of the budget that decays")
    min_lr_ratio: float = ranged(0.0, low=0.0, high=1.0, doc="the lr the decay ends at, as a share of lr")
    max_steps: int | None = ranged(None, low=1, doc="budget in optimizer steps")
    max_tokens: int | None = ranged(None, low=1, doc="budget in input tokens (all processes)")
    max_minutes: float | None = ranged(
        None, low=0.0, low_open=True, doc="budget in wall-clock minutes of training (eval and saving excluded)")
    clip_grad_norm: float | None = ranged(
        1.0, low=0.0, low_open=True, doc="clip the gradient norm to this (null: no clipping)")
    precision: str = choice(
        "auto", "auto", "fp32", "bf16", "fp16",
        doc="auto: bf16 on GPUs that have it, fp32 elsewhere (bf16 matmuls are slow on most CPUs)")
    compile: bool = setting(False, "torch.compile the model")
    activation_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory)")
    num_workers: int = ranged(0, low=0, doc="DataLoader worker processes")
    log_every: int = ranged(
        1, low=1,
        doc="steps per metrics record (averaged loss and grad norm); each record reads the device, so GPU "
            "recipes use 10-50")
    eval_every: int = ranged(200, low=1, doc="steps between evals")
    eval_batches: int = ranged(20, low=1, doc="batches per eval")
    save_every: int = ranged(500, low=1, doc="steps between checkpoints")
    keep_last: int = ranged(2, low=1, doc="checkpoints kept on disk")
    max_bad_steps: int = ranged(5, low=1, doc="consecutive non-finite steps (skipped) before the run stops")
    peak_tflops: float | None = ranged(
        None, low=0.0, low_open=True, doc="the device peak MFU is measured against (null: measured or documented)")


@dataclass
class OutputSection:
    """Where the run folder goes and how the run reports."""

    dir: str = setting("runs/run", "the run folder (checkpoints, metrics, final/); a rerun resumes it")
    log_with: list = listing(
        "trackers besides metrics.jsonl: tensorboard, wandb, mlflow, comet_ml (Accelerate's log_with)",
        default=("tensorboard",))
    progress_bar: bool = setting(True, "show a progress bar while training")


def check_warmup(warmup: float) -> None:
    if warmup >= 1 and warmup != int(warmup):
        raise RecipeError(f"train.warmup={warmup} is not allowed; use a fraction < 1 or a whole number of steps.")


def resolve_precision(precision: str) -> str:
    """What train.precision means on this machine: 'fp32', 'bf16' or 'fp16'. `auto`: bf16 on GPUs that have it,
    fp32 elsewhere (bf16 matmuls on CPUs without AMX run far slower than fp32). Pretraining hands it to
    Accelerate, fine-tuning to TrainingArguments; each spells it its own way."""
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"

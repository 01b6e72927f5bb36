"""What became of each optimizer step: taken or skipped (a non-finite loss or gradient norm leaves weights and
optimizer state untouched), and the log window that averages the steps since the last metrics record.

A skip is decided on the device where the optimizer can (fused AdamW's and MuonWithAdamW's `found_inf` flag), so a
step reads nothing back; the window reads the flags with the next record. fp16's GradScaler and FSDP's unfused
AdamW decide on the host: one read per step.
"""

from __future__ import annotations

import torch

from .checkpoint import TrainerState
from .optimizers import MuonWithAdamW

NON_FINITE = "non-finite loss or grad norm"
FP16_OVERFLOW = "fp16 gradient overflow (the GradScaler lowered its scale)"


def step_or_skip(optimizer, loss_finite: bool, grad_norm_finite: bool) -> str | None:
    """Take the optimizer step, or skip it; returns why it was skipped (None: it stepped).

    A skipped step touches neither the weights nor the optimizer state (AdamW's moments and step count). With fp16,
    Accelerate's optimizer wrapper holds a GradScaler (`optimizer.scaler`) whose gradients were unscaled this step
    (by clipping or by the loop): the scaler must close every step with `update()`, or the next `unscale_` raises
    "unscale_() has already been called". On a skipped step it gets that `update()`, which lowers its scale when the
    gradients overflowed, just as its own `step()` would after skipping. A finite loss with non-finite gradients
    under fp16 is the scaler's overflow (its scale was too high), not divergence."""
    scaler = getattr(optimizer, "scaler", None)
    if loss_finite and grad_norm_finite:
        optimizer.step()
        # The scaler's own check is on the unscaled gradients, as ours is; kept in case the two ever disagree.
        return FP16_OVERFLOW if getattr(optimizer, "step_was_skipped", False) else None
    if scaler is not None:
        scaler.update()
        if loss_finite:
            return FP16_OVERFLOW
    return NON_FINITE


def skips_on_device(optimizer) -> bool:
    """Whether `optimizer` (or the one Accelerate wraps) can skip a step on a device flag: torch's fused AdamW reads
    a `found_inf` tensor (the GradScaler's hook), and MuonWithAdamW reads it the same way. Not under fp16, where
    the GradScaler owns that flag."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if getattr(optimizer, "scaler", None) is not None:
        return False
    return isinstance(inner, MuonWithAdamW) or (isinstance(inner, torch.optim.AdamW) and bool(inner.defaults.get("fused")))


def step_unless_flagged(optimizer, skip: torch.Tensor) -> torch.Tensor:
    """Step; where `skip` (a 0-dim bool tensor on the device) is true the optimizer leaves weights, moments and
    step counts as they were. Nothing is read back: returns `skip` itself, for the log window."""
    inner = getattr(optimizer, "optimizer", optimizer)
    inner.found_inf = skip.float()
    try:
        optimizer.step()
    finally:
        del inner.found_inf
    return skip


def next_bad_streak(streak: int, skipped: str | None) -> int:
    """Non-finite steps in a row (train.max_bad_steps of them stop the run). An fp16 overflow neither counts nor
    ends a streak: the GradScaler recovers from it by itself, halving its scale, and a few of them at the start of
    a run are normal."""
    if skipped is None:
        return 0
    return streak + (skipped == NON_FINITE)


class LogWindow:
    """The steps since the last metrics record. Loss and grad norm are summed on the device (no host read per
    step); a record reads them once. A record's `loss` and `grad_norm` are means over the window's steps that were
    taken (skipped steps are left out, as their numbers are not finite; a window of skipped steps only reports the
    last one's), `lr` and `epoch` are the last step's, throughput figures cover the whole window, and `skipped`
    counts the window's skipped steps when there are any. With train.log_every=1 a record is exactly one step's."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.sums = torch.zeros(3, device=self.device)  # loss, grad norm, count of the steps taken
        self.last = self.sums[:2]
        self.outcomes: list = []  # per step: None (taken), a reason (skipped), or a device flag (true: skipped)
        self.seconds = self.data_wait = 0.0
        self.counts: list = []  # per step: (tokens, flops), or a callable that counts them
        self.lr = 0.0

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, skipped: str | torch.Tensor | None, lr: float,
            counts, seconds: float, data_wait: float) -> None:
        """`counts`: the step's (tokens, FLOPs), or a callable returning them, called when the record is written
        (then the tokens were not yet added to the state's tokens_seen)."""
        self.last = torch.stack([loss.float(), grad_norm.float()])
        taken = torch.cat([self.last, self.last.new_ones(1)])
        if isinstance(skipped, torch.Tensor):  # known on the device only; where() keeps a NaN out of the sums
            self.sums = self.sums + torch.where(skipped, torch.zeros_like(taken), taken)
        elif skipped is None:
            self.sums = self.sums + taken
        self.outcomes.append(skipped)
        self.steps += 1
        self.lr, self.seconds, self.data_wait = lr, self.seconds + seconds, self.data_wait + data_wait
        self.counts.append(counts)

    def record(self, state: TrainerState, peak_tflops: float) -> tuple[dict, list[str | None]]:
        """The record, and each step's outcome (None: taken, else why it was skipped)."""
        flags = [o for o in self.outcomes if isinstance(o, torch.Tensor)]
        values = torch.cat([self.sums, self.last, *[f.reshape(1).float() for f in flags]]).tolist()  # the one read
        loss_sum, norm_sum, taken, last_loss, last_norm = values[:5]
        device_skips = iter(values[5:])
        outcomes = [(NON_FINITE if next(device_skips) else None) if isinstance(o, torch.Tensor) else o
                    for o in self.outcomes]
        loss, grad_norm = (loss_sum / taken, norm_sum / taken) if taken else (last_loss, last_norm)
        tokens = flops = 0
        for counts in self.counts:
            if callable(counts):
                counts = counts()
                state.tokens_seen += counts[0]
            tokens, flops = tokens + counts[0], flops + counts[1]
        seconds = max(self.seconds, 1e-9)
        record = {
            "loss": loss,
            "lr": self.lr,
            "grad_norm": grad_norm,
            "tokens": state.tokens_seen,
            "tokens_per_s": tokens / seconds,
            "mfu": flops / seconds / (peak_tflops * 1e12),
            "data_wait": self.data_wait / seconds,
            "epoch": state.epoch,
        }
        skipped = [outcome for outcome in outcomes if outcome is not None]
        if skipped:
            record["skipped"] = len(skipped)
            record["skipped_why"] = "; ".join(sorted(set(skipped)))
        self.reset()
        return record, outcomes


def plain_tensor(value, device: torch.device) -> torch.Tensor:
    """A grad norm as a plain tensor on `device` (an FSDP2 norm is a DTensor; a missing one is 0)."""
    if value is None:
        return torch.zeros((), device=device)
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return torch.as_tensor(value, device=device)


def total_grad_norm(model: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().norm(2) for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def divergence_message(run_dir, streak: int, max_bad_steps: int) -> str:
    """Why a run stopped after `streak` non-finite steps in a row, and its last good checkpoint."""
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    last_good = str(checkpoints[-1]) if checkpoints else "none yet (no checkpoint was written before)"
    return (
        f"training stopped: {streak} steps in a row had a non-finite loss or gradient norm "
        f"(train.max_bad_steps={max_bad_steps}). The weights were not updated by those steps. Last good "
        f"checkpoint: {last_good}. Try a lower train.lr, a longer train.warmup, or train.precision=fp32."
    )

"""Learning-rate schedules as a multiplier of the peak lr, driven by how much of the budget is spent.

Progress is a fraction in [0, 1] of the training budget (steps, tokens or minutes — whichever the recipe sets),
so one schedule fits every kind of budget.
"""

from __future__ import annotations

import math

SCHEDULES = ("wsd", "linear", "cosine", "constant")


def warmup_multiplier(step: int, progress: float, warmup: float) -> float:
    """`warmup` < 1 is a fraction of the budget, >= 1 a number of optimizer steps. Linear from ~0 to 1."""
    if warmup <= 0:
        return 1.0
    if warmup >= 1:
        return min(1.0, (step + 1) / warmup)
    return min(1.0, max(progress, 1e-12) / warmup)


def lr_multiplier(
    schedule: str,
    step: int,
    progress: float,
    warmup: float,
    decay_fraction: float = 0.3,
    min_lr_ratio: float = 0.0,
) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based) and budget progress `progress`.

    - linear:  warmup, then straight down to `min_lr_ratio` at the end of the budget.
    - cosine:  warmup, then half a cosine down to `min_lr_ratio`.
    - wsd:     warmup-stable-decay: warmup, hold the peak, and decay linearly over the final `decay_fraction`
               of the budget (Hu et al. 2024, "MiniCPM"); it stays near the peak longest, which pays off on small
               budgets, and a run can be extended before the decay starts.
    - constant: warmup, then the peak.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r} is not allowed; choose one of {', '.join(SCHEDULES)}.")
    progress = min(max(progress, 0.0), 1.0)
    warm = warmup_multiplier(step, progress, warmup)
    if schedule == "constant":
        return warm
    warmup_end = warmup if warmup < 1 else 0.0  # step-counted warmup does not move the decay
    if schedule == "wsd":
        decay_start = 1.0 - decay_fraction
        if progress <= decay_start or decay_fraction == 0:
            return warm
        remaining = (1.0 - progress) / decay_fraction
        return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * remaining)
    span = max(1.0 - warmup_end, 1e-12)
    after_warmup = min(max((progress - warmup_end) / span, 0.0), 1.0)
    if schedule == "linear":
        shape = 1.0 - after_warmup
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * after_warmup))
    return warm * (min_lr_ratio + (1.0 - min_lr_ratio) * shape)

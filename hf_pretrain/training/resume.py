"""The resume policy: which checkpoint a rerun continues from and whether it may (a changed recipe is refused,
naming the keys), where in the data it continues (also on another number of processes), and `--restart`, which
moves an earlier run aside instead of deleting it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import yaml

from ..recipe import Recipe, RecipeError
from ..recipe.resume import resume_changes
from .checkpoint import LOCK, TrainerState

logger = logging.getLogger(__name__)


def check_resume_recipe(checkpoint: Path, run_dir: Path, recipe: Recipe, saved: TrainerState,
                        num_processes: int) -> None:
    """Refuse to resume with a recipe that changes what a step computes; allow and say the safe changes. A
    changed train.batch_size is allowed when it keeps the global batch (per-process batch x processes) of the run
    that wrote the checkpoint, e.g. train.batch_size doubled on half the processes."""
    stored = checkpoint / "recipe.yaml"
    if not stored.is_file():  # checkpoints written before they carried their recipe
        stored = run_dir / "recipe.yaml"
    if not stored.is_file():
        return
    allowed, refused = resume_changes(yaml.safe_load(stored.read_text()) or {}, recipe)
    saved_processes = saved.num_processes or num_processes
    if saved.batch_size and saved.batch_size * saved_processes == recipe.train.batch_size * num_processes:
        for line in [line for line in refused if line.startswith("train.batch_size:")]:
            refused.remove(line)
            allowed.append(f"{line} (the global batch stays {recipe.train.batch_size * num_processes} on "
                           f"{num_processes} process(es) instead of {saved_processes})")
    if refused:
        raise RecipeError(
            f"output.dir={str(run_dir)!r} holds a run trained with another recipe (checkpoint {checkpoint.name}); "
            f"resuming would mix the two. Changed: {'; '.join(refused)}. Run again with the recipe it was trained "
            "with, choose a new output.dir, or add --restart to move the earlier run aside and start over."
        )
    if allowed:
        logger.info(f"resuming from {checkpoint.name} with changed settings: {'; '.join(allowed)}")


def resume_position(saved: TrainerState, batch_size: int, num_processes: int, own_batch_sampler: bool,
                    checkpoint: Path) -> int:
    """Micro-batches of the epoch in progress that each process skips on resume, so that the resumed run reads on
    from the same example as a run that never stopped.

    Accelerate deals the batches of one loader (`train.batch_size` rows, or the objective's own batch sampler) to
    the processes in turn, and the order of the epoch (seed + epoch) does not depend on how many there are: a
    checkpoint written after each of N processes took b batches of B rows sits at row b x N x B of the epoch. With
    M processes of B' rows the same row is b' = b x N x B / (M x B') batches in; where that is not a whole number
    the position cannot be reached exactly, and the resume is refused."""
    saved_processes = saved.num_processes or num_processes
    saved_batch_size = saved.batch_size or batch_size
    if (saved_processes, saved_batch_size) == (num_processes, batch_size):
        return saved.batches_in_epoch
    if own_batch_sampler and saved_batch_size != batch_size:
        raise RecipeError(
            f"train.batch_size={batch_size} differs from the {saved_batch_size} that checkpoint {checkpoint.name} was "
            "trained with, and this objective makes its own batches from it (documents of similar length): resume "
            f"with train.batch_size={saved_batch_size}."
        )
    rows_per_batch = (1, 1) if own_batch_sampler else (saved_batch_size, batch_size)  # own sampler: in its batches
    consumed = saved.batches_in_epoch * saved_processes * rows_per_batch[0]
    per_round = num_processes * rows_per_batch[1]
    if consumed % per_round:
        unit = "batches" if own_batch_sampler else "examples"
        raise RecipeError(
            f"checkpoint {checkpoint.name} stopped {consumed} {unit} into epoch {saved.epoch} ({saved_processes} "
            f"process(es) x {saved.batches_in_epoch} batches of train.batch_size={saved_batch_size}); "
            f"{num_processes} process(es) x train.batch_size={batch_size} read {per_round} {unit} at a time, which "
            f"does not divide {consumed}, so this launch cannot continue from the same example. Resume with "
            f"{saved_processes} process(es), or a number of processes x train.batch_size that divides {consumed}."
        )
    return consumed // per_round


def move_run_aside(run_dir: Path) -> Path | None:
    """--restart: move everything an earlier run left in `run_dir` into run_dir/replaced-<UTC time>/ (nothing is
    deleted; earlier replaced-* folders and the lock stay where they are)."""
    entries = [p for p in run_dir.iterdir() if p.name != LOCK and not p.name.startswith("replaced-")]
    if not entries:
        return None
    target = run_dir / time.strftime("replaced-%Y%m%d-%H%M%S", time.gmtime())
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
    target.mkdir()
    for entry in entries:
        entry.rename(target / entry.name)
    logger.info(f"--restart: moved the earlier run in {run_dir} to {target}")
    return target

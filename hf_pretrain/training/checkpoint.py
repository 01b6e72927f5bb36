"""Atomic, pickle-free checkpoints that resume exactly and load with `from_pretrained`.

Layout of `RUN/checkpoints/step-00000100/`:
    model/                    save_pretrained folder (safetensors, config, modeling code) + tokenizer
    optimizer.safetensors     every tensor of the optimizer state
    optimizer.json            the optimizer's non-tensor state (param groups, hyper-parameters)
    trainer_state.json        step, epoch, position in the epoch, tokens seen, elapsed time, ...
    COMPLETE                  written last: sha256 of every file above

A checkpoint is written into a hidden temporary folder and renamed into place only once COMPLETE is on disk, so a
crash or a kill mid-write never leaves a folder that looks finished. Saving a step that already exists (the final
save right after a periodic one) first renames the old copy aside and removes it only once the new one is in
place: at every moment one complete copy of the step is on disk, and resume finds the set-aside copy too. On
resume each candidate's files are checked against COMPLETE; a damaged newest checkpoint is reported and the
previous one is used. `final/` gets the same marker and the same swap. A lock file keeps a second process out of
a run folder; a lock left by a killed process on this machine is detected and taken over.

Why not `accelerator.save_state`: it pickles the optimizer and RNG states (`torch.save`), and the brief says weights
and states are safetensors/JSON only. Our data order and noise are pure functions of (seed, epoch, index) and the
dropout RNG is reseeded from (seed, step, rank) every step, so no RNG state needs saving at all.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..folders import SET_ASIDE, recover_set_aside, swap_into_place, verify_complete, write_complete_marker

PREFIX = "step-"
LOCK = ".lock"


@dataclass
class TrainerState:
    """Everything besides weights and optimizer that a resumed run needs to continue exactly."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    tokens_seen: int = 0
    elapsed_seconds: float = 0.0
    bad_steps_in_a_row: int = 0
    skipped_steps: int = 0
    initial_eval: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{PREFIX}{step:08d}"


def optimizer_to_files(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def optimizer_from_files(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for name, tensor in load_file(str(folder / "optimizer.safetensors")).items():
        param_id, key = name.split("/", 1)
        state.setdefault(int(param_id), {})[key] = tensor
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    # JSON has no tuples; optimizers keep hyper-parameters such as `betas` as tuples.
    groups = [
        {key: tuple(value) if isinstance(value, list) and key != "params" else value for key, value in group.items()}
        for group in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    run_dir: Path,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    trainer_state: TrainerState,
    keep_last: int,
    recipe_yaml: str,
) -> Path:
    """Write a complete checkpoint atomically (call on the main process only) and prune old ones.

    `recipe_yaml` (the resolved recipe) is stored with it: a rerun compares its own recipe against it."""
    final = checkpoint_dir(run_dir, trainer_state.step)
    temporary = final.parent / f".tmp-{final.name}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    model.save_pretrained(temporary / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(temporary / "model")
    optimizer_to_files(optimizer, temporary)
    (temporary / "trainer_state.json").write_text(json.dumps(asdict(trainer_state), indent=2))
    (temporary / "recipe.yaml").write_text(recipe_yaml)
    write_complete_marker(temporary)
    swap_into_place(temporary, final)
    prune_checkpoints(run_dir, keep_last)
    return final


def step_of(folder: Path) -> int:
    return int(folder.name.rsplit(PREFIX, 1)[1])


def recover_interrupted_swaps(run_dir: Path) -> None:
    """Put back every set-aside copy (of a checkpoint or of final/) whose replacement never arrived. Main process
    only, before anything looks for checkpoints."""
    run_dir = Path(run_dir)
    for set_aside in [*run_dir.glob(f"{SET_ASIDE}final"), *run_dir.glob(f"checkpoints/{SET_ASIDE}{PREFIX}*")]:
        recover_set_aside(set_aside.parent / set_aside.name[len(SET_ASIDE):])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders, newest first (temporary and set-aside folders excluded)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=step_of, reverse=True)


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints (at least the one just written: keep_last >= 1 is validated)."""
    for stale in list_checkpoints(run_dir)[max(keep_last, 1):]:
        shutil.rmtree(stale, ignore_errors=True)
    for leftover in (Path(run_dir) / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def set_aside_newer_checkpoints(run_dir: Path, step: int, report=print) -> None:
    """Checkpoints newer than the one a run resumes from failed verification: rename them out of the way (kept for
    inspection, never deleted), so pruning, which goes by step, cannot evict good checkpoints in their favour."""
    for folder in list_checkpoints(run_dir):
        if step_of(folder) > step:
            target = folder.parent / f".unusable-{folder.name}"
            if target.exists():
                shutil.rmtree(target)
            os.replace(folder, target)
            report(f"moved the unusable checkpoint {folder.name} to {target}")


def find_resumable_checkpoint(run_dir: Path, report=print) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are reported and skipped."""
    for folder in list_checkpoints(run_dir):
        problem = verify_complete(folder)
        if problem is None:
            return folder
        report(f"checkpoint {folder} is unusable: {problem}; falling back to an earlier one")
    return None


def load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load `folder/model/model.safetensors` into `model` in place; only tied copies may be absent from the file."""
    state = load_file(str(folder / "model" / "model.safetensors"))
    result = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [key for key in result.missing_keys if key not in tied]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {folder} does not match the model: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def load_trainer_state(folder: Path) -> TrainerState:
    return TrainerState(**json.loads((folder / "trainer_state.json").read_text()))


# ----------------------------------------------------------------------------------------------- run lock
class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


def acquire_run_lock(run_dir: Path, report=print) -> Path:
    """Create RUN/.lock (pid and host) atomically, or refuse: two processes on one run folder would write the same
    checkpoint names and prune each other's. A lock whose process is gone (killed) on this host is taken over."""
    import socket

    path = Path(run_dir) / LOCK
    owner = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                holder = {}
            if holder.get("host") == owner["host"] and not process_alive(holder.get("pid")):
                report(f"{path}: taking over the lock of process {holder.get('pid')}, which is no longer running")
                path.unlink(missing_ok=True)
                continue
            raise RunFolderBusy(
                f"output.dir={str(run_dir)!r} is in use by process {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} ({path}). Wait for it to finish, choose another output.dir, or delete "
                f"{path} if you are sure that process is gone."
            ) from None
        with os.fdopen(handle, "w") as lock_file:
            lock_file.write(json.dumps(owner))
        return path
    raise RunFolderBusy(f"could not take the lock {path}; another process keeps creating it.")


def release_run_lock(path: Path | None) -> None:
    if path is not None:
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, json.JSONDecodeError):
            pass


def process_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True

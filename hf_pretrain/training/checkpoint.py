"""Atomic, pickle-free checkpoints that resume exactly and load with `from_pretrained`.

Layout of `RUN/checkpoints/step-00000100/`:
    model/                    save_pretrained folder (safetensors, config, modeling code) + tokenizer
    optimizer.safetensors     every tensor of the optimizer state
    optimizer.json            the optimizer's non-tensor state (param groups, hyper-parameters)
    trainer_state.json        step, epoch, position in the epoch, tokens seen, elapsed time, ...
    COMPLETE                  written last: sha256 of every file above

A checkpoint is written into a hidden temporary folder and renamed into place only once COMPLETE is on disk, so a
crash or a kill mid-write never leaves a folder that looks finished. On resume each candidate's files are checked
against COMPLETE; a damaged newest checkpoint is reported and the previous one is used.

Why not `accelerator.save_state`: it pickles the optimizer and RNG states (`torch.save`), and the brief says weights
and states are safetensors/JSON only. Our data order and noise are pure functions of (seed, epoch, index) and the
dropout RNG is reseeded from (seed, step, rank) every step, so no RNG state needs saving at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

COMPLETE = "COMPLETE"
PREFIX = "step-"


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


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
) -> Path:
    """Write a complete checkpoint atomically (call on the main process only) and prune old ones."""
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
    hashes = {
        str(path.relative_to(temporary)): sha256_of(path) for path in sorted(temporary.rglob("*")) if path.is_file()
    }
    (temporary / COMPLETE).write_text(json.dumps(hashes, indent=2))
    fsync_tree(temporary)
    if final.exists():  # the same step saved again (e.g. the final save right after a periodic one)
        shutil.rmtree(final)
    os.replace(temporary, final)
    prune_checkpoints(run_dir, keep_last)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders, newest first (temporary folders excluded)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def prune_checkpoints(run_dir: Path, keep_last: int) -> None:
    for stale in list_checkpoints(run_dir)[keep_last:]:
        shutil.rmtree(stale, ignore_errors=True)
    for leftover in (Path(run_dir) / "checkpoints").glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def verify_checkpoint(folder: Path) -> str | None:
    """None when every file listed in COMPLETE is present with its hash; otherwise what is wrong."""
    marker = folder / COMPLETE
    if not marker.is_file():
        return "no COMPLETE marker (the write did not finish)"
    try:
        hashes = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return "COMPLETE marker is unreadable"
    for name, expected in hashes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_of(path) != expected:
            return f"{name} does not match its recorded sha256 (corrupted)"
    return None


def find_resumable_checkpoint(run_dir: Path, report=print) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are reported and skipped."""
    for folder in list_checkpoints(run_dir):
        problem = verify_checkpoint(folder)
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

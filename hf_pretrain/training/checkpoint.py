"""Atomic, pickle-free checkpoints that resume exactly and load with `from_pretrained`.

Layout of `RUN/checkpoints/step-00000100/`:
    model/                    save_pretrained folder (safetensors, config, modeling code) + tokenizer
    optimizer.safetensors     every tensor of the optimizer state
    optimizer.json            the optimizer's non-tensor state (param groups, hyper-parameters)
    trainer_state.json        step, epoch, position in the epoch, tokens seen, elapsed time, ...
    data/stream-rank{r}.json  a streamed corpus: each process's reader positions (JSON) and their packer
    data/stream-rank{r}.safetensors    remainders and shuffle buffers (training/streamed.py)
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

Sharded models (FSDP2, `torch.distributed.fsdp.fully_shard`: parameters are DTensors) hold only a slice of each
weight per rank. `save_checkpoint` is then called on every rank: the full weights and optimizer state are gathered
(`torch.distributed.checkpoint.state_dict`, full state dict, CPU, on rank 0) with every rank taking part, and rank 0
writes exactly the files one process writes: the optimizer state is renumbered by position (torch names it by
parameter), so a checkpoint written by one process and one written by N sharded processes are interchangeable.
On resume every rank reads the full files and `set_model_state_dict` / `set_optimizer_state_dict` keep each rank's
slice. A model whose weights are whole on every rank (one process, DDP) takes the unchanged single-process path.
Sharding is told from the parameters, not from Accelerate's config (tests/training/test_fsdp_checkpoint.py drives
it with 2 CPU processes and gloo).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..folders import SET_ASIDE, recover_set_aside, swap_into_place, verify_complete, write_complete_marker

logger = logging.getLogger(__name__)

PREFIX = "step-"
LOCK = ".lock"


@dataclass
class TrainerState:
    """Everything besides weights and optimizer that a resumed run needs to continue exactly."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed, per process
    # How `batches_in_epoch` was counted: a resume with other values moves to the same position in the data
    # (loop.resume_position). None in checkpoints written before these were recorded: taken as the resuming run's.
    num_processes: int | None = None
    batch_size: int | None = None  # train.batch_size (per process) of the run that wrote the checkpoint
    tokens_seen: int = 0
    elapsed_seconds: float = 0.0
    bad_steps_in_a_row: int = 0
    skipped_steps: int = 0
    initial_eval: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{PREFIX}{step:08d}"


def optimizer_to_files(optimizer: torch.optim.Optimizer | dict, folder: Path) -> None:
    """`optimizer`: a torch optimizer, or a state dict in `optimizer.state_dict()`'s layout (parameters numbered by
    position), such as `full_optimizer_state` returns."""
    state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    tensors, scalars = {}, {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def read_optimizer_files(folder: Path) -> dict:
    """The optimizer state of a checkpoint in `optimizer.state_dict()`'s layout (parameters numbered by position)."""
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
    return {"state": state, "param_groups": groups}


def optimizer_from_files(optimizer: torch.optim.Optimizer, folder: Path, model: torch.nn.Module | None = None) -> None:
    """Load a checkpoint's optimizer state into `optimizer`. With the `model` it trains: a sharded (FSDP2) model
    keeps each rank's slice of the full state (a collective call: every rank must make it)."""
    state = read_optimizer_files(folder)
    if model is not None and is_sharded(model) and state["state"]:
        load_sharded_optimizer_state(unwrap(model), optimizer, state, folder)
    else:
        optimizer.load_state_dict(state)


def save_checkpoint(
    run_dir: Path,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    trainer_state: TrainerState,
    keep_last: int,
    recipe_yaml: str,
    is_main: bool = True,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a complete checkpoint atomically and prune old ones; return its folder.

    Call it on every rank, with `is_main` true on rank 0 alone: a sharded (FSDP2) model's weights and optimizer
    state are gathered with every rank taking part, then rank 0 writes. For a model whose weights are whole on this
    process (one process, DDP) nothing is gathered, and calling it on the main process alone is enough.
    `recipe_yaml` (the resolved recipe) is stored with it: a rerun compares its own recipe against it.
    `extra_files` (path inside the checkpoint -> content; rank 0's) are written before COMPLETE, so its sha256
    covers them: a streamed corpus's reader states."""
    final = checkpoint_dir(run_dir, trainer_state.step)
    weights = full_model_state(model)  # collective calls for a sharded model: before any rank-0-only work
    optimizer_state = full_optimizer_state(model, optimizer)
    if not is_main:
        return final
    temporary = final.parent / f".tmp-{final.name}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    write_model_folder(temporary / "model", model, tokenizer, weights)
    optimizer_to_files(optimizer_state, temporary)
    (temporary / "trainer_state.json").write_text(json.dumps(asdict(trainer_state), indent=2))
    (temporary / "recipe.yaml").write_text(recipe_yaml)
    for name, content in (extra_files or {}).items():
        (temporary / name).parent.mkdir(parents=True, exist_ok=True)
        (temporary / name).write_bytes(content)
    write_complete_marker(temporary)
    swap_into_place(temporary, final)
    prune_checkpoints(run_dir, keep_last)
    return final


def write_model_folder(folder: Path, model, tokenizer, weights: dict | None = None) -> None:
    """The save_pretrained folder (weights, config, code) plus the tokenizer, if any. `weights`: what
    `full_model_state(model)` gathered for a sharded model (rank 0 only); None writes the model's own weights."""
    model = unwrap(model)
    with original_class(model):
        if weights is None:
            model.save_pretrained(folder)
        else:  # a copy: save_pretrained empties the dict it is given
            model.save_pretrained(folder, state_dict=dict(weights))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


@contextmanager
def original_class(model: torch.nn.Module):
    """FSDP2 gives the model a class made at run time (`FSDP<Name>`, in torch's module `_fsdp_init`). Saved as
    such, save_pretrained would copy torch's FSDP source files as the model's code and name that class in
    config.json's auto_map (and in the live config). While saving (rank 0 alone; no collective call runs in it),
    the model is of its own class again."""
    made_by_fsdp = type(model)
    if not torch.distributed.is_available():
        yield model
        return
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield model
        return
    model.__class__ = next(cls for cls in made_by_fsdp.__mro__ if not issubclass(cls, FSDPModule))
    try:
        yield model
    finally:
        model.__class__ = made_by_fsdp


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


def set_aside_newer_checkpoints(run_dir: Path, step: int) -> None:
    """Checkpoints newer than the one a run resumes from failed verification: rename them out of the way (kept for
    inspection, never deleted), so pruning, which goes by step, cannot evict good checkpoints in their favour."""
    for folder in list_checkpoints(run_dir):
        if step_of(folder) > step:
            target = folder.parent / f".unusable-{folder.name}"
            if target.exists():
                shutil.rmtree(target)
            os.replace(folder, target)
            logger.warning(f"moved the unusable checkpoint {folder.name} to {target}")


def find_resumable_checkpoint(run_dir: Path, report: bool = True) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are reported (with `report`) and skipped."""
    for folder in list_checkpoints(run_dir):
        problem = verify_complete(folder)
        if problem is None:
            return folder
        if report:
            logger.warning(f"checkpoint {folder} is unusable: {problem}; falling back to an earlier one")
    return None


def load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load `folder/model/model.safetensors` into `model` in place; only tied copies may be absent from the file.
    A sharded (FSDP2) model keeps each rank's slice (a collective call: every rank must make it)."""
    state = load_file(str(folder / "model" / "model.safetensors"))
    if is_sharded(model):
        load_sharded_weights(unwrap(model), state, folder)
        return
    result = model.load_state_dict(state, strict=False)
    tied = set(tied_names(model))  # second names of shared tensors, at any depth (save_pretrained drops them)
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


# ----------------------------------------------------------------------------------------------- sharded models
def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DDP (`.module`) and torch.compile (`._orig_mod`); an FSDP2 model is its own module."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether the model's parameters are DTensors (FSDP2's `fully_shard`): each rank then holds a slice of each
    weight, and gathering or loading the full state needs every rank. Told from the parameters, whatever launched
    the run."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(parameter, DTensor) for parameter in unwrap(model).parameters())


def tied_names(model: torch.nn.Module) -> dict[str, str]:
    """Every second name of a parameter (tied weights: the decoder sharing the input embeddings) -> its first."""
    first: dict[int, str] = {}
    aliases = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            aliases[name] = first[id(parameter)]
        else:
            first[id(parameter)] = name
    return aliases


def full_model_state(model: torch.nn.Module) -> dict | None:
    """A sharded model's full state dict (CPU tensors) on rank 0, {} on the other ranks; a collective call that
    every rank must make. None for a model whose weights are whole on this process (save_pretrained reads them)."""
    model = unwrap(model)
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if weights:
        # Tied names come back as separate copies; one tensor under both names, as in an unsharded model's
        # state_dict(), lets save_pretrained drop the tied copy exactly as it does for one process.
        for alias, name in tied_names(model).items():
            if name in weights and alias in weights:
                weights[alias] = weights[name]
    return weights


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state in `optimizer.state_dict()`'s layout (parameters numbered by position over the param
    groups). For a sharded model it is gathered in full (a collective call that every rank must make) and returned
    on rank 0; the other ranks get {}."""
    if not is_sharded(model) or not optimizer.state:  # no state yet: nothing to gather (and torch would make some)
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    by_name = get_optimizer_state_dict(
        unwrap(model), optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if not by_name:
        return {}
    names = chain.from_iterable(group["params"] for group in by_name["param_groups"])
    position = {name: index for index, name in enumerate(names)}
    return {
        "state": {position[name]: values for name, values in by_name["state"].items()},
        "param_groups": [{**group, "params": [position[name] for name in group["params"]]}
                         for group in by_name["param_groups"]],
    }


def load_sharded_weights(model: torch.nn.Module, state: dict, folder: Path) -> None:
    """The full weights of a checkpoint (read on every rank) into a sharded model: each rank keeps its slice."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    for alias, name in tied_names(model).items():  # the file holds one name of each tied weight
        if alias not in state and name in state:
            state[alias] = state[name]
        elif name not in state and alias in state:
            state[name] = state[alias]
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {folder} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def load_sharded_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                                 folder: Path) -> None:
    """Optimizer state numbered by position (read on every rank) into the optimizer of a sharded model: renamed
    to the parameters' names, as torch.distributed.checkpoint expects, and each rank keeps its slice."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    saved_sizes = [len(group["params"]) for group in state["param_groups"]]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if saved_sizes != sizes:
        raise ValueError(
            f"checkpoint {folder}: its optimizer has parameter groups of sizes {saved_sizes}, this one {sizes}"
        )
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    order = [names[id(parameter)] for group in optimizer.param_groups for parameter in group["params"]]
    by_name = {
        "state": {order[int(index)]: values for index, values in state["state"].items()},
        "param_groups": [{**group, "params": [order[index] for index in group["params"]]}
                         for group in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
    for group, saved in zip(optimizer.param_groups, state["param_groups"]):  # torch's round trip makes tuples lists
        group.update({key: value for key, value in saved.items() if isinstance(value, tuple)})


# ----------------------------------------------------------------------------------------------- run lock
class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder's lock."""


def acquire_run_lock(run_dir: Path) -> Path:
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
                logger.info(f"{path}: taking over the lock of process {holder.get('pid')}, which is no longer running")
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

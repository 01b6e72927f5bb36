"""Folders hf_pretrain writes and reads: run folders and their final/, output folders of `finetune` and `export`
(what they may replace), completeness markers and swaps that never leave a moment without a complete copy, and
which folders' code may run when they are loaded.

Plain files and JSON only (no torch): the pretraining loop, export, embed and finetune all use these.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .recipe import RecipeError
from .version import __version__

COMPLETE = "COMPLETE"
SET_ASIDE = ".replaced-"  # an older copy (of a checkpoint step or of final/) while its replacement is renamed in
# Written into every folder `finetune` and `export` write, naming the command and the top-level entries it may
# hold: a later run of the same command replaces such a folder; any other non-empty folder is refused.
OUTPUT_MARKER = ".hf_pretrain_output.json"
# Our families: loaded through the classes `import hf_pretrain` registers, never through a folder's .py files.
OWN_MODEL_TYPES = frozenset({"hf_pretrain_encoder", "hf_pretrain_decoder", "hf_pretrain_dae", "hf_pretrain_dae_features"})


# --------------------------------------------------------------------------------------------------- run folders
def is_run_dir(path: Path) -> bool:
    return (path / "final" / "config.json").is_file() and not (path / "config.json").is_file()


def is_or_holds(folder: Path, path: Path) -> bool:
    """`folder` is `path` or one of its parents: writing `folder` would replace what `path` holds."""
    return Path(folder).resolve() in (Path(path).resolve(), *Path(path).resolve().parents)


def final_folder(run_dir: Path, error=RecipeError) -> Path:
    """RUN/final, checked against its COMPLETE marker (the sha256 of every file, written last by the loop)."""
    final = Path(run_dir) / "final"
    if not (final / "config.json").is_file():
        raise error(
            f"{run_dir} has no final/config.json: a finished pretraining run folder (its output.dir) is needed; "
            "a run that was stopped early can be finished by running the same pretrain command again."
        )
    problem = verify_complete(final)
    if problem is not None:
        raise error(f"{final} cannot be used: {problem}. Running the same pretrain command again rewrites final/ "
                    "from the last checkpoint.")
    return final


def model_location(model: str, error=RecipeError) -> str:
    """The model a user names: a run folder means its final/ (checked complete); anything else (a model folder, a
    Hub id) is used as given. Fine-tuning, embed and export all read models through this."""
    return str(final_folder(Path(model), error)) if is_run_dir(Path(model)) else model


# --------------------------------------------------------------------------------------------------- integrity
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


def write_complete_marker(folder: Path) -> None:
    """COMPLETE: the sha256 of every file in `folder`, written last and synced, so a finished folder can be told
    from one a kill cut short."""
    hashes = {str(path.relative_to(folder)): sha256_of(path) for path in sorted(folder.rglob("*")) if path.is_file()}
    (folder / COMPLETE).write_text(json.dumps(hashes, indent=2))
    fsync_tree(folder)


def swap_into_place(temporary: Path, final: Path) -> None:
    """Rename a finished `temporary` folder to `final`. An existing `final` is renamed aside first and removed
    only after the new one is in place; if that second rename fails (a full disk) the old copy is put back, and a
    kill between the two renames leaves the old copy aside, where `recover_set_aside` finds it."""
    set_aside = final.parent / f"{SET_ASIDE}{final.name}"
    if final.exists():
        if set_aside.exists():
            shutil.rmtree(set_aside)
        os.replace(final, set_aside)
    try:
        os.replace(temporary, final)
    except BaseException:
        if set_aside.exists() and not final.exists():
            os.replace(set_aside, final)
        raise
    shutil.rmtree(set_aside, ignore_errors=True)


def recover_set_aside(final: Path) -> None:
    """A kill between the two renames of `swap_into_place` leaves only the set-aside copy: put it back."""
    set_aside = final.parent / f"{SET_ASIDE}{final.name}"
    if set_aside.is_dir() and not final.exists():
        os.replace(set_aside, final)


def verify_complete(folder: Path) -> str | None:
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


# --------------------------------------------------------------------------------------------------- output folders
def check_output_dir(out: Path, command: str, option: str, error=RecipeError) -> None:
    """Refuse, before any work, an output folder that holds anything but an earlier output of `command` (one with
    its OUTPUT_MARKER, holding only the entries the marker names): replacing such a folder loses nothing, while
    any other folder may hold a pretraining run's checkpoints or the user's own files."""
    if not out.exists():
        return
    shown = f"{option} {out}" if option.startswith("--") else f"{option}={str(out)!r}"
    allowed = (f"allowed: a new or empty folder, or one an earlier `hf-pretrain {command}` wrote (it holds "
               f"{OUTPUT_MARKER}); choose another {option}")
    if not out.is_dir():
        raise error(f"{shown} is a file; {allowed}.")
    marker = read_output_marker(out)
    own = set(marker.get("entries", ())) if marker.get("command") == command else set()
    foreign = sorted(p.name for p in out.iterdir() if p.name != OUTPUT_MARKER and p.name not in own)
    if foreign:
        listed = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise error(f"{shown} holds {listed}, which `hf-pretrain {command}` did not write and will not delete; "
                    f"{allowed}.")


def read_output_marker(folder: Path) -> dict:
    try:
        marker = json.loads((folder / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def write_output_marker(folder: Path, command: str, entries) -> None:
    marker = {"command": command, "entries": sorted(set(entries) - {OUTPUT_MARKER}), "hf_pretrain": __version__}
    (folder / OUTPUT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- model code
def remote_code_allowed(source: str, trust_remote_code: bool, option: str = "trust_remote_code=true") -> bool:
    """The trust_remote_code to load `source` (a model or tokenizer folder, or a Hub id) with.

    Our own families load without it, through the classes `import hf_pretrain` registers, so the .py files a
    folder carries (copies that anyone may have edited) never run. transformers already prefers a registered
    model or config class over a folder's auto_map, but a tokenizer_config.json auto_map runs whenever
    trust_remote_code is true. Any other folder that ships code (an auto_map in config.json or
    tokenizer_config.json) is refused unless the user asked for its code to run; `option` says how to ask."""
    config = read_folder_json(source, "config.json")
    if config.get("model_type") in OWN_MODEL_TYPES:
        return False
    code = sorted(set(code_files(config) + code_files(read_folder_json(source, "tokenizer_config.json"))))
    if code and not trust_remote_code:
        raise RecipeError(
            f"trust_remote_code is false (the default) and {source!r} ships its own Python code ({', '.join(code)}) "
            f"that loading it would run; allowed: {option} to run that code (read it first), or a model without it."
        )
    return trust_remote_code


def read_folder_json(source: str, name: str) -> dict:
    """A JSON file of a local folder or a Hub repository, without running anything; {} when there is none."""
    path = Path(source) / name
    if not Path(source).is_dir():
        from transformers.utils import cached_file

        try:
            path = Path(cached_file(source, name))
        except (OSError, ValueError, TypeError):  # not a Hub id, not reachable, or no such file: from_pretrained says
            return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def code_files(config: dict) -> list[str]:
    """The module files an auto_map names ("repo--module.Class" keeps its repo), for the user to read."""
    auto_map = config.get("auto_map") or {}
    refs = []
    for value in auto_map.values() if isinstance(auto_map, dict) else [auto_map]:
        refs += [ref for ref in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(ref, str)]
    return [ref.rsplit(".", 1)[0] + ".py" for ref in refs]


def save_tokenizer(tokenizer, folder: Path) -> None:
    """save_pretrained, without an auto_map when a built-in class loaded the tokenizer (the folder's code did not
    run): the saved folder would name code it does not hold, or code that is not what loaded it."""
    if type(tokenizer).__module__.startswith("transformers."):
        tokenizer.init_kwargs.pop("auto_map", None)
    tokenizer.save_pretrained(folder)

"""What a command shows its user: the `hf_pretrain` logger hierarchy on stderr, from the main process only, at the
level `--quiet` / `--verbose` chose, and the libraries' own output kept below it.

Every module logs to `logging.getLogger(__name__)` (names under "hf_pretrain"); nothing prints reports itself.

    quiet     warnings and errors only; no progress bars
    default   one line per report (data, cleaning, packing, resume, skipped steps), our own progress bars; the
              libraries' progress bars and Trainer's per-epoch dicts are off
    verbose   details (debug) too, and the libraries' bars and Trainer's own output

`setup_console` is called by the CLI and by `hf_pretrain.pretrain()`; a program that set up logging itself (a
handler on the root logger) keeps its own set-up: records then propagate to its handlers.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager

LEVELS = {"quiet": logging.WARNING, "default": logging.INFO, "verbose": logging.DEBUG}
ROOT = "hf_pretrain"
_verbosity = "default"


def process_rank() -> int:
    """This process's global rank under `accelerate launch` / torchrun (0 without a launcher)."""
    return int(os.environ.get("RANK", "0") or 0)


class MainProcessOnly(logging.Filter):
    """Reports come from rank 0 alone (every rank runs the same code and would say the same thing N times);
    warnings and errors of any rank pass, marked with their rank."""

    def filter(self, record: logging.LogRecord) -> bool:
        rank = process_rank()
        if rank == 0:
            return True
        if record.levelno >= logging.WARNING:
            record.msg = f"[rank {rank}] {record.msg}"
            return True
        return False


class ConsoleHandler(logging.Handler):
    """Writes to the current sys.stderr (a test's capture, too) through tqdm, so a line logged while a progress
    bar runs does not tear it."""

    def __init__(self):
        super().__init__()
        self.setFormatter(ConsoleFormatter())
        self.addFilter(MainProcessOnly())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break a run
            self.handleError(record)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def setup_console(verbosity: str = "default", force: bool = True) -> None:
    """Route the hf_pretrain loggers to stderr at `verbosity` (quiet, default, verbose). `force=False` (the Python
    API) leaves a program's own logging set-up alone."""
    global _verbosity
    if verbosity not in LEVELS:
        raise ValueError(f"verbosity={verbosity!r} is not allowed; choose one of {', '.join(LEVELS)}.")
    logger = logging.getLogger(ROOT)
    ours = [handler for handler in logger.handlers if isinstance(handler, ConsoleHandler)]
    if not force and (ours or logging.getLogger().handlers or [h for h in logger.handlers if h not in ours]):
        if logger.level == logging.NOTSET:
            logger.setLevel(LEVELS[verbosity])
        return
    _verbosity = verbosity
    for handler in ours:
        logger.removeHandler(handler)
    logger.addHandler(ConsoleHandler())
    logger.setLevel(LEVELS[verbosity])
    quiet_libraries(verbosity)


def quiet_libraries(verbosity: str) -> None:
    """The libraries' progress bars only with verbose; their warnings stay on unless quiet."""
    import datasets
    import huggingface_hub
    import transformers

    library_level = logging.ERROR if verbosity == "quiet" else logging.WARNING
    transformers.logging.set_verbosity(library_level)
    datasets.logging.set_verbosity(library_level)
    if verbosity == "verbose":
        transformers.logging.enable_progress_bar()
        datasets.enable_progress_bars()
        huggingface_hub.utils.enable_progress_bars()
    else:
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()
        huggingface_hub.utils.disable_progress_bars()


# A data step over at least this many documents takes long enough (tens of seconds and up on a CPU) to show its
# progress bar at the default level; shorter ones finish before a bar would say anything.
LONG_STEP_DOCUMENTS = 100_000


@contextmanager
def library_progress(documents: int):
    """The `datasets` progress bars of a data step over `documents` documents: on for a long step at the default
    level (they are on for every step with --verbose, off with --quiet)."""
    import datasets

    turn_on = _verbosity == "default" and documents >= LONG_STEP_DOCUMENTS and shows_progress()
    if turn_on:
        datasets.enable_progress_bars()
    try:
        yield
    finally:
        if turn_on:
            datasets.disable_progress_bars()


def verbosity() -> str:
    return _verbosity


def is_verbose() -> bool:
    return _verbosity == "verbose"


def shows_progress() -> bool:
    """Whether this process draws our own progress bars: the main process, unless quiet."""
    return _verbosity != "quiet" and process_rank() == 0

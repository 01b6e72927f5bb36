"""The `hf-pretrain` command line (also `python -m hf_pretrain`, and `accelerate launch -m hf_pretrain ...`).

`main` builds the parser from the two groups of subcommands (`pretraining`: quickstart, pretrain, tokenizer,
recipes; `transfer`: finetune, embed, generate, export, report), sets up what the command shows (`--quiet`,
`--verbose`, every subcommand) and runs it under one error policy: a user error ends it with one line,
`hf-pretrain: error: <message>`, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from ..console import setup_console
from .pretraining import add_pretraining_commands
from .transfer import add_transfer_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-pretrain",
        description="Pretrain your own transformer on your own text, in Hugging Face format.",
    )
    shown = argparse.ArgumentParser(add_help=False)  # the options every subcommand takes
    volume = shown.add_mutually_exclusive_group()
    volume.add_argument("-q", "--quiet", action="store_true", help="show warnings and errors only, no progress bars")
    volume.add_argument("-v", "--verbose", action="store_true",
                        help="show details too, and the libraries' own progress bars and logs (Trainer's included)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_pretraining_commands(commands, shown)
    add_transfer_commands(commands, shown)
    return parser


# What a user can fix, as opposed to a bug: a recipe key or value (RecipeError is a ValueError), a value or path
# given on the command line (ValueError; FileNotFoundError and the other OSErrors: a missing, unreadable or
# unwritable file, a Hub id that does not resolve), an optional package that is not installed (ImportError).
# Each ends the command with one line on stderr and exit status 2, as argparse's own errors do; anything else
# keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand under the one error policy of `hf-pretrain` (see USER_ERRORS). A training stopped
    by SIGTERM/SIGINT (its checkpoint saved) exits 128 + the signal, the status of a process that signal ended."""
    from ..training.checkpoint import RunFolderBusy
    from ..training.loop import TrainingInterrupted

    setup_console("quiet" if getattr(args, "quiet", False) else "verbose" if getattr(args, "verbose", False)
                  else "default")
    try:
        return args.handler(args)
    except TrainingInterrupted as stopped:
        print(f"hf-pretrain: {stopped}", file=sys.stderr)
        return 128 + stopped.signal_number
    except (*USER_ERRORS, RunFolderBusy) as error:  # RunFolderBusy: another run holds the folder; wait or move
        print(f"hf-pretrain: error: {one_line(error)}", file=sys.stderr)
        return 2


def one_line(error: BaseException) -> str:
    """The message on one line (a library's message may span several), or the error's type when it has none."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    return run_command(parse_command_line(build_parser(), argv))


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """argparse, with key=value overrides allowed after an option too (`pretrain mlm-tiny --quiet train.lr=1e-3`):
    argparse ends a `nargs="*"` positional at the first option and rejects what follows, and its
    parse_intermixed_args does not reach into subcommands, so the leftover overrides are appended here. Anything
    else left over is refused as parse_args refuses it."""
    args, leftover = parser.parse_known_args(argv)
    overrides = [item for item in leftover if "=" in item and not item.startswith("-")]
    if len(overrides) < len(leftover) or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(leftover)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args

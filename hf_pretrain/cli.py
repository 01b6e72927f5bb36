"""The `hf-pretrain` command line (also `python -m hf_pretrain`, and `accelerate launch -m hf_pretrain ...`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


# The quickstart fine-tunes on a labeled subset: 32 docstrings per class. Pretraining is for the case where raw
# text is plentiful and labels are not; with all 1,168 labels this lexical task is learned about as well from
# scratch as from any encoder a few CPU-minutes can pretrain (measured with the quickstart's encoder: 86.1% vs
# 85.8% from scratch), with 256 the pretrained encoder's knowledge of which words go together is what generalises
# (README, "Measured": the transfer paragraph).
QUICKSTART_LABELED_EXAMPLES = 256
# The pretraining recipe of the quickstart. At its 3-minute budget benchmarks/bench_transfer_budget.py measured the
# two objectives level (256 labels, 3 seeds: mlm-tiny +9.9 ± 1.3 points over scratch, rtd-tiny +10.5 ± 2.1), and
# replaced-token detection did not pull ahead at 10 or 30 minutes either (benchmarks/RESULTS.md#transfer-budget), so
# the quickstart keeps the masked LM, whose final folder is the fill-mask model the README's examples load.
QUICKSTART_RECIPE = "mlm-tiny"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-pretrain",
        description="Pretrain your own transformer on your own text, in Hugging Face format.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quickstart = commands.add_parser(
        "quickstart", help="see it work, offline: tokenizer + pretraining on the built-in corpus + fine-tuning"
    )
    quickstart.add_argument("--out", default="runs/quickstart", help="run folder (default runs/quickstart)")
    quickstart.add_argument(
        "--labeled-examples", type=int, default=QUICKSTART_LABELED_EXAMPLES, metavar="N",
        help=f"labeled training docstrings the fine-tuning runs get (default {QUICKSTART_LABELED_EXAMPLES}, "
             "32 per class; 0: all 1,168)",
    )
    quickstart.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. train.max_minutes=2")
    quickstart.set_defaults(handler=run_quickstart)

    pretrain = commands.add_parser("pretrain", help="pretrain from a recipe (runs again = resume)")
    pretrain.add_argument("recipe", help="a recipe YAML path or the name of a shipped recipe (e.g. mlm-small)")
    pretrain.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=3e-4")
    pretrain.add_argument(
        "--restart", action="store_true",
        help="start over: move an earlier run in output.dir aside (into output.dir/replaced-<time>/) instead of "
             "resuming it; needed when the recipe changed in a way a resume cannot take",
    )
    pretrain.set_defaults(handler=run_pretrain)

    tokenizer = commands.add_parser("tokenizer", help="train a tokenizer on the recipe's training text")
    tokenizer.add_argument("recipe", help="a recipe YAML path or shipped recipe name")
    tokenizer.add_argument("overrides", nargs="*", metavar="key=value")
    tokenizer.add_argument("--out", help="output folder (default: OUTPUT_DIR/tokenizer of the recipe)")
    tokenizer.set_defaults(handler=run_tokenizer)

    recipes = commands.add_parser("recipes", help="list the recipes shipped with the package")
    recipes.set_defaults(handler=run_list_recipes)

    from .cli_transfer import add_transfer_commands

    add_transfer_commands(commands)  # finetune, embed, export, report
    return parser


def run_pretrain(args: argparse.Namespace) -> int:
    from . import pretrain

    result = pretrain(args.recipe, args.overrides, restart=args.restart)
    print_summary(result)
    if result["objective"] == "clm":
        print_sample_continuations(result["final_dir"])
    return 0


# Prompts in the built-in corpus's register (stdlib docstrings); on your own text they show the model's style.
SAMPLE_PROMPTS = ("Return the", "This module provides", "Raise ValueError if")


def print_sample_continuations(final_dir: str, max_new_tokens: int = 24) -> None:
    """A causal LM's greedy continuations of a few prompts, printed once (by the main process)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    from .hub.generate import generate_text, load_causal_lm

    model, tokenizer = load_causal_lm(final_dir)
    # Rotary positions have no hard limit, but past the trained length a model's text degrades: stay inside it.
    max_new_tokens = max(1, min(max_new_tokens, getattr(model.config, "max_position_embeddings", 512) - 8))
    print("\nsample continuations (greedy; hf-pretrain generate RUN \"prompt\" for more):")
    for prompt in SAMPLE_PROMPTS:
        text = generate_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens)
        print(f"  {prompt}|{' '.join(text.split())}")


def run_tokenizer(args: argparse.Namespace) -> int:
    from .recipe import RecipeError, load_recipe
    from .data.pipeline import load_text_splits
    from .data.tokenizer import train_tokenizer

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.objective == "dae-features":
        raise RecipeError("objective='dae-features' reads float vectors, not text: it has no tokenizer to train.")
    out = Path(args.out or Path(recipe.output.dir) / "tokenizer")
    if recipe.tokenizer.path:
        raise RecipeError(f"tokenizer.path={recipe.tokenizer.path!r} is set: the recipe reuses a tokenizer; unset it "
                          "to train one.")
    train_texts, _ = load_text_splits(recipe, print)
    texts = train_texts["text"]
    if recipe.tokenizer.max_train_documents:
        texts = texts[: recipe.tokenizer.max_train_documents]
    tokenizer = train_tokenizer(
        texts,
        kind=recipe.tokenizer.kind,
        vocab_size=recipe.tokenizer.vocab_size,
        lowercase=recipe.tokenizer.lowercase,
        objective=recipe.objective,
        model_max_length=recipe.data.block_size,
    )
    tokenizer.save_pretrained(out)
    print(f"{recipe.tokenizer.kind} tokenizer with {len(tokenizer)} tokens trained on {len(texts)} documents -> {out}")
    return 0


def run_quickstart(args: argparse.Namespace) -> int:
    """Offline, no arguments: pretrain the tiny masked LM on the built-in corpus, fine-tune it on the built-in
    task next to the same architecture from scratch, and export a Hub-ready folder with its model card."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .finetune import finetune
    from .hub.export import export_run
    from .recipe import RecipeError, load_recipe
    from .training.loop import Pretraining

    labeled = args.labeled_examples
    if labeled < 0:  # checked before any compute
        raise RecipeError(f"--labeled-examples={labeled} is not allowed; use a number of examples >= 1, or 0 for all.")
    out = Path(args.out)
    recipe = load_recipe(QUICKSTART_RECIPE, [f"output.dir={out}", *args.overrides])
    print(f"quickstart 1/3: pretraining on the built-in corpus (recipe {QUICKSTART_RECIPE}) -> {out}")
    result = Pretraining(recipe).run()
    print_summary(result)
    check_final_folder_loads(result["final_dir"])

    print("\nquickstart 2/3: fine-tuning on the built-in task (which stdlib package a docstring belongs to), "
          f"{f'{labeled} labeled examples' if labeled else 'all labeled examples'}, from the pretrained weights "
          "and from scratch, same settings")
    tuned = finetune("finetune-classification", [f"model={result['final_dir']}",
                                                  f"output.dir={out / 'finetune-classification'}",
                                                  "compare_scratch=true",
                                                  # a small labeled set: more passes, early stopping still ends it
                                                  *([f"data.max_train_examples={labeled}", "train.epochs=20"]
                                                    if labeled else [])])

    print("\nquickstart 3/3: exporting the Hub-ready folder (weights, code, tokenizer, card, loss curve)")
    exported = export_run(out)
    print(quickstart_table(result, tuned, exported))
    return 0


def quickstart_table(pretraining: dict, tuned: dict, exported: Path) -> str:
    pretrained, scratch = tuned["runs"]["pretrained"]["test"], tuned["runs"]["scratch"]["test"]
    gain = 100 * (pretrained["accuracy"] - scratch["accuracy"])
    train_rows = tuned.get("train_examples")
    pretrained_label = f"pretrained ({pretraining['minutes']:.1f} min, {pretraining['tokens'] / 1e6:.1f}M tokens)"
    return "\n".join([
        "",
        f"built-in task, test split ({train_rows} labeled training examples)" if train_rows else "built-in task, test split",
        f"  {'':36} accuracy   macro F1",
        f"  {'from scratch':36} {scratch['accuracy']:7.1%}   {scratch['f1']:7.1%}",
        f"  {pretrained_label:36} {pretrained['accuracy']:7.1%}   {pretrained['f1']:7.1%}",
        f"  {'gain from pretraining':36} {gain:+.1f} points",
        f"Hub-ready folder: {exported} (push with: hf-pretrain export {pretraining['run_dir']} --push-to-hub USER/NAME)",
    ])


def check_final_folder_loads(final_dir: str) -> None:
    import transformers

    from .hub.export import export_loader

    # In this process the installed, registered classes load it (no folder code runs); where hf_pretrain is not
    # installed the same call needs trust_remote_code=True (tests/hub/test_export.py runs that in a fresh process).
    loader = export_loader(Path(final_dir), "hf_pretrain_encoder")  # the Auto class of its saved head
    model = getattr(transformers, loader).from_pretrained(final_dir)
    print(f"loaded {final_dir} with {loader}.from_pretrained(...) (without hf_pretrain installed: "
          f"add trust_remote_code=True): {type(model).__name__}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")


def print_summary(result: dict) -> None:
    before, after = result["initial_eval"], result["final_eval"]
    lines = [
        "",
        f"steps {result['steps']}, tokens {result['tokens']:,}, {result['minutes']:.1f} min"
        + (f", {result['skipped_steps']} skipped (non-finite)" if result["skipped_steps"] else ""),
    ]
    from .training.objectives import OBJECTIVES

    described = OBJECTIVES[result["objective"]].describe_evals(before, after) if before and after else None
    if described is not None:  # an objective with its own metrics (dae-features: MSE, R^2)
        lines.append(described)
    elif before and after:
        lines.append(f"eval loss {before['loss']:.3f} -> {after['loss']:.3f}   "
                     f"perplexity {before['perplexity']:.1f} -> {after['perplexity']:.1f}")
        if result.get("objective") == "dae":
            lines.append(f"reconstruction token accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}   "
                         f"exact match {before['exact_match']:.1%} -> {after['exact_match']:.1%}")
        else:
            kind = "next-token" if result.get("objective") == "clm" else "masked-token"
            lines.append(f"{kind} accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}")
    lines.append(f"final model: {result['final_dir']}   (run folder: {result['run_dir']})")
    print("\n".join(lines))


def run_list_recipes(args: argparse.Namespace) -> int:
    from .recipe import shipped_recipe_names

    print("\n".join(shipped_recipe_names()))
    return 0


# What a user can fix, as opposed to a bug: a recipe key or value (RecipeError is a ValueError), a value or path
# given on the command line (ValueError; FileNotFoundError and the other OSErrors: a missing, unreadable or
# unwritable file, a Hub id that does not resolve), an optional package that is not installed (ImportError).
# Each ends the command with one line on stderr and exit status 2, as argparse's own errors do; anything else
# keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand under the one error policy of `hf-pretrain` (see USER_ERRORS). A training stopped
    by SIGTERM/SIGINT (its checkpoint saved) exits 128 + the signal, the status of a process that signal ended."""
    from .training.checkpoint import RunFolderBusy
    from .training.loop import TrainingInterrupted

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
    return run_command(build_parser().parse_args(argv))

"""The pretraining subcommands of `hf-pretrain`: quickstart, pretrain, tokenizer, recipes.

Results (run summaries, tables, where the files are) go to stdout; reports while a command works go to the
hf_pretrain loggers (stderr, see hf_pretrain/console.py).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# The quickstart fine-tunes on a labeled subset: 32 docstrings per class. Pretraining is for the case where raw
# text is plentiful and labels are not; with all 1,168 labels this lexical task is learned about as well from
# scratch as from any encoder a few CPU-minutes can pretrain (measured with the quickstart's encoder: 86.1% vs
# 85.8% from scratch), with 256 the pretrained encoder's knowledge of which words go together is what generalises
# (README, "Measured": the transfer paragraph).
QUICKSTART_LABELED_EXAMPLES = 256
# The pretraining recipe of the quickstart. At its 3-minute budget benchmarks/bench_transfer_budget.py measured the
# two objectives level (256 labels, 3 seeds: mlm-tiny +9.9 ± 1.3 points over scratch, rtd-tiny +10.5 ± 2.1), and
# replaced-token detection did not pull ahead at 10 or 30 minutes either (benchmarks/RESULTS.md#transfer-budget), so
# the quickstart keeps the masked LM, whose final folder is the fill-mask model the README's examples load. (That was
# mlm-tiny before its levers; today's, 2 layers with Muon, is +2.0 points over it at 3 one-core minutes:
# benchmarks/RESULTS.md#levers. rtd-tiny was not measured against it.)
QUICKSTART_RECIPE = "mlm-tiny"


def add_pretraining_commands(commands, shown: argparse.ArgumentParser) -> None:
    """Register quickstart, pretrain, tokenizer and recipes on the main parser's subparsers; `shown`: the parent
    parser of the options every subcommand takes (--quiet, --verbose)."""
    quickstart = commands.add_parser(
        "quickstart", parents=[shown],
        help="see it work, offline: tokenizer + pretraining on the built-in corpus + fine-tuning",
    )
    quickstart.add_argument("--out", default="runs/quickstart", help="run folder (default runs/quickstart)")
    quickstart.add_argument(
        "--labeled-examples", type=int, default=QUICKSTART_LABELED_EXAMPLES, metavar="N",
        help=f"labeled training docstrings the fine-tuning runs get (default {QUICKSTART_LABELED_EXAMPLES}, "
             "32 per class; 0: all 1,168)",
    )
    quickstart.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. train.max_minutes=2")
    quickstart.set_defaults(handler=run_quickstart)

    pretrain = commands.add_parser(
        "pretrain", parents=[shown], help="pretrain from a recipe (runs again = resume)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=recipe_keys_help(),
    )
    pretrain.add_argument("recipe", help="a recipe YAML path or the name of a shipped recipe (e.g. mlm-small)")
    pretrain.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=3e-4")
    pretrain.add_argument(
        "--restart", action="store_true",
        help="start over: move an earlier run in output.dir aside (into output.dir/replaced-<time>/) instead of "
             "resuming it; needed when the recipe changed in a way a resume cannot take",
    )
    pretrain.add_argument(
        "--dry-run", action="store_true",
        help="check the recipe and print it resolved, with each key's doc; write nothing, train nothing")
    pretrain.set_defaults(handler=run_pretrain)

    tokenizer = commands.add_parser("tokenizer", parents=[shown],
                                    help="train a tokenizer on the recipe's training text")
    tokenizer.add_argument("recipe", help="a recipe YAML path or shipped recipe name")
    tokenizer.add_argument("overrides", nargs="*", metavar="key=value")
    tokenizer.add_argument("--out", help="output folder (default: OUTPUT_DIR/tokenizer of the recipe)")
    tokenizer.set_defaults(handler=run_tokenizer)

    recipes = commands.add_parser(
        "recipes", parents=[shown], help="list the shipped recipes, or show one resolved with each key's doc",
        description="`hf-pretrain recipes` lists the shipped recipes; `hf-pretrain recipes show NAME [key=value ...]` "
                    "prints one resolved (a shipped name or a YAML path, with overrides), each key with its doc.",
    )
    recipes.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    recipes.add_argument("recipe", nargs="?", help="show: a recipe YAML path or shipped recipe name")
    recipes.add_argument("overrides", nargs="*", metavar="key=value")
    recipes.set_defaults(handler=run_recipes)


# ------------------------------------------------------------------------------------------------ pretrain
def run_pretrain(args: argparse.Namespace) -> int:
    from .. import pretrain
    from ..objectives import objective_spec
    from ..recipe import load_recipe

    if args.dry_run:
        recipe = load_recipe(args.recipe, args.overrides)
        check_model_config(recipe)
        print(resolved_recipe_text(recipe))
        return 0
    result = pretrain(args.recipe, args.overrides, restart=args.restart)
    print(summary_text(result))
    if objective_spec(result["objective"]).generates_text:
        print_sample_continuations(result["final_dir"])
    return 0


def check_model_config(recipe) -> None:
    """model.config against the objective's model family (a typo in a field name), as a run checks it first."""
    from ..objectives import objective_class
    from ..training.objectives.base import check_model_config

    check_model_config(recipe, objective_class(recipe.objective).config_class)


def resolved_recipe_text(recipe) -> str:
    """The recipe resolved (defaults filled in, overrides applied), each key with its doc; the sections the
    objective does not read are left out."""
    from ..objectives import objective_spec
    from ..recipe import annotated_yaml

    spec = objective_spec(recipe.objective)
    unread = [name for name in ("tokenizer", "data", "masking", "rtd", "noise", "features")
              if name not in spec.all_sections]
    header = f"# objective {recipe.objective}: {spec.summary}\n"
    if unread:
        header += f"# sections it does not read (left at their defaults, not shown): {', '.join(unread)}\n"
    return header + annotated_yaml(recipe, sections=spec.all_sections)


def recipe_keys_help() -> str:
    """`pretrain --help`'s list of recipe keys: each with its default and doc."""
    from ..recipe import Recipe, documented_keys

    lines = ["recipe keys (override any with key=value; `hf-pretrain recipes show NAME` prints a recipe resolved):"]
    for key, default, doc in documented_keys(Recipe):
        lines.append(f"  {key} = {default!r}" + (f"\n      {doc}" if doc else ""))
    return "\n".join(lines)


# Prompts in the built-in corpus's register (stdlib docstrings); on your own text they show the model's style.
SAMPLE_PROMPTS = ("Return the", "This module provides", "Raise ValueError if")


def print_sample_continuations(final_dir: str, max_new_tokens: int = 24) -> None:
    """A causal LM's greedy continuations of a few prompts, printed once (by the main process)."""
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    from ..hub.generate import generate_text, load_causal_lm

    model, tokenizer = load_causal_lm(final_dir)
    # Rotary positions have no hard limit, but past the trained length a model's text degrades: stay inside it.
    max_new_tokens = max(1, min(max_new_tokens, getattr(model.config, "max_position_embeddings", 512) - 8))
    print("\nsample continuations (greedy; hf-pretrain generate RUN \"prompt\" for more):")
    for prompt in SAMPLE_PROMPTS:
        text = generate_text(model, tokenizer, prompt, max_new_tokens=max_new_tokens)
        print(f"  {prompt}|{' '.join(text.split())}")


def summary_text(result: dict) -> str:
    """The run summary: steps, tokens, time, and each eval metric of the objective (its registry entry) before the
    first step and after the last."""
    from ..objectives import objective_spec

    before, after = result["initial_eval"], result["final_eval"]
    lines = [
        "",
        f"steps {result['steps']}, tokens {result['tokens']:,}, {result['minutes']:.1f} min"
        + (f", {result['skipped_steps']} skipped (non-finite)" if result["skipped_steps"] else ""),
    ]
    metrics = [m for m in objective_spec(result["objective"]).eval_metrics if m.key in (after or {})]
    width = max([len(m.label) for m in metrics], default=0)
    for metric in metrics:
        shown = [f"{value:.1%}" if metric.percent else f"{value:,.4g}" if value is not None else "-"
                 for value in (before.get(metric.key), after[metric.key])]
        lines.append(f"{metric.label:<{width}}  {shown[0]} -> {shown[1]}")
    lines.append(f"final model: {result['final_dir']}   (run folder: {result['run_dir']})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ tokenizer
def run_tokenizer(args: argparse.Namespace) -> int:
    from ..data.pipeline import load_text_splits, train_recipe_tokenizer
    from ..objectives import objective_spec
    from ..recipe import RecipeError, load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    spec = objective_spec(recipe.objective)
    if not spec.reads_text:
        raise RecipeError(f"objective={recipe.objective!r} reads {spec.reads}, not text: it has no tokenizer to train.")
    if recipe.tokenizer.path:
        raise RecipeError(f"tokenizer.path={recipe.tokenizer.path!r} is set: the recipe reuses a tokenizer; unset it "
                          "to train one.")
    out = Path(args.out or Path(recipe.output.dir) / "tokenizer")
    tokenizer = train_recipe_tokenizer(recipe, load_text_splits(recipe).train, spec.tokenizer_layout)
    tokenizer.save_pretrained(out)
    print(f"{recipe.tokenizer.kind} tokenizer with {len(tokenizer)} tokens -> {out}")
    return 0


# ------------------------------------------------------------------------------------------------ recipes
def run_recipes(args: argparse.Namespace) -> int:
    from ..recipe import shipped_recipe_names

    if args.action == "list":
        if args.recipe:
            raise ValueError(f"`hf-pretrain recipes {args.recipe}`: to print a recipe, write `hf-pretrain recipes show "
                             f"{args.recipe}`.")
        print("\n".join(f"{name:<28} {recipe_line(name)}" for name in shipped_recipe_names()))
        return 0
    if not args.recipe:
        raise ValueError("`hf-pretrain recipes show` needs a recipe: a shipped name (see `hf-pretrain recipes`) or a "
                         "YAML path.")
    print(show_recipe(args.recipe, args.overrides))
    return 0


def recipe_line(name: str) -> str:
    """What a shipped recipe trains: its first comment line, else its objective or task."""
    from ..recipe import read_recipe_data, recipe_kind
    from ..recipe.loading import resolve_recipe_path

    first = resolve_recipe_path(name).read_text().splitlines()[:1]
    if first and first[0].startswith("#"):
        return first[0].lstrip("# ").removeprefix(f"{name}:").strip()
    kind = recipe_kind(name)
    data = read_recipe_data(name, command=kind)
    return f"objective {data.get('objective')}" if kind == "pretrain" else f"fine-tuning task {data.get('task')}"


def show_recipe(name: str, overrides) -> str:
    """The recipe resolved, each key with its doc. A recipe that still needs a value from its user (a fine-tuning
    recipe's data files, say) is shown too, under a first line that says what its run would refuse."""
    from ..recipe import RecipeError, annotated_yaml, read_recipe_data, recipe_kind

    kind = recipe_kind(name)
    data = read_recipe_data(name, overrides, kind)
    if kind == "finetune":
        from ..finetune.recipe import check_finetune_recipe, finetune_recipe_from_dict

        recipe, check, show = finetune_recipe_from_dict(data, check=False), check_finetune_recipe, annotated_yaml
    else:
        from ..recipe.fields import build_section
        from ..recipe.pretraining import Recipe, check_recipe

        recipe = build_section(Recipe, data, prefix="")
        check, show = (lambda r: (check_recipe(r), check_model_config(r))), resolved_recipe_text
    try:
        check(recipe)
    except RecipeError as refused:
        return f"# as it stands, a run of this recipe is refused: {refused}\n" + show(recipe)
    return show(recipe)


# ------------------------------------------------------------------------------------------------ quickstart
def run_quickstart(args: argparse.Namespace) -> int:
    """Offline, no arguments: pretrain the tiny masked LM on the built-in corpus, fine-tune it on the built-in
    task next to the same architecture from scratch, and export a Hub-ready folder with its model card."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ..finetune import finetune
    from ..hub.export import export_run
    from ..recipe import RecipeError, load_recipe
    from ..training.loop import Pretraining

    labeled = args.labeled_examples
    if labeled < 0:  # checked before any compute
        raise RecipeError(f"--labeled-examples={labeled} is not allowed; use a number of examples >= 1, or 0 for all.")
    out = Path(args.out)
    recipe = load_recipe(QUICKSTART_RECIPE, [f"output.dir={out}", *args.overrides])
    logger.info(f"quickstart 1/3: pretraining on the built-in corpus (recipe {QUICKSTART_RECIPE}) -> {out}")
    result = Pretraining(recipe).run()
    print(summary_text(result))
    check_final_folder_loads(result["final_dir"])

    logger.info("\nquickstart 2/3: fine-tuning on the built-in task (which stdlib package a docstring belongs to), "
                f"{f'{labeled} labeled examples' if labeled else 'all labeled examples'}, from the pretrained "
                "weights and from scratch, same settings")
    tuned = finetune("finetune-classification", [f"model={result['final_dir']}",
                                                  f"output.dir={out / 'finetune-classification'}",
                                                  "compare_scratch=true",
                                                  # a small labeled set: more passes, early stopping still ends it
                                                  *([f"data.max_train_examples={labeled}", "train.epochs=20"]
                                                    if labeled else [])])

    logger.info("\nquickstart 3/3: exporting the Hub-ready folder (weights, code, tokenizer, card, loss curve)")
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

    from ..hub.export import export_loader

    # In this process the installed, registered classes load it (no folder code runs); where hf_pretrain is not
    # installed the same call needs trust_remote_code=True (tests/hub/test_export.py runs that in a fresh process).
    loader = export_loader(Path(final_dir), "hf_pretrain_encoder")  # the Auto class of its saved head
    model = getattr(transformers, loader).from_pretrained(final_dir)
    logger.debug(f"loaded {final_dir} with {loader}.from_pretrained(...) (without hf_pretrain installed: "
                f"add trust_remote_code=True): {type(model).__name__}, "
                f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")

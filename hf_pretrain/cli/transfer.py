"""The `finetune`, `embed`, `generate`, `export` and `report` subcommands of `hf-pretrain` (added by
`add_transfer_commands`).

    hf-pretrain finetune RECIPE [key=value ...] [--compare-scratch] [--freeze-encoder] [--lora] [--trust-remote-code]
    hf-pretrain embed MODEL FILE --out vectors.npy|vectors.parquet [--column text] [--pooling auto|mean|cls|pooler]
                      [--trust-remote-code]
    hf-pretrain generate MODEL PROMPT [--max-new-tokens N] [--temperature T] [--top-p P] [--seed S]
                         [--trust-remote-code]
    hf-pretrain export RUN_DIR [--out DIR] [--push-to-hub user/name] [--private] [--encoder-only]
                       [--as hf_pretrain|stock|llama|modernbert]
    hf-pretrain report RUN_DIR [--out DIR]

Each handler takes the parsed arguments and returns 0; a request that cannot be done as asked raises, and
`hf_pretrain.cli.run_command` turns a user error into one line on stderr and exit status 2, as for every
subcommand.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


TRUST_HELP = ("run the Python code a model folder or Hub repository ships (its auto_map) when it is not an "
              "hf_pretrain model; read that code first. hf_pretrain's own models never need it")


def add_transfer_commands(subparsers, shown: argparse.ArgumentParser) -> None:
    """Register the five subcommands on the `add_subparsers()` object of the main parser; `shown`: the parent
    parser of the options every subcommand takes (--quiet, --verbose)."""
    finetune = subparsers.add_parser(
        "finetune", parents=[shown],
        help="fine-tune a pretrained model on classification or NER (transformers.Trainer)",
        description="Fine-tune from a recipe: finetune-classification, finetune-ner, finetune-sst2, finetune-mrpc "
                    "or a YAML path. Set the model with model=PATH_OR_HUB_ID.",
    )
    finetune.add_argument("recipe", help="a fine-tune recipe YAML path or shipped name (e.g. finetune-classification)")
    finetune.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. model=runs/mlm-tiny/final train.lr=1e-4")
    finetune.add_argument("--compare-scratch", action="store_true",
                          help="also train the same architecture from random weights with the same settings")
    finetune.add_argument("--freeze-encoder", action="store_true", help="train only the head (a linear probe)")
    finetune.add_argument("--lora", action="store_true",
                          help="train LoRA adapters (default settings unless the recipe has a lora section)")
    finetune.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    finetune.set_defaults(handler=run_finetune)

    embed = subparsers.add_parser("embed", parents=[shown], help="sentence vectors for the texts of a file")
    embed.add_argument("model", help="a model folder, run folder or Hub id")
    embed.add_argument("file", help="text lines (.txt), or .jsonl/.csv/.parquet with --column")
    embed.add_argument("--out", required=True, help="vectors.npy (an N x hidden matrix) or vectors.parquet (text, embedding)")
    embed.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    embed.add_argument("--column", default="text", help="the text column of a jsonl/csv/parquet file (default text)")
    embed.add_argument("--pooling", default="auto", choices=("auto", "mean", "cls", "pooler"),
                       help="auto: the autoencoder's pooler_output, mean pooling for encoders")
    embed.add_argument("--batch-size", type=int, default=32)
    embed.add_argument("--max-length", type=int, default=None, help="truncate texts to this many tokens")
    embed.add_argument("--normalize", action="store_true", help="scale every vector to unit length")
    embed.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    embed.set_defaults(handler=run_embed)

    generate = subparsers.add_parser("generate", parents=[shown],
                                     help="continue a prompt with a causal LM (objective clm)")
    generate.add_argument("model", help="a run folder, model folder or Hub id of a causal LM")
    generate.add_argument("prompt", help="the text to continue")
    generate.add_argument("--max-new-tokens", type=int, default=50, metavar="N", help="tokens to add (default 50)")
    generate.add_argument("--temperature", type=float, default=0.0, metavar="T",
                          help="0: greedy (default); above 0: sampling with top-p")
    generate.add_argument("--top-p", type=float, default=0.95, metavar="P", help="nucleus sampling mass (default 0.95)")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    generate.add_argument("--trust-remote-code", action="store_true", help=TRUST_HELP)
    generate.set_defaults(handler=run_generate)

    export = subparsers.add_parser("export", parents=[shown],
                                   help="a Hub-ready folder (weights, code, tokenizer, card) from a run")
    export.add_argument("run_dir", help="a pretraining run folder (its output.dir)")
    export.add_argument("--out", help="output folder (default RUN_DIR/export, or RUN_DIR/export-encoder): new, "
                                      "empty, or an earlier export, which is replaced")
    export.add_argument("--push-to-hub", metavar="USER/NAME", help="then push the folder to this Hub repository")
    export.add_argument("--private", action="store_true", help="create the Hub repository as private")
    export.add_argument("--encoder-only", action="store_true", help="denoising autoencoder: export only its encoder")
    export.add_argument(
        "--as", dest="as_class", choices=("hf_pretrain", "stock", "llama", "modernbert"),
        help="export as a stock transformers class (loads without trust_remote_code; served by TEI, vLLM, ONNX): "
             "llama (the decoder), modernbert (the encoder, trained with model.config.first_layer_attn_norm=false), "
             "or stock (the one that fits); only where the conversion is exact (checked: fp32 logits within 1e-5, "
             "greedy generate() tokens). Default: as trained")
    export.add_argument("--finetune-metrics", help="a fine-tuning metrics.json for the card (default: found in RUN_DIR)")
    export.add_argument("--license", help="license id for the card metadata (e.g. apache-2.0)")
    export.set_defaults(handler=run_export)

    report = subparsers.add_parser("report", parents=[shown],
                                   help="loss/lr/throughput curves (PNG) and a markdown summary of a run")
    report.add_argument("run_dir", help="a pretraining run folder")
    report.add_argument("--out", help="output folder (default RUN_DIR/report)")
    report.set_defaults(handler=run_report)


def run_finetune(args: argparse.Namespace) -> int:
    from ..finetune import finetune, results_table

    # The flags are recipe overrides, applied with the user's before the recipe is validated (once). `lora={}`
    # merges into a recipe's own lora section, so --lora keeps its settings and turns LoRA on where it is off.
    flags = {"compare_scratch=true": args.compare_scratch, "freeze_encoder=true": args.freeze_encoder,
             "lora={}": args.lora, "trust_remote_code=true": args.trust_remote_code}
    result = finetune(args.recipe, [*args.overrides, *(override for override, given in flags.items() if given)])
    print(results_table(result))
    return 0


def run_embed(args: argparse.Namespace) -> int:
    from ..hub.embed import embed_file

    out = embed_file(args.model, args.file, args.out, column=args.column, pooling=args.pooling,
                     batch_size=args.batch_size, max_length=args.max_length, normalize=args.normalize,
                     trust_remote_code=args.trust_remote_code, overwrite=args.overwrite)
    print(f"vectors -> {out}")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from ..hub.generate import check_generation_settings, generate_text, load_causal_lm

    check_generation_settings(args.max_new_tokens, args.temperature, args.top_p)  # before loading anything
    model, tokenizer = load_causal_lm(args.model, trust_remote_code=args.trust_remote_code)
    text = generate_text(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    print(args.prompt + text)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..hub.export import export_run, push_folder
    from ..offline import hub_offline

    if args.push_to_hub and hub_offline():  # say so before the export work, not after
        raise ValueError(f"cannot push to {args.push_to_hub!r}: HF_HUB_OFFLINE is set; export without "
                         "--push-to-hub, or unset it with network access.")
    out = export_run(args.run_dir, args.out, encoder_only=args.encoder_only,
                     finetune_metrics=args.finetune_metrics, repo_id=args.push_to_hub, license=args.license,
                     as_class=args.as_class)
    print(f"exported -> {out}")
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, private=args.private)
        print(f"pushed to {args.push_to_hub}: {url}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..hub.report import write_report

    result = write_report(args.run_dir, args.out)
    print(f"report -> {result['markdown']}" + (f" ({len(result['images'])} plots)" if result["images"] else ""))
    if result["note"]:
        logger.warning(result["note"])
    return 0

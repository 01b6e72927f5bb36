"""Model cards (README.md) for exported models, filled from the template in `templates/model_card.md`, and for
fine-tuned models (hub/finetuned_card.py), from `templates/finetuned_model_card.md`; what the two share (the
template, parameter counts, fine-tuning results, the description of a data source) is here.

The YAML header comes from `huggingface_hub.ModelCardData` (library_name, pipeline_tag, tags, datasets, metrics and
a `model-index` built from `EvalResult`s, so it follows the Hub's metadata rules); the body describes the model,
its training (recipe, tokens, wall time, hardware), pretraining evaluation, fine-tuning results when a fine-tuning
`metrics.json` is given, the loss curve, how to load and fine-tune it, and limitations. A fine-tuned model's card
names the model it started from (`base_model`, for a Hub id), its labels, the fine-tuning settings and scores.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..objectives import objective_of_run

TEMPLATE_NAME = "model_card.md"
FINETUNED_TEMPLATE_NAME = "finetuned_model_card.md"

FAMILIES = {
    # model_type: (pipeline_tag, family tag, description)
    "hf_pretrain_encoder": ("fill-mask", "masked-lm", "masked-language-model encoder (hf_pretrain encoder family)"),
    "hf_pretrain_decoder": ("text-generation", "causal-lm", "GPT-style causal language model (hf_pretrain decoder family)"),
    # transformers 5 removed the text2text-generation pipeline; feature-extraction runs on the autoencoder's encoder
    # (AutoModel without decoder inputs), and the card shows generate() for reconstruction.
    "hf_pretrain_dae": ("feature-extraction", "denoising-autoencoder",
                        "denoising autoencoder: encoder -> bottleneck -> decoder (hf_pretrain DAE family)"),
    "hf_pretrain_dae_features": ("feature-extraction", "autoencoder",
                                 "feature autoencoder: vectors in, vectors out (hf_pretrain DAE family)"),
}
# The card's name for train.optimizer (hf_pretrain/training/optimizers.py says which parameters take which steps).
OPTIMIZER_NAMES = {"adamw": "AdamW",
                   "muon": "Muon for the hidden weight matrices, AdamW for embeddings, output layers, norms and biases"}
FINETUNE_TASK_TYPES = {"classification": "text-classification", "token-classification": "token-classification"}
FINETUNE_METRICS = ("f1", "accuracy", "precision", "recall", "mse", "mae", "pearson", "spearman", "loss")
def template_path(name: str = TEMPLATE_NAME) -> Path:
    """The template shipped in the package; from a source checkout, model_cards/templates is the same folder."""
    shipped = resources.files("hf_pretrain.hub") / "templates" / name
    if shipped.is_file():
        return Path(str(shipped))
    checkout = Path(__file__).resolve().parents[2] / "model_cards" / "templates" / name
    if checkout.is_file():
        return checkout
    raise FileNotFoundError(
        f"model-card template {name} is missing from the installed package (hf_pretrain/hub/templates); "
        "reinstall hf_pretrain, or check that package data includes hub/templates/*.md."
    )


def count_parameters(folder: Path) -> int | None:
    """Parameters stored in the folder's safetensors files (tied weights are stored once, so counted once)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                shape = handle.get_slice(name).get_shape()
                count = 1
                for size in shape:
                    count *= size
                total += count
    return total


def human_count(count: int | None) -> str:
    if count is None:
        return "unknown"
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count:,}"


def describe_architecture(config: dict) -> str:
    if config.get("model_type") not in FAMILIES:  # a stock architecture: its sizes under its own names
        layers = config.get("num_hidden_layers", config.get("n_layer"))
        width = config.get("hidden_size", config.get("n_embd"))
        heads = config.get("num_attention_heads", config.get("n_head"))
        mlp = config.get("intermediate_size", config.get("n_inner")) or f"{4 * width} (4 x hidden)"
        return f"{config.get('model_type')}: {layers} layers, hidden {width}, {heads} heads, MLP {mlp}"
    parts = [f"{config.get('num_hidden_layers')} encoder layers"]
    if config.get("decoder_layers"):
        parts.append(f"{config['decoder_layers']} decoder layers")
    parts += [
        f"hidden {config.get('hidden_size')}",
        f"{config.get('num_attention_heads')} heads",
        f"{config.get('mlp_type', 'gated')} MLP {config.get('intermediate_size')}",
        f"{config.get('position_embedding_type', 'rotary')} positions",
        f"{config.get('norm_type', 'layernorm')}, pre-norm",
    ]
    if config.get("bottleneck"):
        parts.append(f"bottleneck: {config['bottleneck']} ({config.get('pooling')} pooling)")
    return ", ".join(parts)


def describe_data(recipe: dict) -> tuple[str, list[str], str, str]:
    """(card text, Hub dataset ids for the metadata, model-index dataset type, model-index dataset name) of the
    data a run pretrained on: its data section, or the features section for an objective that reads vectors."""
    if not objective_of_run(recipe).reads_text:
        features = recipe.get("features", {})
        if features.get("source") == "files":
            files = ", ".join(map(str, features.get("train_files", []))) or "local files"
            return f"local feature vectors: `{files}`", [], "feature-vectors", "local feature vectors"
        return ("scikit-learn's handwritten digits (`sklearn.datasets.load_digits`: 1,797 8x8 images, pixels "
                "scaled to [0, 1])", [], "sklearn-digits", "scikit-learn digits")
    data = recipe.get("data", {})
    return describe_source(data.get("source", "builtin"), data.get("hub_dataset"), data.get("hub_config"),
                           data.get("train_files", []), BUILTIN_CORPUS)


# What the built-in data is, in a card: the pretraining corpus and the fine-tuning task derived from it.
BUILTIN_CORPUS = ("hf_pretrain's built-in corpus: docstrings of the Python standard library (about 6,000 documents, "
                  "generated offline), without the documents of the built-in fine-tuning task's test split",
                  "hf_pretrain-builtin", "Python standard-library docstrings")
BUILTIN_TASK = ("hf_pretrain's built-in task: which standard-library package a docstring belongs to",
                "hf_pretrain-builtin-task", "hf_pretrain built-in task (stdlib package of a docstring)")


def describe_source(source: str, hub_dataset: str | None, hub_config: str | None, files, builtin: tuple):
    """(card text, Hub dataset ids, model-index dataset type, model-index dataset name) of a text source, the one
    description the pretraining and the fine-tuning cards share. Local files by their names only in the
    metadata: a path on the training machine means nothing on the Hub. `builtin`: (text, type, name)."""
    if source == "hub" and hub_dataset:
        config = f" ({hub_config})" if hub_config else ""
        link = f"[{hub_dataset}](https://huggingface.co/datasets/{hub_dataset}){config}"
        return link, [hub_dataset], hub_dataset, hub_dataset + config
    if source == "files":
        files = [str(f) for f in (files if isinstance(files, (list, tuple)) else str(files).split(", ")) if f]
        return (f"local files: `{', '.join(files) or 'local files'}`", [], "json",
                ", ".join(Path(f).name for f in files) or "local files")
    return builtin[0], [], builtin[1], builtin[2]


def is_hub_id(name: str) -> bool:
    """"user/model" or "model" and not a local folder: what the Hub accepts as a card's base_model (a local path
    is named in the card's text only)."""
    import re

    return not Path(name).exists() and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None


def describe_tokenizer(folder: Path) -> str:
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        return "none (the model reads feature vectors)"
    tokenizer = json.loads(tokenizer_file.read_text())
    kind = (tokenizer.get("model") or {}).get("type", "?")
    size = len((tokenizer.get("model") or {}).get("vocab", {})) + len(tokenizer.get("added_tokens", []))
    normalizer = json.dumps(tokenizer.get("normalizer") or {})
    cased = "lowercased" if '"lowercase": true' in normalizer or "Lowercase" in normalizer else "cased"
    return f"{kind}, about {size:,} tokens, {cased}"


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


def pretraining_results(summary: dict, recipe: dict):
    """(rows for the card's table, [(metric type, label, value)] for the model-index): the objective's eval
    metrics (its registry entry) before the first step and after the last."""
    before, after = summary.get("initial_eval") or {}, summary.get("final_eval") or {}
    rows, results = [], []
    for metric in objective_of_run({"objective": summary.get("objective", recipe.get("objective"))}).eval_metrics:
        if metric.key in after:
            rows.append({"name": metric.label, "before": format_value(before.get(metric.key)),
                         "after": format_value(after[metric.key])})
            if metric.model_index:
                results.append((metric.model_index, metric.label, round(float(after[metric.key]), 4)))
    return rows, results


def finetune_results(metrics: dict):
    """(split, rows, [(metric type, label, value)] of the fine-tuned model) from a fine-tuning metrics.json
    (hf_pretrain.finetune); the rows also carry the from-scratch run's scores. The test split when the run had
    one, else validation."""
    runs = metrics.get("runs", {})
    pretrained, scratch = runs.get("pretrained", {}), runs.get("scratch", {})
    split = "test" if "test" in pretrained else "validation"
    names = [n for n in FINETUNE_METRICS if n in pretrained.get(split, {})]
    rows = [{"name": n, "pretrained": format_value(pretrained[split][n]),
             "scratch": format_value(scratch.get(split, {}).get(n))} for n in names]
    results = [(n, n, round(float(pretrained[split][n]), 4)) for n in names if n != "loss"]  # loss: table only
    return split, rows, results


def finetune_eval_results(finetune: dict, entries: list, split: str, suffix: str = "") -> list:
    """Model-index entries for scores on a fine-tuning run's labeled data (the pretraining card's and the
    fine-tuned card's); `suffix` tells whose scores they are when that is not the card's own model."""
    from huggingface_hub import EvalResult

    _, _, dataset_type, dataset_name = describe_finetune_source(finetune.get("dataset") or {})
    return [
        EvalResult(
            task_type=FINETUNE_TASK_TYPES.get(finetune.get("task"), "text-classification"),
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=metric_type, metric_name=f"{label}{suffix}", metric_value=value,
        )
        for metric_type, label, value in entries
    ]


def describe_finetune_source(dataset: dict):
    """describe_source of a fine-tuning run's data, as its metrics.json records it ({source, name, config})."""
    source = dataset.get("source", "builtin")
    return describe_source(source, dataset.get("name"), dataset.get("config"),
                           dataset.get("name", "") if source == "files" else [], BUILTIN_TASK)


def eval_results(pipeline_tag: str, data: tuple, pretraining: list, finetune: dict | None, finetune_entries: list,
                 finetune_split: str):
    from huggingface_hub import EvalResult

    _, _, dataset_type, dataset_name = data
    results = [
        EvalResult(task_type=pipeline_tag, dataset_type=dataset_type, dataset_name=dataset_name,
                   dataset_split="validation", metric_type=metric_type, metric_name=label, metric_value=value)
        for metric_type, label, value in pretraining
    ]
    if finetune:
        results += finetune_eval_results(finetune, finetune_entries, finetune_split, " (fine-tuned)")
    return results


def embedding_advice(config: dict) -> tuple[str, str]:
    model_type = config.get("model_type", "")
    if model_type == "hf_pretrain_dae_features":
        return ("use `pooler_output`, the bottleneck vector the decoder rebuilds the input from.",
                "vectors = outputs.pooler_output  # (batch, hidden)")
    if model_type == "hf_pretrain_dae" and config.get("sentence_pooling") == "weighted_mean":
        return ("use `pooler_output`: a mean of the encoder states weighted per token by a / (a + p(token)), with "
                "p the token's frequency in the pretraining corpus, minus the corpus's mean vector (both saved with "
                "the weights; Arora et al. 2017). The decoder itself reconstructs from the plain mean.",
                "vectors = outputs.pooler_output  # (batch, hidden)")
    if model_type == "hf_pretrain_dae":
        return ("use `pooler_output`, the bottleneck vector the decoder was trained to reconstruct the text from.",
                "vectors = outputs.pooler_output  # (batch, hidden)")
    return ("average the last hidden states over real tokens (mean pooling); the first token is not trained to "
            "summarize the text during pretraining.",
            "mask = batch[\"attention_mask\"].unsqueeze(-1).float()\n"
            "vectors = (outputs.last_hidden_state * mask).sum(1) / mask.sum(1)  # (batch, hidden)")


def feature_width(config: dict, recipe: dict) -> str:
    """Values per input vector of a feature autoencoder: feature tokens (from the recipe) x values per token."""
    size, tokens = config.get("feature_size"), recipe.get("features", {}).get("feature_tokens")
    return str(tokens * size) if tokens and size else f"N * {size}"


def precision_text(asked: str, used: str | None) -> str:
    """The recipe's precision, and what it resolved to when that differs (`auto` -> fp32 on a CPU)."""
    return f"{asked} (ran in {used})" if used and used != asked else str(asked)


def duration_text(minutes: float | None) -> str:
    if minutes is None:
        return "not recorded"
    return f"{minutes:.1f} minutes" if minutes >= 1 else f"{minutes * 60:.0f} s"  # tiny runs: not "0.0 minutes"


def hardware_text(summary: dict) -> str:
    if summary.get("hardware"):
        return str(summary["hardware"])
    peak = summary.get("mfu_peak")
    return f"not recorded; the run's MFU reference peak was {peak}" if peak else "not recorded"


def code_file_list(folder: Path) -> str:
    """The modeling code a folder carries, for the card's file list ("" when it has none)."""
    return ", ".join(f"`{p.name}`" for p in sorted(folder.glob("*.py")))


def mask_example(folder: Path) -> str:
    config_file = folder / "tokenizer_config.json"
    mask = json.loads(config_file.read_text()).get("mask_token") if config_file.is_file() else None
    mask = mask.get("content") if isinstance(mask, dict) else mask
    return f"The {mask or '[MASK]'} module parses command-line arguments."


# A stock architecture's class name suffix -> the pipeline its head serves.
STOCK_PIPELINES = (("ForMaskedLM", "fill-mask"), ("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"))
STOCK_ENCODERS = ("bert", "roberta", "modernbert", "electra")  # stock model types whose encoder takes task heads


def describe_family(config: dict, recipe: dict) -> tuple[str, str, str, bool]:
    """(pipeline tag, family tag, family description, is it a stock transformers architecture)."""
    model_type, architecture = config.get("model_type", ""), (config.get("architectures") or [""])[0]
    if model_type not in FAMILIES:
        pipeline = next((tag for suffix, tag in STOCK_PIPELINES if architecture.endswith(suffix)), "feature-extraction")
        return pipeline, model_type, f"{architecture} (the stock transformers {model_type} architecture)", True
    pipeline_tag, family_tag, family_description = FAMILIES[model_type]
    if model_type == "hf_pretrain_encoder" and objective_of_run(recipe).encoder_decoder:
        pipeline_tag = "feature-extraction"
        family_description = "encoder of a denoising autoencoder (hf_pretrain encoder family)"
    if architecture == "PretrainEncoderForReplacedTokenDetection":
        # No masked-LM head: its task head scores replaced tokens; users fine-tune it or read its token states.
        pipeline_tag, family_tag = "feature-extraction", "electra"
        family_description = "replaced-token-detection discriminator, ELECTRA-style (hf_pretrain encoder family)"
    return pipeline_tag, family_tag, family_description, False


def build_card(folder: Path, run: dict, finetune_metrics: dict | None = None, repo_id: str | None = None,
               loss_curve: str | None = None, license: str | None = None, model_name: str | None = None,
               conversion: dict | None = None):
    """A `huggingface_hub.ModelCard` for the exported folder. `run`: {"recipe": dict, "summary": dict};
    `conversion`: {"from": our class, "parity": check_parity's report} when the folder is our model converted to a
    stock class."""
    import transformers
    from huggingface_hub import ModelCard, ModelCardData

    config = json.loads((folder / "config.json").read_text())
    model_type = config.get("model_type", "")
    pipeline_tag, family_tag, family_description, stock = describe_family(config, run.get("recipe", {}))
    recipe, summary = run.get("recipe", {}), run.get("summary", {})
    train = recipe.get("train", {})
    base_model = (recipe.get("model") or {}).get("init_from")  # continued pretraining: the starting checkpoint
    data = describe_data(recipe)
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else folder.name)
    pretraining_rows, pretraining_entries = pretraining_results(summary, recipe)
    finetune_split, finetune_rows, finetune_entries = (
        finetune_results(finetune_metrics) if finetune_metrics else ("", [], [])
    )
    metric_types = sorted({m for m, _, _ in pretraining_entries + finetune_entries})
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["hf_pretrain", *([] if stock else ["custom_code"]), family_tag]
        + (["fine-tuned-results"] if finetune_rows else []),
        datasets=data[1] or None,
        metrics=metric_types or None,
        license=license,
        model_name=model_name,
        base_model=base_model if base_model and is_hub_id(base_model) else None,
        eval_results=eval_results(pipeline_tag, data, pretraining_entries, finetune_metrics, finetune_entries,
                                  finetune_split) or None,
    )
    parameters = count_parameters(folder)
    advice, code = embedding_advice(config)
    steps = summary.get("steps")
    is_features = model_type == "hf_pretrain_dae_features"
    token_word = "feature tokens" if is_features else "tokens"
    trained_on = "vectors like its training data" if is_features else "related text"
    kind = "feature extractor" if is_features else "language model"
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=model_name,
        repo_id=repo_id or f"path/to/{model_name}",
        summary=(f"A {human_count(parameters)}-parameter {family_description.split(' (')[0]}, pretrained on "
                 f"{summary.get('tokens', 0):,} {token_word} in {steps} steps."),
        family_description=family_description,
        architecture=describe_architecture(config),
        parameters=human_count(parameters),
        tokenizer_description=describe_tokenizer(folder),
        has_tokenizer=(folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file(),
        is_features=is_features,
        feature_width=feature_width(config, recipe) if is_features else "",
        max_length=config.get("max_position_embeddings"),
        code_files=code_file_list(folder) or "none",
        has_generation_config=(folder / "generation_config.json").is_file(),
        pipeline_tag=pipeline_tag,
        base_model=base_model,
        is_denoiser=model_type == "hf_pretrain_dae",
        fill_mask_example=mask_example(folder),
        embedding_advice=advice,
        embedding_code=code,
        can_finetune=model_type in ("hf_pretrain_encoder", *STOCK_ENCODERS),
        stock=stock,
        stock_class=(config.get("architectures") or [""])[0],
        trust="" if stock else ", trust_remote_code=True",
        converted_from=(conversion or {}).get("from"),
        parity=f"{(conversion or {}).get('parity', {}).get('max_abs_logit_difference', 0):.1e}",
        greedy_equal=(conversion or {}).get("parity", {}).get("greedy_tokens_equal"),
        transformers_version=transformers.__version__,
        objective_description=objective_of_run(recipe).describe(recipe),
        data_description=data[0],
        tokens=f"{summary['tokens']:,}" if "tokens" in summary else "not recorded",
        steps=steps if steps is not None else "not recorded",
        batch_size=train.get("batch_size", "?"),
        grad_accum=train.get("grad_accum", 1),
        block_size=(recipe.get("features", {}) if is_features else recipe.get("data", {})).get(
            "feature_tokens" if is_features else "block_size", "?"),
        optimizer=OPTIMIZER_NAMES.get(train.get("optimizer", "adamw"), train.get("optimizer", "?")),
        lr=str(train.get("lr", "?")) + "".join(
            f" ({part}: {train[key]}x that)" for part, key in (("encoder", "encoder_lr_scale"),
                                                              ("token embeddings", "embedding_lr_scale"))
            if train.get(key, 1.0) != 1.0),
        schedule=train.get("schedule", "?"),
        warmup=train.get("warmup", "?"),
        weight_decay=train.get("weight_decay", "?"),
        precision=precision_text(train.get("precision", "?"), summary.get("precision")),
        minutes=f"{summary['minutes']:.1f} minutes" if "minutes" in summary else "not recorded",
        hardware=hardware_text(summary),
        loss_curve=loss_curve,
        pretraining_rows=pretraining_rows,
        finetune_rows=finetune_rows,
        finetune_task=(finetune_metrics or {}).get("task", ""),
        finetune_dataset=((finetune_metrics or {}).get("dataset") or {}).get("name", ""),
        finetune_split=finetune_split,
        finetune_train_examples=(finetune_metrics or {}).get("train_examples"),
        scale_note=(f"This is a small model ({human_count(parameters)} parameters, {summary.get('tokens', 0):,} "
                    f"training {token_word}): a research and teaching artifact and a starting point for fine-tuning "
                    f"on {trained_on}, not a general-purpose {kind}."),
    )


def write_card(folder: Path, run: dict, **options) -> Path:
    card = build_card(folder, run, **options)
    path = folder / "README.md"
    card.save(path)
    return path


__all__ = ["build_card", "write_card", "template_path", "count_parameters", "describe_source", "FAMILIES"]

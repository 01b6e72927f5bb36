"""The model card of a fine-tuned folder (`hf-pretrain finetune`'s OUTPUT/model), from
`templates/finetuned_model_card.md`: the model it started from (`base_model`, for a Hub id), its labels, the
fine-tuning settings and scores, next to the same architecture trained from scratch."""

from __future__ import annotations

import json
from pathlib import Path

from .card import (
    FAMILIES,
    FINETUNE_TASK_TYPES,
    FINETUNED_TEMPLATE_NAME,
    code_file_list,
    count_parameters,
    describe_architecture,
    describe_finetune_source,
    duration_text,
    finetune_eval_results,
    finetune_results,
    human_count,
    is_hub_id,
    template_path,
)

PROBLEM_DESCRIPTIONS = {  # problem type -> (card text, what the reported metrics are)
    "single_label_classification": ("single-label classification: one of {n} labels per text",
                                    "f1, precision and recall are macro averages over the labels (each counts "
                                    "equally however rare)."),
    "multi_label_classification": ("multi-label classification: any number of {n} labels per text (a sigmoid per "
                                   "label; a positive logit means the label applies)",
                                   "accuracy is subset accuracy (all labels of a text right); f1, precision and "
                                   "recall are micro averages over every (text, label) decision."),
    "regression": ("regression: one value per text", ""),
    "token-classification": ("token classification: a BIO tag for every word ({n} tags)",
                             "precision, recall and f1 count whole entities (seqeval: the type and every word of "
                             "the span must match); accuracy counts word tags."),
}


def describe_base_model(metrics: dict) -> tuple[str | None, str, str]:
    """(Hub id for base_model or None, the card's table text, a short name for its prose). A local path is named
    in the text only: the Hub cannot link to it, and it says nothing once the folder is pushed."""
    base = str(metrics.get("model") or "")
    loaded = str(metrics.get("model_path") or base)
    if base and is_hub_id(base):
        link = f"[{base}](https://huggingface.co/{base})"
        return base, link + (f" (weights read from `{loaded}`)" if loaded != base else ""), link
    if not base:
        return None, "not recorded", "the base model"
    # A run folder's final/ or a denoising autoencoder's exported encoder is what actually loaded: say both.
    text = f"`{base}` (a local folder" + (f"; weights read from `{loaded}`)" if loaded != base else ")")
    return None, text, f"`{Path(base).name}`"


def describe_method(metrics: dict, recipe: dict) -> tuple[str, list]:
    """(what trained, [(setting, text)] for the extras that were on: warm start, LP-FT, config changes)."""
    lora = metrics.get("lora")
    if lora:
        method = (f"LoRA (r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}, on "
                  f"{', '.join(lora.get('target_modules', []))}) plus the new head; the adapters are merged into "
                  "the weights, so the folder loads without peft")
    elif metrics.get("freeze_encoder"):
        method = "linear probe: the encoder frozen, only the new head trained"
    else:
        method = "full fine-tuning: every weight trained, with a new head"
    extras = []
    if not lora and not metrics.get("freeze_encoder"):  # finetune skips both for a frozen or adapted encoder
        warm = metrics.get("warm_start") or {}
        if warm.get("shrink", 1.0) != 1.0 or warm.get("perturb", 0.0) != 0.0:
            extras.append(("Warm start", f"shrink and perturb: every encoder matrix W started as {warm['shrink']} * W "
                                         f"+ {warm['perturb']} * W_init (a fresh random init)"))
        probe = metrics.get("linear_probe") or {}
        if probe.get("epochs", 0) > 0:
            extras.append(("LP-FT", f"the new head was first fitted alone on the frozen encoder ({probe['epochs']:g} "
                                    f"epochs at lr {probe.get('lr')}), then every weight trained"))
    if recipe.get("model_config"):
        extras.append(("Config changes", ", ".join(f"`{k}={v}`" for k, v in recipe["model_config"].items())))
    return method, extras


def loading_advice(config: dict, folder: Path) -> tuple[str, str]:
    """(the from_pretrained argument, a note on it): our families load anywhere with the code the folder carries,
    and without running it where hf_pretrain is installed; another model's code runs only if the reader asks."""
    if config.get("model_type") in FAMILIES:
        return (", trust_remote_code=True",
                "`trust_remote_code=True` is for places where hf_pretrain is not installed: the modeling code this "
                "folder carries then defines the model. Where hf_pretrain is installed, `import hf_pretrain` and leave "
                "it out: the installed classes load the folder and its `.py` copies never run.")
    if config.get("auto_map"):
        return (", trust_remote_code=True",
                f"The architecture is not part of transformers: `trust_remote_code=True` runs the code this folder "
                f"carries ({code_file_list(folder) or 'named by auto_map in config.json'}); read it first.")
    return "", ""


def build_finetuned_card(folder: Path, metrics: dict, recipe: dict | None = None, repo_id: str | None = None,
                         license: str | None = None, model_name: str | None = None):
    """A `huggingface_hub.ModelCard` for a fine-tuned folder (`hf-pretrain finetune`'s OUTPUT/model). `metrics`:
    what the run wrote to metrics.json; `recipe`: its resolved recipe as a dict (the training settings)."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    recipe, task = recipe or {}, metrics.get("task", "classification")
    train = recipe.get("train", {})
    pipeline_tag = FINETUNE_TASK_TYPES.get(task, "text-classification")
    problem_type = "token-classification" if task == "token-classification" else metrics.get(
        "problem_type", "single_label_classification")
    hub_base, base_text, base_short = describe_base_model(metrics)
    dataset = metrics.get("dataset") or {}
    split, rows, entries = finetune_results(metrics)
    # OUTPUT/model: the output folder names the run (the model folder itself is always "model").
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else
                                folder.resolve().parent.name if folder.name == "model" else folder.name)
    code = code_file_list(folder)
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["hf_pretrain", "fine-tuned", pipeline_tag] + (["custom_code"] if code else []),
        datasets=describe_finetune_source(dataset)[1] or None,
        metrics=sorted({m for m, _, _ in entries}) or None,
        license=license,
        model_name=model_name,
        base_model=hub_base,
        # This model's scores only: the Hub reads model-index entries by metric type, so a baseline's would pass
        # for this model's. The from-scratch comparison is in the card's results table.
        eval_results=finetune_eval_results(metrics, entries, split) or None,
    )
    labels = sorted((int(i), name) for i, name in (config.get("id2label") or {}).items())
    problem_text, metric_note = PROBLEM_DESCRIPTIONS.get(problem_type,
                                                         PROBLEM_DESCRIPTIONS["single_label_classification"])
    method, extras = describe_method(metrics, recipe)
    trust_argument, trust_note = loading_advice(config, folder)
    run = (metrics.get("runs") or {}).get("pretrained", {})
    warmup = train.get("warmup", "?")
    own_family = config.get("model_type") in FAMILIES
    architecture = (config.get("architectures") or ["?"])[0] + (
        f" (hf_pretrain encoder family: {describe_architecture(config)})" if own_family
        else f" (transformers `{config.get('model_type')}`)")
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path(FINETUNED_TEMPLATE_NAME)),
        model_name=model_name,
        repo_id=repo_id or f"path/to/{model_name}",
        parameters=human_count(count_parameters(folder)),
        task_description=pipeline_tag.replace("-", " "),
        base_short=base_short,
        base_text=base_text,
        architecture=architecture,
        dataset_description=describe_finetune_source(dataset)[0],
        train_examples=f"{metrics['train_examples']:,}" if metrics.get("train_examples") else None,
        problem_type=problem_type,
        problem_description=problem_text.format(n=len(labels)),
        metric_note=metric_note,
        code_files=code,
        auto_class=("AutoModelForTokenClassification" if task == "token-classification"
                    else "AutoModelForSequenceClassification"),
        trust_argument=trust_argument,
        trust_note=trust_note,
        example=("Alice moved to Paris in late spring." if task == "token-classification"
                 else "A sentence to classify."),
        labels=labels,
        method=method,
        extra_settings=extras,
        lr=train.get("lr", "?"),
        schedule=train.get("schedule", "?"),
        warmup=(f"{warmup:.0%} of the steps" if isinstance(warmup, float) and warmup < 1 else f"{warmup} steps"),
        weight_decay=train.get("weight_decay", "?"),
        epochs=(f"at most {train['max_steps']} steps" if train.get("max_steps")
                else f"{train['epochs']:g} epoch{'' if train['epochs'] == 1 else 's'}" if "epochs" in train
                else "not recorded"),
        steps=run.get("steps", "?"),
        batch_size=train.get("batch_size", "?"),
        grad_accum=train.get("grad_accum", 1),
        max_length=train.get("max_length", "?"),
        trainable=(f"{run['trainable_parameters']:,} of {run['parameters']:,}"
                   if "trainable_parameters" in run and "parameters" in run else "not recorded"),
        main_metric=metrics.get("main_metric", "?") + (
            f" (early stopping after {train['early_stopping_patience']} evaluations without improvement)"
            if train.get("early_stopping_patience") else ""),
        seed=train.get("seed", "?"),
        minutes=duration_text(run.get("train_minutes")),
        split=split,
        rows=rows,
        has_scratch=bool((metrics.get("runs") or {}).get("scratch")),
    )


def write_finetuned_card(folder: Path, metrics: dict, recipe: dict | None = None, **options) -> Path:
    card = build_finetuned_card(folder, metrics, recipe, **options)
    path = Path(folder) / "README.md"
    card.save(path)
    return path


__all__ = ["build_finetuned_card", "write_finetuned_card"]

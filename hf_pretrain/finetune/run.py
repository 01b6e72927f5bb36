"""Running a fine-tuning recipe: Trainer (after an optional linear-probe stage), metrics, the run as a whole
(`finetune()`: pretrained and, with compare_scratch, from scratch) and its results table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from ..console import is_verbose, shows_progress
from ..folders import (
    check_output_dir,
    is_or_holds,
    model_location,
    remote_code_allowed,
    save_tokenizer,
    write_output_marker,
)
from ..data.collation import IGNORE_INDEX
from ..recipe import RecipeError, resolve_precision
from .data import LabelScheme, label_scheme_for, load_task_data, tokenize_task
from .model import (
    count_parameters,
    freeze_encoder,
    model_input_names,
    prepare_model,
    resolve_model_source,
    trains_whole_encoder,
)
from .recipe import FinetuneDataSection, FinetuneRecipe, load_finetune_recipe, require_model

logger = logging.getLogger(__name__)

# What each metric name means for "is a higher value better" when choosing the best checkpoint.
LOWER_IS_BETTER = {"loss", "mse", "mae"}
# What a fine-tuning run may put in output.dir (checkpoints/ and linear-probe/ are Trainer's, removed at the end).
FINETUNE_ENTRIES = ("recipe.yaml", "metrics.json", "model", "scratch", "encoder", "checkpoints", "linear-probe")


# ------------------------------------------------------------------------------------------------ one model
def train_one(recipe: FinetuneRecipe, model_path: str, tokenizer, splits, scheme: LabelScheme, out: Path,
              from_scratch: bool) -> dict:
    """Train one model (pretrained or from scratch) and return its scores; the best model goes to out/model."""
    from transformers import set_seed

    set_seed(recipe.train.seed)  # the new head (and, from scratch, every weight) starts the same way each run
    model = prepare_model(recipe, model_path, tokenizer.pad_token_id, scheme, from_scratch)
    trainable, total = count_parameters(model)
    label = "from scratch" if from_scratch else "pretrained"
    logger.debug(f"{label}: {type(model).__name__}, {trainable:,} of {total:,} parameters train")
    encoded = tokenize_task(recipe, splits, tokenizer, scheme, model_input_names(model))
    probe_stage = None
    if trains_whole_encoder(recipe) and recipe.linear_probe.epochs > 0:
        probe_stage = fit_head_first(recipe, model, encoded["train"], tokenizer, out, label)
        logger.info(f"{label}: head fitted on the frozen encoder first ({probe_stage['steps']} steps, "
                 f"train loss {probe_stage['train_loss']:.3f}), now fine-tuning all weights")
    trainer = build_trainer(recipe, model, encoded, tokenizer, scheme, out / "checkpoints", label=label)
    started = time.perf_counter()
    trainer.train()
    result = {
        "validation": clean_scores(trainer.evaluate(), "eval"),
        "train_minutes": (time.perf_counter() - started) / 60,
        "trainable_parameters": trainable,
        "parameters": total,
        "steps": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint and Path(trainer.state.best_model_checkpoint).name,
    }
    metric = main_metric(recipe, scheme)
    logger.info(f"{label}: {result['steps']} steps in {result['train_minutes']:.1f} min, validation {metric} "
                f"{result['validation'].get(metric, float('nan')):.4f}")
    if probe_stage:
        result["linear_probe"] = probe_stage
    if "test" in encoded:
        result["test"] = score_test_split(trainer, encoded["test"])
    save_best(trainer, tokenizer, out / "model")
    if not recipe.output.keep_checkpoints:  # out/checkpoints is Trainer's, in a folder check_output_dir let us own
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return result


def build_trainer(recipe: FinetuneRecipe, model, encoded, tokenizer, scheme: LabelScheme, checkpoints: Path,
                  label: str = "fine-tuning"):
    """Trainer for the fine-tuning stage: evaluates on the validation split, keeps the best checkpoint by the main
    metric, and stops early when train.early_stopping_patience says so."""
    from transformers import EarlyStoppingCallback, Trainer

    patience = recipe.train.early_stopping_patience
    trainer = Trainer(
        model=model,
        args=training_arguments(recipe, checkpoints, main_metric(recipe, scheme)),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=collator_for(recipe.task, tokenizer),
        compute_metrics=build_compute_metrics(recipe.task, scheme),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)] if patience else [],
    )
    return quiet_trainer(trainer, recipe, label)


def quiet_trainer(trainer, recipe: FinetuneRecipe, label: str):
    """Trainer's own output (a dict per log step and per eval, nested eval bars) only with --verbose; by default
    one progress bar for the run (output.progress_bar), which goes once it is done."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if is_verbose():
        return trainer
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if recipe.output.progress_bar and shows_progress():
        trainer.add_callback(StepsProgressBar(label))
    return trainer


class StepsProgressBar(TrainerCallback):
    """One bar of training steps for a Trainer run."""

    def __init__(self, label: str):
        self.label = label
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, desc=self.label, unit=" steps", leave=False)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def score_test_split(trainer, test_split) -> dict:
    from transformers import EarlyStoppingCallback

    trainer.remove_callback(EarlyStoppingCallback)  # it would look for eval_<metric> among the test scores
    return clean_scores(trainer.evaluate(test_split, metric_key_prefix="test"), "test")


def fit_head_first(recipe: FinetuneRecipe, model, train_dataset, tokenizer, out: Path, label: str) -> dict:
    """The LP stage of LP-FT (see LinearProbeSection): the head trains alone on the frozen encoder, at the probe's
    lr with a constant schedule, for linear_probe.epochs; then the encoder is unfrozen. Returns its stats."""
    from transformers import Trainer, TrainingArguments

    probe, train = recipe.linear_probe, recipe.train
    freeze_encoder(model)
    arguments = TrainingArguments(
        output_dir=str(out / "linear-probe"),
        eval_strategy="no",
        save_strategy="no",  # nothing to choose between: the full fine-tuning that follows is what gets evaluated
        learning_rate=probe.lr,
        lr_scheduler_type="constant",
        num_train_epochs=probe.epochs,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        weight_decay=0.0,
        seed=train.seed,
        logging_steps=train.logging_steps,
        report_to="none",
        disable_tqdm=not recipe.output.progress_bar,
        remove_unused_columns=False,
        **trainer_precision(train.precision),
        **pinned_memory(),
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=train_dataset, processing_class=tokenizer,
                      data_collator=collator_for(recipe.task, tokenizer))
    quiet_trainer(trainer, recipe, f"{label}: head first")
    started = time.perf_counter()
    output = trainer.train()
    freeze_encoder(model, frozen=False)
    shutil.rmtree(out / "linear-probe", ignore_errors=True)
    return {"epochs": probe.epochs, "steps": output.global_step, "train_loss": float(output.training_loss),
            "train_minutes": (time.perf_counter() - started) / 60}


def save_best(trainer, tokenizer, folder: Path) -> None:
    """The best model as a plain save_pretrained folder: LoRA weights merged, so it loads without peft."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)


# -------------------------------------------------------------------------------------------------- trainer
def trainer_precision(precision: str) -> dict:
    """TrainingArguments' spelling of train.precision."""
    resolved = resolve_precision(precision)
    return {"bf16": resolved == "bf16", "fp16": resolved == "fp16"}


def pinned_memory() -> dict:
    """Pinned host memory speeds copies to a GPU; without one, torch's DataLoader only warns that it is unused."""
    import torch

    return {"dataloader_pin_memory": torch.cuda.is_available()}


def training_arguments(recipe: FinetuneRecipe, output_dir: Path, metric: str):
    """TrainingArguments with the recipe's settings: evaluate and save together (each epoch or every N steps),
    keep the best checkpoint, load it at the end. push_to_hub: None follows train.push_to_hub (the from-scratch
    baseline passes False: the repository is for the fine-tuned pretrained model)."""
    from transformers import TrainingArguments

    train = recipe.train
    cadence = (
        {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": train.eval_every, "save_steps": train.eval_every}
        if train.eval_every
        else {"eval_strategy": "epoch", "save_strategy": "epoch"}
    )
    return TrainingArguments(
        output_dir=str(output_dir),
        **cadence,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=metric not in LOWER_IS_BETTER,
        save_total_limit=1,  # with load_best_model_at_end Trainer also keeps the best one
        save_only_model=True,  # fine-tuning restarts rather than resumes; no optimizer state on disk
        learning_rate=train.lr,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps or -1,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.grad_accum,
        weight_decay=train.weight_decay,
        warmup_steps=int(train.warmup) if train.warmup >= 1 else train.warmup,
        lr_scheduler_type=train.schedule,
        seed=train.seed,
        logging_steps=train.logging_steps,
        report_to=list(train.report_to) or "none",
        activation_checkpointing=train.activation_checkpointing,
        # Trainer would push its checkpoint folders with a card of its own; `finetune` pushes OUTPUT/model, the
        # folder a user loads, with our card, once the best model is chosen (train.push_to_hub).
        push_to_hub=False,
        disable_tqdm=not recipe.output.progress_bar,
        # We keep exactly the model's input columns ourselves (model_input_names); Trainer's column removal
        # would inspect the PEFT wrapper's signature instead of the model's.
        remove_unused_columns=False,
        **trainer_precision(train.precision),
        **pinned_memory(),
    )


def collator_for(task: str, tokenizer):
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    if task == "token-classification":
        return DataCollatorForTokenClassification(tokenizer)
    return DataCollatorWithPadding(tokenizer)


def clean_scores(scores: dict, prefix: str) -> dict:
    """{"eval_f1": .., "eval_runtime": ..} -> {"f1": ..}: the scores only, without the timing fields."""
    timing = ("runtime", "samples_per_second", "steps_per_second", "epoch")
    return {
        key[len(prefix) + 1:]: float(value)
        for key, value in scores.items()
        if key.startswith(prefix + "_") and key[len(prefix) + 1:] not in timing
    }


# -------------------------------------------------------------------------------------------------- metrics
def main_metric(recipe: FinetuneRecipe, scheme: LabelScheme) -> str:
    if recipe.train.metric_for_best_model != "auto":
        return recipe.train.metric_for_best_model
    return "mse" if scheme.problem_type == "regression" else "f1"


def build_compute_metrics(task: str, scheme: LabelScheme):
    """A `compute_metrics` for Trainer using the metric modules shipped in hf_pretrain.metrics (offline)."""
    from ..metrics import load_metric

    if task == "token-classification":
        seqeval = load_metric("seqeval")

        def tagging(prediction):
            logits, labels = logits_of(prediction.predictions), prediction.label_ids
            predicted = logits.argmax(-1)
            keep = labels != IGNORE_INDEX
            names = scheme.names
            refs = [[names[t] for t in row[mask]] for row, mask in zip(labels, keep)]
            preds = [[names[t] for t in row[mask]] for row, mask in zip(predicted, keep)]
            scores = seqeval.compute(predictions=preds, references=refs)
            return {key: float(scores[f"overall_{key}"]) for key in ("precision", "recall", "f1", "accuracy")}

        return tagging
    if scheme.problem_type == "regression":
        regression = load_metric("regression")

        def regress(prediction):
            return regression.compute(predictions=logits_of(prediction.predictions).reshape(-1),
                                      references=np.asarray(prediction.label_ids).reshape(-1))

        return regress
    multi = scheme.problem_type == "multi_label_classification"
    config = "multilabel" if multi else None
    accuracy, f1, precision_recall = (load_metric(n, config) for n in ("accuracy", "f1", "precision_recall"))
    average = "micro" if multi else "macro"  # macro: every class counts equally however rare

    def classify(prediction):
        logits, labels = logits_of(prediction.predictions), np.asarray(prediction.label_ids)
        predicted = (logits > 0).astype(int) if multi else logits.argmax(-1)
        references = labels.astype(int)
        scores = accuracy.compute(predictions=predicted, references=references)
        scores |= f1.compute(predictions=predicted, references=references, average=average)
        scores |= precision_recall.compute(predictions=predicted, references=references, average=average)
        return {k: float(v) for k, v in scores.items()}

    return classify


def logits_of(predictions) -> np.ndarray:
    """Trainer hands over a tuple when the model returns more than logits; the logits come first."""
    return np.asarray(predictions[0] if isinstance(predictions, tuple) else predictions)


# ------------------------------------------------------------------------------------------------------ run
def prepare(recipe: FinetuneRecipe, model: str, out: Path):
    """Everything before training: the model source, tokenizer, data and label scheme (fails early). `model`: the
    recipe's model, a run folder already resolved to its final/ (whose check hashes every file: once is enough)."""
    from transformers import AutoTokenizer

    model_path = resolve_model_source(model, out)
    tokenizer_path = recipe.tokenizer or model_path
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_path, trust_remote_code=remote_code_allowed(tokenizer_path, recipe.trust_remote_code))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RecipeError(f"the tokenizer of {model_path!r} has no pad or eos token to pad batches with.")
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only Hub models: pad with eos (masked out anyway)
    splits = load_task_data(recipe)
    scheme = label_scheme_for(recipe, splits)
    return model_path, tokenizer, splits, scheme


def finetune(recipe: FinetuneRecipe | str = "finetune-classification", overrides=()) -> dict:
    """Run a fine-tuning recipe (object, YAML path or shipped name); returns what goes into OUTPUT/metrics.json
    (`results_table(result)` lays it out as `hf-pretrain finetune` prints it)."""
    if not isinstance(recipe, FinetuneRecipe):
        recipe = load_finetune_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply to a recipe name or path; change the FinetuneRecipe object directly.")
    out = Path(recipe.output.dir)
    model = model_location(require_model(recipe))
    check_before_work(recipe, model, out)
    out.mkdir(parents=True, exist_ok=True)
    write_output_marker(out, "finetune", FINETUNE_ENTRIES)  # first: a run that stops early stays replaceable
    (out / "recipe.yaml").write_text(recipe.to_yaml())
    model_path, tokenizer, splits, scheme = prepare(recipe, model, out)
    logger.info(
        f"{recipe.task} ({scheme.problem_type}, {scheme.num_labels} labels): "
        + ", ".join(f"{name} {len(split)}" for name, split in splits.items())
    )
    runs = {"pretrained": train_one(recipe, model_path, tokenizer, splits, scheme, out, False)}
    if recipe.compare_scratch:
        runs["scratch"] = train_one(recipe, model_path, tokenizer, splits, scheme, out / "scratch", True)
    result = {
        "task": recipe.task,
        "problem_type": scheme.problem_type,
        "model": recipe.model,
        "model_path": model_path,
        "dataset": dataset_description(recipe.data),
        "train_examples": len(splits["train"]),
        "label_names": scheme.names,
        "main_metric": main_metric(recipe, scheme),
        "freeze_encoder": recipe.freeze_encoder,
        "warm_start": dataclasses.asdict(recipe.warm_start),
        "linear_probe": dataclasses.asdict(recipe.linear_probe),
        "lora": dataclasses.asdict(recipe.lora) if recipe.lora else None,
        "runs": runs,
        "model_dir": str(out / "model"),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    # After both runs: the card of OUTPUT/model names its base model and carries the from-scratch comparison.
    from ..hub.finetuned_card import write_finetuned_card

    push = recipe.train.hub_model_id if recipe.train.push_to_hub else None
    write_finetuned_card(out / "model", result, recipe.to_dict(), repo_id=push)
    if push:
        from ..hub.export import push_folder

        result["pushed"] = push_folder(out / "model", push, commit_message="Upload model fine-tuned with hf_pretrain")
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        logger.info(f"pushed {out / 'model'} to {push}: {result['pushed']}")
    return result


def check_before_work(recipe: FinetuneRecipe, model: str, out: Path) -> None:
    """What is refused before anything is loaded or written: an output.dir that is not ours to replace, a tracker
    or Hub push this machine cannot do, an output.dir holding the model or tokenizer, a foreign model's code."""
    check_output_dir(out, "finetune", "output.dir")
    check_trainer_integrations(recipe.train)
    for source in (model, recipe.tokenizer):
        if not source:
            continue
        if Path(source).exists() and is_or_holds(out, Path(source)):
            # An earlier output of ours may be replaced, but not while it holds what this run reads.
            raise RecipeError(f"output.dir={str(out)!r} holds {source}, which this run fine-tunes from; allowed: "
                              "an output.dir that is not the model's or tokenizer's folder and does not contain it.")
        remote_code_allowed(source, recipe.trust_remote_code)  # refuse a foreign model's code unless asked for


def check_trainer_integrations(train) -> None:
    """What train.report_to and train.push_to_hub need from this machine, said before any work."""
    from transformers.integrations import get_available_reporting_integrations

    from ..offline import hub_offline

    installed = get_available_reporting_integrations()
    missing = [name for name in train.report_to if name not in ("all", "none") and name not in installed]
    if missing:
        raise RecipeError(f"train.report_to names {missing[0]!r}, which is not installed here (installed trackers: "
                          f"{', '.join(installed) or 'none'}); install it, or remove it from train.report_to.")
    if train.push_to_hub and hub_offline():
        raise RecipeError(f"train.push_to_hub=true cannot push to {train.hub_model_id!r}: HF_HUB_OFFLINE is set; "
                          "unset it with network access, or set train.push_to_hub=false.")


def dataset_description(data: FinetuneDataSection) -> dict:
    if data.source == "hub":
        return {"source": "hub", "name": data.hub_dataset, "config": data.hub_config}
    if data.source == "files":
        return {"source": "files", "name": ", ".join(map(str, data.train_files))}
    from ..hub.card import BUILTIN_TASK

    return {"source": "builtin", "name": BUILTIN_TASK[2]}


def results_table(result: dict) -> str:
    """Rows: split/metric; columns: one per run (pretrained, scratch)."""
    runs = result["runs"]
    rows = []
    for split in ("validation", "test"):
        names = sorted({k for run in runs.values() for k in run.get(split, {})})
        rows += [(f"{split} {name}", [run.get(split, {}).get(name) for run in runs.values()]) for name in names]
    rows.append(("train minutes", [run["train_minutes"] for run in runs.values()]))
    rows.append(("trainable parameters", [run["trainable_parameters"] for run in runs.values()]))
    width = max(len(name) for name, _ in rows) + 2
    header = "".ljust(width) + "".join(name.rjust(14) for name in runs)
    lines = [header, "-" * len(header)]
    for name, values in rows:
        lines.append(name.ljust(width) + "".join(format_cell(v).rjust(14) for v in values))
    marker = f"best checkpoint chosen by validation {result['main_metric']}; results: {result['model_dir']}"
    return "\n".join(["", *lines, marker])


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"

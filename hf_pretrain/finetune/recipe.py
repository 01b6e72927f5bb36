"""The fine-tuning recipe: typed sections (YAML keys), the rules that span several keys, and loading.

Loading, overrides and per-key checks are the pretraining recipe's (`hf_pretrain.recipe`), as are the rules both
kinds share (data source, warmup); what is checked here is specific to fine-tuning.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..recipe.data import check_data_source
from ..recipe.fields import (
    RecipeError,
    SerializableRecipe,
    build_section,
    choice,
    listing,
    mapping,
    ranged,
    section,
    setting,
)
from ..recipe.loading import read_recipe_data
from ..recipe.train import check_warmup

TASKS = ("classification", "token-classification")
PROBLEM_TYPES = ("auto", "single_label_classification", "multi_label_classification", "regression")
CLASSIFICATION_METRICS = {"loss", "accuracy", "f1", "precision", "recall"}
REGRESSION_METRICS = {"loss", "mse", "mae", "pearson", "spearman"}
# The encoder family's linear layers, the ones LoRA adapts by default (documented for users' own PEFT code).
LORA_TARGET_MODULES = ["qkv_proj", "o_proj", "up_proj", "down_proj"]
# The trackers `train.report_to` may name: transformers' integrations (INTEGRATION_TO_CALLBACK; a test keeps the
# two lists equal), written out so that a recipe is checked without importing transformers.
TRACKERS = ("azure_ml", "clearml", "codecarbon", "comet_ml", "dagshub", "dvclive", "flyte", "kubeflow", "mlflow",
            "neptune", "swanlab", "tensorboard", "trackio", "wandb")
HUB_REPO_ID = re.compile(r"[^/\s]+/[^/\s]+")


@dataclass
class FinetuneDataSection:
    """Where the labeled data comes from and which columns hold what."""

    source: str = choice(
        "builtin", "builtin", "files", "hub",
        doc="builtin (which stdlib package a docstring belongs to), files (train_files) or hub (hub_dataset)")
    train_files: list = listing("source=files: paths or globs of the labeled training examples")
    validation_files: list = listing("source=files: validation examples (empty: validation_fraction of train)")
    test_files: list = listing("source=files: test examples, scored once with the best model")
    format: str = choice("auto", "auto", "jsonl", "csv", "parquet", doc="file format (auto: by extension)")
    hub_dataset: str | None = setting(None, "source=hub: the Hub dataset id")
    hub_config: str | None = setting(None, "source=hub: the dataset's configuration name")
    train_split: str = setting("train", "source=hub: the training split")
    validation_split: str | None = setting("validation", "source=hub: the validation split (null: held out of train)")
    test_split: str | None = setting(None, "source=hub: the test split (null: none)")
    text_column: str = setting("text", "the column holding the text")
    text_pair_column: str | None = setting(
        None, "the second text of sentence-pair tasks (e.g. MRPC: sentence1 / sentence2)")
    label_column: str = setting("label", "classification: the label column (ids, names, lists or floats)")
    tokens_column: str = setting("tokens", "token-classification: a list of words per example")
    tags_column: str = setting("ner_tags", "token-classification: a list of BIO tags (names or ids) per example")
    label_names: list = listing("names of integer labels, in id order (empty: inferred from the data)")
    validation_fraction: float = ranged(
        0.1, low=0.0, high=0.5, low_open=True, doc="share of train held out when there is no validation split")
    max_train_examples: int | None = ranged(None, low=1, doc="use at most this many training examples")
    max_eval_examples: int | None = ranged(None, low=1, doc="use at most this many validation and test examples")


@dataclass
class FinetuneTrainSection:
    """Trainer settings. Defaults suit a small pretrained encoder on a CPU; Hub models of BERT-base size and up
    want a lower lr (2e-5..5e-5)."""

    seed: int = setting(42, "seed of the new head, of a from-scratch model and of the data order")
    lr: float = ranged(3e-4, low=0.0, low_open=True, doc="peak learning rate")
    epochs: float = ranged(5.0, low=0.0, low_open=True, doc="passes over the training examples")
    max_steps: int | None = ranged(None, low=1, doc="optimizer steps; overrides epochs when set")
    batch_size: int = ranged(32, low=1, doc="training examples per device per micro-step")
    eval_batch_size: int = ranged(64, low=1, doc="examples per eval batch")
    grad_accum: int = ranged(1, low=1, doc="micro-steps per optimizer step")
    weight_decay: float = ranged(0.01, low=0.0, doc="AdamW's decoupled weight decay")
    warmup: float = ranged(0.1, low=0.0, doc="warmup: below 1 a fraction of the steps, else a number of steps")
    schedule: str = choice(
        "linear", "linear", "cosine", "constant_with_warmup", doc="lr schedule after warmup (Trainer's names)")
    max_length: int = ranged(128, low=8, doc="tokens per example (longer ones are truncated)")
    eval_every: int | None = ranged(None, low=1, doc="steps between evaluations (null: every epoch)")
    early_stopping_patience: int | None = ranged(
        2, low=1, doc="evaluations without improvement before training stops (null: off)")
    metric_for_best_model: str = setting(
        "auto", "the validation metric that picks the best checkpoint (auto: f1, or mse for regression)")
    precision: str = choice(
        "auto", "auto", "fp32", "bf16", "fp16", doc="auto: bf16 on GPUs that have it, fp32 elsewhere")
    logging_steps: int = ranged(10, low=1, doc="steps between Trainer's log records")
    # TrainingArguments fields passed on as they are, under the names users know from Trainer:
    report_to: list = listing("Trainer's trackers (e.g. [tensorboard, wandb]), or [all]; empty: none")
    activation_checkpointing: bool = setting(
        False, "recompute activations in backward: less memory, more compute (transformers 5's name for "
               "gradient_checkpointing)")
    push_to_hub: bool = setting(
        False, "when fine-tuning ends, push OUTPUT/model (the best model of the pretrained run, with its card) to "
               "hub_model_id")
    hub_model_id: str | None = setting(None, "the Hub repository to push to: user/name or org/name")


@dataclass
class LoraSection:
    """LoRA adapters (PEFT). `lora: {}` turns them on with these defaults; absent or null: full fine-tuning."""

    r: int = ranged(8, low=1, doc="the adapters' rank")
    alpha: float = ranged(16.0, low=0.0, low_open=True, doc="the adapters' scale is alpha / r")
    dropout: float = ranged(0.05, low=0.0, high=1.0, doc="dropout on the adapters' input")
    target_modules: list = listing("the linear layers to adapt (by module name)", default=LORA_TARGET_MODULES)


@dataclass
class WarmStartSection:
    """Shrink and perturb the pretrained encoder's weight matrices before fine-tuning (Ash and Adams 2020, "On
    Warm-Starting Neural Network Training"): every matrix W of the base model (embeddings and linear layers;
    norms, biases and the new head are left alone) becomes `shrink * W + perturb * W_init`, W_init a fresh
    random initialization of the same architecture (seeded by train.seed). A warm-started network keeps the
    large, specialised weights of its first training and generalises worse on the new task than a fresh one;
    shrinking them restores plasticity while keeping their direction, the noise restores the diversity a fresh
    init has. The `compare_scratch` run gets the same transform (on its own random weights it amounts to a smaller
    init), so the comparison measures what pretraining adds, not what the transform adds. Skipped for a frozen or
    LoRA-adapted encoder. shrink 1 and perturb 0 (the defaults of the Python API) leave the weights as loaded."""

    shrink: float = ranged(1.0, low=0.0, high=1.0, low_open=True, doc="W becomes shrink * W + perturb * W_init")
    perturb: float = ranged(0.0, low=0.0, high=1.0, doc="the share of a fresh random init added to each matrix")


@dataclass
class LinearProbeSection:
    """LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"):
    before full fine-tuning, train only the new head for `epochs` on the frozen encoder, then fine-tune everything
    from there. A random head's large, noisy gradients flow back into the encoder in the first steps and
    overwrite the pretrained features before the head can use them; a head already fitted to the features sends
    back small, useful ones. epochs 0 turns it off. The `compare_scratch` run gets the same two stages (there the
    first fits a head to random features, which changes little). Skipped with freeze_encoder or lora."""

    epochs: float = ranged(0.0, low=0.0, doc="epochs of the head alone on the frozen encoder (0: off)")
    lr: float = ranged(3.0e-3, low=0.0, low_open=True, doc="the head's lr in that stage (constant)")


@dataclass
class FinetuneOutputSection:
    """Where the fine-tuning results go."""

    dir: str = setting("runs/finetune", "the output folder: metrics.json, model/ (the best model), scratch/")
    progress_bar: bool = setting(True, "show a progress bar while training")
    keep_checkpoints: bool = setting(
        False, "keep Trainer's checkpoints/ folder (the best model is always in OUTPUT/model)")


@dataclass
class FinetuneRecipe(SerializableRecipe):
    """A fine-tuning recipe: the task, the pretrained model, the labeled data and Trainer's settings."""

    task: str = choice("classification", *TASKS, doc="classification (one text or a pair) or token-classification")
    model: str | None = setting(None, "the model to fine-tune: a model folder, a run folder, a DAE folder or a Hub id")
    trust_remote_code: bool = setting(
        False, "run the model's (and tokenizer's) own Python code when it ships some and is not an hf_pretrain family")
    tokenizer: str | None = setting(None, "a tokenizer folder or Hub id (null: the model's own)")
    problem_type: str = choice(
        "auto", *PROBLEM_TYPES, doc="classification kind (auto: inferred from the label column)")
    model_config: dict = mapping(
        "config fields to change when the model is loaded, e.g. {classifier_pooling: mean, classifier_dropout: 0.1}")
    freeze_encoder: bool = setting(False, "train the new head only (a linear probe)")
    compare_scratch: bool = setting(False, "also train the same architecture from random weights, same settings")
    lora: LoraSection | None = setting(None, "LoRA adapters instead of all weights ({} turns them on; null: off)")
    warm_start: WarmStartSection = section(WarmStartSection, "shrink and perturb the pretrained matrices first")
    linear_probe: LinearProbeSection = section(LinearProbeSection, "LP-FT: fit the head alone first")
    data: FinetuneDataSection = section(FinetuneDataSection)
    train: FinetuneTrainSection = section(FinetuneTrainSection)
    output: FinetuneOutputSection = section(FinetuneOutputSection)


def load_finetune_recipe(name_or_path: str, overrides=()) -> FinetuneRecipe:
    """A YAML path or shipped recipe name (`finetune-ner`), with `key=value` overrides applied on top."""
    return finetune_recipe_from_dict(read_recipe_data(name_or_path, overrides, "finetune"))


def finetune_recipe_from_dict(data: dict, check: bool = True) -> FinetuneRecipe:
    """The typed recipe; `check=False` leaves out the rules that span several keys (each key is still checked)."""
    data = dict(data)
    # `lora` is an optional section (null = off), which build_section's typed fields cannot express: build it apart.
    lora = data.pop("lora", None)
    recipe = build_section(FinetuneRecipe, data, prefix="")
    if lora is not None:
        recipe.lora = build_section(LoraSection, lora, prefix="lora.")
    if check:
        check_finetune_recipe(recipe)
    return recipe


def check_finetune_recipe(recipe: FinetuneRecipe) -> None:
    """Rules that span several keys, checked before any data or model is loaded."""
    data, train = recipe.data, recipe.train
    check_data_source(data)
    if data.source == "builtin" and recipe.task != "classification":
        raise RecipeError(
            f"data.source='builtin' is a classification task; task={recipe.task!r} needs data.source='files' or 'hub'."
        )
    if recipe.task == "token-classification" and recipe.problem_type not in ("auto", "single_label_classification"):
        raise RecipeError(f"problem_type={recipe.problem_type!r} is not allowed with task='token-classification'.")
    if recipe.lora is not None and recipe.freeze_encoder:
        raise RecipeError("lora and freeze_encoder=true both limit what trains; choose one of the two.")
    if recipe.lora is not None and not recipe.lora.target_modules:
        raise RecipeError(f"lora.target_modules is empty; name modules to adapt, e.g. {LORA_TARGET_MODULES}.")
    check_warmup(train.warmup)
    allowed = (REGRESSION_METRICS if recipe.problem_type == "regression" else CLASSIFICATION_METRICS) | {"auto"}
    if train.metric_for_best_model not in allowed:
        raise RecipeError(
            f"train.metric_for_best_model={train.metric_for_best_model!r} is not allowed; choose one of "
            f"{', '.join(map(repr, sorted(allowed)))}."
        )
    check_trainer_pass_through(train)


def check_trainer_pass_through(train: FinetuneTrainSection) -> None:
    """The TrainingArguments fields the recipe passes on: checked here, so a typo fails before any loading."""
    trackers = train.report_to
    for tracker in trackers:
        if tracker not in (*TRACKERS, "all", "none") or (tracker in ("all", "none") and len(trackers) > 1):
            hint = difflib.get_close_matches(str(tracker), TRACKERS, n=1)
            raise RecipeError(
                f"train.report_to={trackers!r} is not allowed; list trackers among {', '.join(TRACKERS)}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + ", or give 'all' (every one installed) or 'none' alone."
            )
    if train.hub_model_id is not None and not HUB_REPO_ID.fullmatch(train.hub_model_id):
        raise RecipeError(f"train.hub_model_id={train.hub_model_id!r} is not allowed; write it as user/name or "
                          "org/name.")
    if train.push_to_hub and not train.hub_model_id:
        raise RecipeError("train.push_to_hub=true needs train.hub_model_id (user/name or org/name): the repository "
                          "the fine-tuned model's checkpoints are pushed to.")


def require_model(recipe: FinetuneRecipe) -> str:
    if not recipe.model:
        raise RecipeError(
            "model is not set; name the pretrained model to fine-tune, e.g. model=runs/mlm-tiny/final "
            "(a model folder, a run folder, a denoising-autoencoder folder or a Hub id)."
        )
    return recipe.model

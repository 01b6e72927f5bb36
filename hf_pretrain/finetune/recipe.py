"""The fine-tuning recipe: typed sections (YAML keys), the rules that span several keys, and loading.

Loading, overrides and per-key checks are the pretraining recipe's (`hf_pretrain.recipe`), as are the rules both
kinds share (data source, warmup); what is checked here is specific to fine-tuning.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from ..recipe import (
    RecipeError,
    SerializableRecipe,
    build_section,
    check_data_source,
    check_warmup,
    choice,
    ranged,
    read_recipe_data,
)

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

    source: str = choice("builtin", "builtin", "files", "hub")
    train_files: list = field(default_factory=list)  # paths or globs
    validation_files: list = field(default_factory=list)  # none: data.validation_fraction of train is held out
    test_files: list = field(default_factory=list)
    format: str = choice("auto", "auto", "jsonl", "csv", "parquet")
    hub_dataset: str | None = None
    hub_config: str | None = None
    train_split: str = "train"
    validation_split: str | None = "validation"
    test_split: str | None = None
    text_column: str = "text"
    text_pair_column: str | None = None  # sentence-pair tasks (e.g. MRPC: sentence1 / sentence2)
    label_column: str = "label"
    tokens_column: str = "tokens"  # token-classification: a list of words per example
    tags_column: str = "ner_tags"  # token-classification: a list of BIO tags (names or ids) per example
    label_names: list = field(default_factory=list)  # names of integer labels, in id order (else inferred)
    validation_fraction: float = ranged(0.1, low=0.0, high=0.5, low_open=True)
    max_train_examples: int | None = ranged(None, low=1)
    max_eval_examples: int | None = ranged(None, low=1)


@dataclass
class FinetuneTrainSection:
    """Trainer settings. Defaults suit a small pretrained encoder on a CPU; Hub models of BERT-base size and up
    want a lower lr (2e-5..5e-5)."""

    seed: int = 42
    lr: float = ranged(3e-4, low=0.0, low_open=True)
    epochs: float = ranged(5.0, low=0.0, low_open=True)
    max_steps: int | None = ranged(None, low=1)  # overrides epochs when set
    batch_size: int = ranged(32, low=1)
    eval_batch_size: int = ranged(64, low=1)
    grad_accum: int = ranged(1, low=1)
    weight_decay: float = ranged(0.01, low=0.0)
    warmup: float = ranged(0.1, low=0.0)  # < 1: a fraction of the steps; >= 1: steps
    schedule: str = choice("linear", "linear", "cosine", "constant_with_warmup")
    max_length: int = ranged(128, low=8)
    eval_every: int | None = ranged(None, low=1)  # steps between evaluations; null: every epoch
    early_stopping_patience: int | None = ranged(2, low=1)  # evaluations without improvement; null: off
    metric_for_best_model: str = "auto"  # auto: f1 (classification, NER), mse (regression)
    precision: str = choice("auto", "auto", "fp32", "bf16", "fp16")
    logging_steps: int = ranged(10, low=1)
    # TrainingArguments fields passed on as they are, under the names users know from Trainer:
    report_to: list = field(default_factory=list)  # trackers (e.g. [tensorboard, wandb]) or [all]; []: none
    # Recompute activations in backward: less memory, more compute. transformers 5's name for what was
    # gradient_checkpointing (a deprecated alias there), and the pretraining recipe's train.activation_checkpointing.
    activation_checkpointing: bool = False
    push_to_hub: bool = False  # the pretrained run's checkpoints go to hub_model_id as Trainer saves them
    hub_model_id: str | None = None  # user/name or org/name


@dataclass
class LoraSection:
    """LoRA adapters (PEFT). `lora: {}` turns them on with these defaults; absent or null: full fine-tuning."""

    r: int = ranged(8, low=1)
    alpha: float = ranged(16.0, low=0.0, low_open=True)
    dropout: float = ranged(0.05, low=0.0, high=1.0)
    target_modules: list = field(default_factory=lambda: list(LORA_TARGET_MODULES))


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

    shrink: float = ranged(1.0, low=0.0, high=1.0, low_open=True)
    perturb: float = ranged(0.0, low=0.0, high=1.0)


@dataclass
class LinearProbeSection:
    """LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"):
    before full fine-tuning, train only the new head for `epochs` on the frozen encoder, then fine-tune everything
    from there. A random head's large, noisy gradients flow back into the encoder in the first steps and
    overwrite the pretrained features before the head can use them; a head already fitted to the features sends
    back small, useful ones. epochs 0 turns it off. The `compare_scratch` run gets the same two stages (there the
    first fits a head to random features, which changes little). Skipped with freeze_encoder or lora."""

    epochs: float = ranged(0.0, low=0.0)
    lr: float = ranged(3.0e-3, low=0.0, low_open=True)


@dataclass
class FinetuneOutputSection:
    dir: str = "runs/finetune"
    progress_bar: bool = True
    keep_checkpoints: bool = False  # the Trainer's checkpoints/ folder; the best model is always in OUTPUT/model


@dataclass
class FinetuneRecipe(SerializableRecipe):
    task: str = choice("classification", *TASKS)
    model: str | None = None  # a model folder, a run folder, a DAE folder or a Hub id
    # Run the model's (and tokenizer's) own Python code when it ships some and is not one of our families.
    trust_remote_code: bool = False
    tokenizer: str | None = None  # default: the model's own
    problem_type: str = choice("auto", *PROBLEM_TYPES)
    # Config fields to change when the model is loaded, e.g. {classifier_pooling: mean, classifier_dropout: 0.1}.
    model_config: dict = field(default_factory=dict)
    freeze_encoder: bool = False
    compare_scratch: bool = False
    lora: LoraSection | None = None
    warm_start: WarmStartSection = field(default_factory=WarmStartSection)
    linear_probe: LinearProbeSection = field(default_factory=LinearProbeSection)
    data: FinetuneDataSection = field(default_factory=FinetuneDataSection)
    train: FinetuneTrainSection = field(default_factory=FinetuneTrainSection)
    output: FinetuneOutputSection = field(default_factory=FinetuneOutputSection)


def load_finetune_recipe(name_or_path: str, overrides=()) -> FinetuneRecipe:
    """A YAML path or shipped recipe name (`finetune-ner`), with `key=value` overrides applied on top."""
    return finetune_recipe_from_dict(read_recipe_data(name_or_path, overrides, "finetune"))


def finetune_recipe_from_dict(data: dict) -> FinetuneRecipe:
    data = dict(data)
    # `lora` is an optional section (null = off), which build_section's typed fields cannot express: build it apart.
    lora = data.pop("lora", None)
    recipe = build_section(FinetuneRecipe, data, prefix="")
    if lora is not None:
        recipe.lora = build_section(LoraSection, lora, prefix="lora.")
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

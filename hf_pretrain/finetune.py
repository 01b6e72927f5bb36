"""Fine-tuning with `transformers.Trainer`: text classification and token classification (NER) from a YAML recipe.

    hf-pretrain finetune finetune-classification model=runs/mlm-tiny/final
    hf-pretrain finetune finetune-ner model=runs/mlm-tiny data.train_files=train.jsonl --compare-scratch

Python API: `finetune(recipe, overrides)` runs a recipe and returns what it writes to `OUTPUT/metrics.json`; the
pieces (`load_task_data`, `resolve_model_source`, `build_model`, `build_compute_metrics`, `training_arguments`)
also serve users who write their own `Trainer` code.

Tasks:
* `classification` — single-label (ids or label strings), multi-label (a list of labels per example) or regression
  (float labels), on one text column or a sentence pair (`data.text_pair_column`). `problem_type: auto` infers which
  from the label column. Metrics: accuracy, macro F1/precision/recall; multi-label: subset accuracy and micro
  F1/precision/recall; regression: mse, mae, pearson, spearman.
* `token-classification` — words (`data.tokens_column`, a list of strings) with BIO tags (`data.tags_column`,
  names or ClassLabel ids). The first sub-token of each word carries its tag; metrics are entity-level
  precision/recall/F1 (the shipped `seqeval` module) and token accuracy.

Models: any folder or Hub id that `AutoModelFor...from_pretrained(path)` loads, a run folder (its `final/` is used),
or a denoising-autoencoder folder (its encoder is exported to `OUTPUT/encoder` and fine-tuned). Our own families load
through the classes hf_pretrain installs, never through the .py files a folder carries; another folder's own code
runs only with `trust_remote_code: true` (see `remote_code_allowed`). `lora:` trains LoRA adapters instead of all
weights (our target modules: qkv_proj, o_proj, up_proj, down_proj); `freeze_encoder: true` trains the head only (a
linear probe); `compare_scratch: true` also trains the same architecture from random weights with the same settings
and reports both. `warm_start: {shrink, perturb}` shrinks the pretrained encoder's matrices and adds a fraction of a
fresh init before full fine-tuning (see `WarmStartSection`; the finetune-classification recipe turns it on; the
scratch baseline gets the same). `linear_probe: {epochs, lr}` fits the new head on the frozen encoder before full
fine-tuning (LP-FT, see `LinearProbeSection`; off by default, the scratch baseline gets the same).

Output folder: `metrics.json`, `recipe.yaml` (resolved), `model/` (best checkpoint by the validation metric, with
its tokenizer and a model card naming its base model; LoRA weights merged in), `scratch/model/` with
`compare_scratch`, and `.hf_pretrain_output.json`, the marker that lets a later run replace it. A folder holding
anything else is refused, never overwritten.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .folders import (
    check_output_dir,
    is_or_holds,
    model_location,
    remote_code_allowed,
    save_tokenizer,
    write_output_marker,
)
from .recipe import (
    RecipeError,
    SerializableRecipe,
    apply_override,
    build_section,
    choice,
    parse_override,
    ranged,
    resolve_recipe_path,
)

TASKS = ("classification", "token-classification")
PROBLEM_TYPES = ("auto", "single_label_classification", "multi_label_classification", "regression")
# What each metric name means for "is a higher value better" when choosing the best checkpoint.
LOWER_IS_BETTER = {"loss", "mse", "mae"}
CLASSIFICATION_METRICS = {"loss", "accuracy", "f1", "precision", "recall"}
REGRESSION_METRICS = {"loss", "mse", "mae", "pearson", "spearman"}
# The encoder family's linear layers, the ones LoRA adapts by default (documented for users' own PEFT code).
LORA_TARGET_MODULES = ["qkv_proj", "o_proj", "up_proj", "down_proj"]
# What a fine-tuning run may put in output.dir (checkpoints/ and linear-probe/ are Trainer's, removed at the end).
FINETUNE_ENTRIES = ("recipe.yaml", "metrics.json", "model", "scratch", "encoder", "checkpoints", "linear-probe")


# --------------------------------------------------------------------------------------------------- recipe
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
    path = resolve_recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys, got {type(data).__name__}.")
    for override in overrides:
        apply_override(data, *parse_override(override))
    return finetune_recipe_from_dict(data)


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
    if data.source == "files" and not data.train_files:
        raise RecipeError("data.source='files' needs data.train_files (a path or glob, or a list of them).")
    if data.source == "hub" and not data.hub_dataset:
        raise RecipeError("data.source='hub' needs data.hub_dataset (a Hub dataset id, e.g. 'nyu-mll/glue').")
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
    if train.warmup >= 1 and train.warmup != int(train.warmup):
        raise RecipeError(f"train.warmup={train.warmup} is not allowed; use a fraction < 1 or a whole number of steps.")
    allowed = (REGRESSION_METRICS if recipe.problem_type == "regression" else CLASSIFICATION_METRICS) | {"auto"}
    if train.metric_for_best_model not in allowed:
        raise RecipeError(
            f"train.metric_for_best_model={train.metric_for_best_model!r} is not allowed; choose one of "
            f"{', '.join(map(repr, sorted(allowed)))}."
        )


def require_model(recipe: FinetuneRecipe) -> str:
    if not recipe.model:
        raise RecipeError(
            "model is not set; name the pretrained model to fine-tune, e.g. model=runs/mlm-tiny/final "
            "(a model folder, a run folder, a denoising-autoencoder folder or a Hub id)."
        )
    return recipe.model


# --------------------------------------------------------------------------------------------------- data
def load_task_data(recipe: FinetuneRecipe, announce=print):
    """DatasetDict with `train`, `validation` and (when the data has one) `test`, raw columns as loaded."""
    import datasets

    data = recipe.data
    if data.source == "builtin":
        from .data.builtin import load_builtin_task

        task = load_builtin_task()
        splits = {"train": task["train"], "test": task["test"]}
    elif data.source == "files":
        splits = load_file_splits(data)
    else:
        splits = load_hub_splits(data)
    if "validation" not in splits:
        held_out = splits["train"].train_test_split(test_size=data.validation_fraction, seed=recipe.train.seed)
        splits["train"], splits["validation"] = held_out["train"], held_out["test"]
        announce(f"no validation split given: {len(splits['validation'])} training examples "
                 f"(data.validation_fraction={data.validation_fraction}) are held out for it")
    splits["train"] = take(splits["train"].shuffle(seed=recipe.train.seed), data.max_train_examples)
    for name in ("validation", "test"):
        if name in splits:
            splits[name] = take(splits[name], data.max_eval_examples)
    return datasets.DatasetDict(splits)


def take(dataset, limit: int | None):
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def load_file_splits(data: FinetuneDataSection) -> dict:
    import datasets

    from .data.sources import DATASETS_BUILDER, infer_format, resolve_files

    named = {"train": data.train_files, "validation": data.validation_files, "test": data.test_files}
    files = {split: resolve_files(patterns) for split, patterns in named.items() if patterns}
    fmt = data.format if data.format != "auto" else infer_format([f for group in files.values() for f in group])
    if fmt not in ("jsonl", "csv", "parquet"):
        raise RecipeError(
            f"data.format={fmt!r} (from the file names) is not allowed for labeled data; use jsonl, csv or parquet "
            "files with named columns."
        )
    try:
        loaded = datasets.load_dataset(DATASETS_BUILDER[fmt], data_files=files)
    except Exception as error:  # the builders raise many types; name the files and format
        raise ValueError(f"could not read {files} as format={fmt!r}: {error}") from error
    return dict(loaded)


def load_hub_splits(data: FinetuneDataSection) -> dict:
    from .data.sources import load_hub_dataset

    wanted = {"train": data.train_split, "validation": data.validation_split, "test": data.test_split}
    return {
        name: load_hub_dataset(data.hub_dataset, data.hub_config, split, streaming=False)
        for name, split in wanted.items()
        if split
    }


def require_columns(splits, columns: list[str]) -> None:
    for name, dataset in splits.items():
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise RecipeError(
                f"the {name} split has no column {missing[0]!r} (columns: {', '.join(dataset.column_names)}); "
                "set data.text_column / data.text_pair_column / data.label_column / data.tokens_column / "
                "data.tags_column to the names your data uses."
            )


# ------------------------------------------------------------------------------------------------ labels
@dataclass
class LabelScheme:
    """What the labels are: problem type, names in id order, and how a raw label value becomes a model target."""

    problem_type: str
    names: list[str]

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == "regression" else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def encode(self, value):
        if self.problem_type == "regression":
            return float(value)
        if self.problem_type == "multi_label_classification":
            row = [0.0] * len(self.names)
            for item in value:
                row[self.index(item)] = 1.0
            return row
        return self.index(value)

    def index(self, value) -> int:
        if isinstance(value, str):
            if value not in self.names:
                raise RecipeError(f"label {value!r} is not one of the label names {self.names}.")
            return self.names.index(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < len(self.names):
            raise RecipeError(
                f"label {value!r} is not allowed; labels must be names or ids in [0, {len(self.names)}) "
                "(a split whose labels are -1, like GLUE's test sets, has no labels to train or score on)."
            )
        return int(value)


def feature_names(feature) -> list[str] | None:
    """ClassLabel names, also inside a Sequence/List feature."""
    inner = getattr(feature, "feature", feature)
    return list(inner.names) if hasattr(inner, "names") else None


def infer_label_scheme(splits, column: str, problem_type: str, given_names: list) -> LabelScheme:
    """Problem type and label names from the label column: floats -> regression, lists -> multi-label, strings or
    ints -> single-label. Names come from a ClassLabel feature, then `data.label_names`, then the values."""
    train = splits["train"]
    values = [v for split in splits.values() for v in split[column]]
    sample = next((v for v in values if v is not None), None)
    if problem_type == "auto":
        if isinstance(sample, (list, tuple)):
            problem_type = "multi_label_classification"
        elif isinstance(sample, float) and not all(float(v).is_integer() for v in values):
            problem_type = "regression"
        else:
            problem_type = "single_label_classification"
    if problem_type == "regression":
        return LabelScheme(problem_type, [column])
    flat = [item for v in values for item in v] if problem_type == "multi_label_classification" else values
    names = feature_names(train.features[column]) or [str(n) for n in given_names]
    if not names:
        if all(isinstance(v, str) for v in flat):
            names = sorted(set(flat))
        else:
            names = [str(i) for i in range(int(max(flat)) + 1)]
    return LabelScheme(problem_type, names)


def infer_tag_scheme(splits, column: str, given_names: list) -> LabelScheme:
    """BIO tag names in id order: a ClassLabel feature's, `data.label_names`, or "O" then the sorted tag strings."""
    names = feature_names(splits["train"].features[column]) or [str(n) for n in given_names]
    if not names:
        tags = {t for split in splits.values() for row in split[column] for t in row}
        if not all(isinstance(t, str) for t in tags):
            raise RecipeError(f"{column} holds integer tags without names; list them in data.label_names (id order).")
        names = ["O"] + sorted(tags - {"O"})
    for name in names:
        if name != "O" and not (name[:2] in ("B-", "I-") and len(name) > 2):
            raise RecipeError(
                f"tag {name!r} is not a BIO tag; allowed: 'O', 'B-<TYPE>', 'I-<TYPE>' (entity-level metrics need BIO)."
            )
    return LabelScheme("single_label_classification", names)


# --------------------------------------------------------------------------------------------- tokenization
def tokenize_classification(splits, tokenizer, scheme: LabelScheme, data: FinetuneDataSection, max_length: int,
                            keep_columns: set[str]):
    def encode(batch):
        pairs = batch[data.text_pair_column] if data.text_pair_column else None
        encoded = tokenizer(batch[data.text_column], pairs, truncation=True, max_length=max_length)
        encoded["labels"] = [scheme.encode(v) for v in batch[data.label_column]]
        return {k: v for k, v in encoded.items() if k in keep_columns}

    return splits.map(encode, batched=True, remove_columns=splits["train"].column_names, desc="Tokenizing")


def tokenize_tagging(splits, tokenizer, scheme: LabelScheme, data: FinetuneDataSection, max_length: int,
                     keep_columns: set[str]):
    """Words -> sub-tokens; the first sub-token of each word carries the word's tag, the rest and the special
    tokens get -100 (ignored by the loss and the metrics)."""
    if not getattr(tokenizer, "is_fast", False):
        raise RecipeError("token-classification needs a fast tokenizer (word_ids() maps sub-tokens to words).")

    def encode(batch):
        encoded = tokenizer(batch[data.tokens_column], is_split_into_words=True, truncation=True, max_length=max_length)
        labels = []
        for row, tags in enumerate(batch[data.tags_column]):
            previous, targets = None, []
            for word in encoded.word_ids(row):
                targets.append(-100 if word is None or word == previous else scheme.index(tags[word]))
                previous = word
            labels.append(targets)
        encoded["labels"] = labels
        return {k: v for k, v in encoded.items() if k in keep_columns}

    return splits.map(encode, batched=True, remove_columns=splits["train"].column_names, desc="Tokenizing")


def model_input_names(model) -> set[str]:
    """The arguments the model's forward takes (through a PEFT wrapper too), so only those columns are kept:
    `remove_unused_columns=False` then does no harm, and a tokenizer's token_type_ids reach BERT but not ours."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters) | {"labels"}


# ------------------------------------------------------------------------------------------- output folders
# --------------------------------------------------------------------------------------------------- models
def resolve_model_source(model: str, work_dir: Path, announce=print) -> str:
    """A loadable model path or Hub id: a run folder becomes its final/, a denoising autoencoder its encoder."""
    path = Path(model_location(model))
    if not path.exists():
        return model  # a Hub id (or a typo: from_pretrained's error names it)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise RecipeError(f"model={model!r} is a folder without config.json (nor a run folder with final/).")
    config = json.loads(config_file.read_text())
    if config.get("model_type") == "hf_pretrain_dae_features":
        raise RecipeError(f"model={model!r} is a feature autoencoder (vector inputs); text fine-tuning needs a text model.")
    if config.get("model_type") == "hf_pretrain_dae":
        return export_dae_encoder(path, work_dir / "encoder", announce)
    return str(path)


def export_dae_encoder(dae_dir: Path, out: Path, announce=print) -> str:
    """Write the autoencoder's encoder (+ tokenizer) as an encoder-family folder that every head loads."""
    from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

    config = json.loads((dae_dir / "config.json").read_text())
    loader = AutoModelForSeq2SeqLM if "PretrainDAEForDenoising" in config.get("architectures", []) else AutoModel
    dae = loader.from_pretrained(dae_dir, trust_remote_code=False)  # our family: the installed classes
    dae.export_encoder(out)
    save_tokenizer(AutoTokenizer.from_pretrained(dae_dir, trust_remote_code=False), out)
    announce(f"{dae_dir} is a denoising autoencoder: fine-tuning its encoder, exported to {out}")
    return str(out)


def auto_class_for(task: str):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    return AutoModelForTokenClassification if task == "token-classification" else AutoModelForSequenceClassification


def build_model(model_path: str, task: str, scheme: LabelScheme, from_scratch: bool = False, pad_token_id=None,
                model_config: dict | None = None, trust_remote_code: bool = False):
    """The pretrained weights (or, from_scratch, the same architecture freshly initialized) with a new head.
    trust_remote_code: run the folder's own code when it is not one of our families (see remote_code_allowed)."""
    from transformers import AutoConfig

    labels = {
        **(model_config or {}),
        "num_labels": scheme.num_labels,
        "id2label": scheme.id2label if scheme.problem_type != "regression" else {0: scheme.names[0]},
        "label2id": {name: i for i, name in scheme.id2label.items()} if scheme.problem_type != "regression" else None,
        "problem_type": scheme.problem_type,
    }
    labels = {k: v for k, v in labels.items() if v is not None}
    auto = auto_class_for(task)
    trust = remote_code_allowed(model_path, trust_remote_code)
    if from_scratch:
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust, **labels)
        model = auto.from_config(config, trust_remote_code=trust)
    else:
        model = auto.from_pretrained(model_path, trust_remote_code=trust, **labels)
    if model.config.pad_token_id is None and pad_token_id is not None:
        model.config.pad_token_id = pad_token_id  # batched classification needs it to find the last real token
    return model


def shrink_and_perturb(model, fresh, shrink: float, perturb: float) -> int:
    """W <- shrink * W + perturb * W_fresh for every matrix (dim >= 2) of the base model; `fresh` is the same
    architecture freshly initialized. Returns how many tensors changed. (See WarmStartSection.)"""
    import torch

    prefix = model.base_model_prefix + "."
    fresh_parameters = dict(fresh.named_parameters())
    changed = 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(prefix) and parameter.dim() >= 2:
                parameter.mul_(shrink).add_(fresh_parameters[name], alpha=perturb)
                changed += 1
    return changed


def freeze_encoder(model, frozen: bool = True) -> None:
    """Linear probe: only the layers outside the base model (head, classifier) train (frozen=False undoes it)."""
    for parameter in getattr(model, model.base_model_prefix).parameters():
        parameter.requires_grad = not frozen


def fit_head_first(recipe: FinetuneRecipe, model, train_dataset, tokenizer, out: Path) -> dict:
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
        **resolve_precision(train.precision),
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=train_dataset, processing_class=tokenizer,
                      data_collator=collator_for(recipe.task, tokenizer))
    started = time.perf_counter()
    output = trainer.train()
    freeze_encoder(model, frozen=False)
    shutil.rmtree(out / "linear-probe", ignore_errors=True)
    return {"epochs": probe.epochs, "steps": output.global_step, "train_loss": float(output.training_loss),
            "train_minutes": (time.perf_counter() - started) / 60}


def head_module_names(model) -> list[str]:
    """Top-level modules with weights that are not the base model: the new task head LoRA must train fully."""
    return [
        name
        for name, module in model.named_children()
        if name != model.base_model_prefix and any(True for _ in module.parameters())
    ]


def apply_lora(model, lora: LoraSection, task: str):
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError:
        raise RecipeError("lora needs the peft package: pip install peft (or remove lora from the recipe).") from None
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [target for target in lora.target_modules if target not in names]
    if missing:
        raise RecipeError(
            f"lora.target_modules names {missing[0]!r}, which this model does not have; hf_pretrain encoders have "
            f"{LORA_TARGET_MODULES}, other models name theirs differently (e.g. BERT: query, key, value, dense)."
        )
    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS if task == "token-classification" else TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=head_module_names(model),
    )
    return get_peft_model(model, config)


def count_parameters(model) -> tuple[int, int]:
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


# --------------------------------------------------------------------------------------------------- metrics
def main_metric(recipe: FinetuneRecipe, scheme: LabelScheme) -> str:
    if recipe.train.metric_for_best_model != "auto":
        return recipe.train.metric_for_best_model
    return "mse" if scheme.problem_type == "regression" else "f1"


def build_compute_metrics(task: str, scheme: LabelScheme):
    """A `compute_metrics` for Trainer using the metric modules shipped in hf_pretrain.metrics (offline)."""
    from .metrics import load_metric

    if task == "token-classification":
        seqeval = load_metric("seqeval")

        def tagging(prediction):
            logits, labels = logits_of(prediction.predictions), prediction.label_ids
            predicted = logits.argmax(-1)
            keep = labels != -100
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


# --------------------------------------------------------------------------------------------------- trainer
def resolve_precision(precision: str) -> dict:
    import torch

    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_arguments(recipe: FinetuneRecipe, output_dir: Path, metric: str):
    """TrainingArguments with the recipe's settings: evaluate and save together (each epoch or every N steps),
    keep the best checkpoint, load it at the end."""
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
        report_to="none",
        disable_tqdm=not recipe.output.progress_bar,
        # We keep exactly the model's input columns ourselves (model_input_names); Trainer's column removal
        # would inspect the PEFT wrapper's signature instead of the model's.
        remove_unused_columns=False,
        **resolve_precision(train.precision),
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


def train_one(recipe: FinetuneRecipe, model_path: str, tokenizer, splits, scheme: LabelScheme, out: Path,
              from_scratch: bool, announce=print) -> dict:
    """Train one model (pretrained or from scratch) and return its scores; the best model goes to out/model."""
    from transformers import EarlyStoppingCallback, Trainer, set_seed

    set_seed(recipe.train.seed)  # the new head (and, from scratch, every weight) starts the same way each run
    model = build_model(model_path, recipe.task, scheme, from_scratch, tokenizer.pad_token_id, recipe.model_config,
                        recipe.trust_remote_code)
    warm = recipe.warm_start
    # Only when the whole encoder trains: a frozen or LoRA-adapted encoder would keep the perturbed weights as they are.
    full_fine_tuning = not recipe.freeze_encoder and recipe.lora is None
    if full_fine_tuning and (warm.shrink != 1.0 or warm.perturb != 0.0):
        import torch

        torch.manual_seed(recipe.train.seed + 1)  # W_init: its own draw, independent of the head's
        fresh = build_model(model_path, recipe.task, scheme, True, tokenizer.pad_token_id, recipe.model_config,
                            recipe.trust_remote_code)
        changed = shrink_and_perturb(model, fresh, warm.shrink, warm.perturb)
        start = "fresh" if from_scratch else "pretrained"
        announce(f"warm start: {changed} weight matrices of the {start} encoder -> "
                 f"{warm.shrink} * W + {warm.perturb} * W_init")
        del fresh
    if recipe.freeze_encoder:
        freeze_encoder(model)
    if recipe.lora is not None:
        model = apply_lora(model, recipe.lora, recipe.task)
    trainable, total = count_parameters(model)
    label = "from scratch" if from_scratch else "pretrained"
    announce(f"{label}: {type(model).__name__}, {trainable:,} of {total:,} parameters train")

    keep = model_input_names(model)
    tokenize = tokenize_tagging if recipe.task == "token-classification" else tokenize_classification
    encoded = tokenize(splits, tokenizer, scheme, recipe.data, recipe.train.max_length, keep)
    probe_stage = None
    if full_fine_tuning and recipe.linear_probe.epochs > 0:
        probe_stage = fit_head_first(recipe, model, encoded["train"], tokenizer, out)
        announce(f"{label}: head fitted on the frozen encoder first ({probe_stage['steps']} steps, "
                 f"train loss {probe_stage['train_loss']:.3f}), now fine-tuning all weights")
    metric = main_metric(recipe, scheme)
    callbacks = (
        [EarlyStoppingCallback(early_stopping_patience=recipe.train.early_stopping_patience)]
        if recipe.train.early_stopping_patience
        else []
    )
    trainer = Trainer(
        model=model,
        args=training_arguments(recipe, out / "checkpoints", metric),
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=collator_for(recipe.task, tokenizer),
        compute_metrics=build_compute_metrics(recipe.task, scheme),
        callbacks=callbacks,
    )
    started = time.perf_counter()
    trainer.train()
    minutes = (time.perf_counter() - started) / 60
    result = {
        "validation": clean_scores(trainer.evaluate(), "eval"),
        "train_minutes": minutes,
        "trainable_parameters": trainable,
        "parameters": total,
        "steps": trainer.state.global_step,
        "best_checkpoint": trainer.state.best_model_checkpoint and Path(trainer.state.best_model_checkpoint).name,
    }
    if probe_stage:
        result["linear_probe"] = probe_stage
    trainer.remove_callback(EarlyStoppingCallback)  # it would look for eval_<metric> among the test scores
    if "test" in encoded:
        result["test"] = clean_scores(trainer.evaluate(encoded["test"], metric_key_prefix="test"), "test")
    save_best(trainer, tokenizer, out / "model")
    if not recipe.output.keep_checkpoints:  # out/checkpoints is Trainer's, in a folder check_output_dir let us own
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return result


def save_best(trainer, tokenizer, folder: Path) -> None:
    """The best model as a plain save_pretrained folder: LoRA weights merged, so it loads without peft."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    save_tokenizer(tokenizer, folder)


# --------------------------------------------------------------------------------------------------- run
def prepare(recipe: FinetuneRecipe, out: Path, announce=print):
    """Everything before training: the model source, tokenizer, data and label scheme (fails early)."""
    from transformers import AutoTokenizer

    model_path = resolve_model_source(require_model(recipe), out, announce)
    tokenizer_path = recipe.tokenizer or model_path
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_path, trust_remote_code=remote_code_allowed(tokenizer_path, recipe.trust_remote_code))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RecipeError(f"the tokenizer of {model_path!r} has no pad or eos token to pad batches with.")
        tokenizer.pad_token = tokenizer.eos_token  # decoder-only Hub models: pad with eos (masked out anyway)
    splits = load_task_data(recipe, announce)
    data = recipe.data
    if recipe.task == "token-classification":
        require_columns(splits, [data.tokens_column, data.tags_column])
        scheme = infer_tag_scheme(splits, data.tags_column, data.label_names)
    else:
        require_columns(splits, [data.text_column, data.label_column] + ([data.text_pair_column] if data.text_pair_column else []))
        scheme = infer_label_scheme(splits, data.label_column, recipe.problem_type, data.label_names)
    return model_path, tokenizer, splits, scheme


def finetune(recipe: FinetuneRecipe | str = "finetune-classification", overrides=(), announce=print) -> dict:
    """Run a fine-tuning recipe (object, YAML path or shipped name); returns what goes into OUTPUT/metrics.json."""
    if not isinstance(recipe, FinetuneRecipe):
        recipe = load_finetune_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply to a recipe name or path; change the FinetuneRecipe object directly.")
    out = Path(recipe.output.dir)
    model = model_location(require_model(recipe))
    check_output_dir(out, "finetune", "output.dir")
    for source in (model, recipe.tokenizer):  # before any work
        if not source:
            continue
        if Path(source).exists() and is_or_holds(out, Path(source)):
            # An earlier output of ours may be replaced, but not while it holds what this run reads.
            raise RecipeError(f"output.dir={str(out)!r} holds {source}, which this run fine-tunes from; allowed: "
                              "an output.dir that is not the model's or tokenizer's folder and does not contain it.")
        remote_code_allowed(source, recipe.trust_remote_code)  # refuse a foreign model's code unless asked for
    out.mkdir(parents=True, exist_ok=True)
    write_output_marker(out, "finetune", FINETUNE_ENTRIES)  # first: a run that stops early stays replaceable
    (out / "recipe.yaml").write_text(recipe.to_yaml())
    model_path, tokenizer, splits, scheme = prepare(recipe, out, announce)
    announce(
        f"{recipe.task} ({scheme.problem_type}, {scheme.num_labels} labels): "
        + ", ".join(f"{name} {len(split)}" for name, split in splits.items())
    )
    runs = {"pretrained": train_one(recipe, model_path, tokenizer, splits, scheme, out, False, announce)}
    if recipe.compare_scratch:
        runs["scratch"] = train_one(recipe, model_path, tokenizer, splits, scheme, out / "scratch", True, announce)
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
    from .hub.card import write_finetuned_card

    write_finetuned_card(out / "model", result, recipe.to_dict())
    announce(results_table(result))
    return result


def dataset_description(data: FinetuneDataSection) -> dict:
    if data.source == "hub":
        return {"source": "hub", "name": data.hub_dataset, "config": data.hub_config}
    if data.source == "files":
        return {"source": "files", "name": ", ".join(map(str, data.train_files))}
    return {"source": "builtin", "name": "hf_pretrain built-in task (stdlib package of a docstring)"}


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


__all__ = [
    "FinetuneRecipe",
    "FinetuneDataSection",
    "FinetuneTrainSection",
    "LoraSection",
    "LORA_TARGET_MODULES",
    "LabelScheme",
    "finetune",
    "load_finetune_recipe",
    "finetune_recipe_from_dict",
    "load_task_data",
    "resolve_model_source",
    "build_model",
    "build_compute_metrics",
    "training_arguments",
    "results_table",
]

"""Recipes: YAML files mapped onto typed dataclasses, with `key=value` overrides and validation up front.

A recipe fails before any work starts: an unknown key names itself with a did-you-mean, a bad value names the
key, the value and what is allowed. The resolved recipe (after overrides) is written into the run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe key or value that is not allowed; the message says which and what is."""


def choice(default, *allowed, doc: str = ""):
    return field(default=default, metadata={"choices": allowed, "doc": doc})


def ranged(default, low=None, high=None, doc: str = "", low_open: bool = False):
    """A number in [low, high] (or (low, high] with low_open)."""
    return field(default=default, metadata={"low": low, "high": high, "low_open": low_open, "doc": doc})


@dataclass
class ModelSection:
    """Which model to build. `config` holds fields of the family's config class (e.g. PretrainEncoderConfig)."""

    init_from: str | None = None  # continue pretraining from a checkpoint: a local path or a Hub id
    attn_implementation: str = choice("sdpa", "sdpa", "eager", "flash_attention_2", "flash_attention_3")
    config: dict = field(default_factory=dict)
    # How a new model's token embeddings start. random: the config's init. spectral: rows from a truncated SVD of
    # the training corpus's TF-IDF document-token matrix (hf_pretrain.data.spectral; seconds of CPU, before step 1),
    # so which tokens share documents is known from the first step. Text objectives only; not with init_from.
    embedding_init: str = choice("random", "random", "spectral")
    embedding_init_max_documents: int = ranged(200_000, low=1)  # documents (packed-row pieces) the SVD reads
    embedding_init_power: float = ranged(1.0, low=0.0, high=1.0)  # rows = V * S**power (token loadings)


@dataclass
class TokenizerSection:
    """Reuse a tokenizer (`path`: folder or Hub id) or train one on the training text."""

    path: str | None = None
    kind: str = choice("wordpiece", "wordpiece", "bpe", "unigram")
    vocab_size: int = ranged(8192, low=64)
    lowercase: bool = False
    max_train_documents: int | None = ranged(None, low=1)
    # Continued pretraining: add up to this many frequent corpus words that `path` splits into several pieces,
    # each new embedding row starting as the mean of its old pieces' rows (0: the vocabulary stays as it is).
    add_tokens: int = ranged(0, low=0)


@dataclass
class DataSection:
    """Where the text comes from and how it becomes blocks."""

    source: str = choice("builtin", "builtin", "files", "hub")
    train_files: list = field(default_factory=list)  # paths or globs
    validation_files: list = field(default_factory=list)
    format: str = choice("auto", "auto", "text", "paragraphs", "jsonl", "csv", "parquet")
    text_column: str = "text"
    hub_dataset: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    validation_fraction: float = ranged(0.02, low=0.0, high=0.5)
    block_size: int = ranged(128, low=8)
    num_proc: int = ranged(1, low=1)
    streaming: bool = False
    max_documents: int | None = ranged(None, low=1)


@dataclass
class MaskingSection:
    """Masked-LM noise: which tokens are selected and what replaces them."""

    mlm_probability: float = ranged(0.15, low=0.0, high=1.0, low_open=True)
    mask_replace_prob: float = ranged(0.8, low=0.0, high=1.0)
    random_replace_prob: float = ranged(0.1, low=0.0, high=1.0)
    whole_word: bool = False
    span: bool = False


@dataclass
class ReplacedTokenDetectionSection:
    """Replaced-token detection (objective: rtd, ELECTRA, Clark et al. 2020): a small masked-LM generator fills the
    masked positions (`masking.*` selects them) with samples from its predictions, and the discriminator (the model
    of `model.config`, the one exported) predicts at every position whether its token was replaced."""

    generator_width: float = ranged(
        0.25, low=0.0, high=1.0, low_open=True,
        doc="the generator's width as a share of the discriminator's: hidden size, heads and MLP width scale "
            "together, the head dimension is kept. ELECTRA found 1/4 to 1/2 best; a generator as strong as the "
            "discriminator makes the detection task too hard.",
    )
    generator_layers: int | None = ranged(None, low=1, doc="generator blocks; null: as many as the discriminator")
    detection_weight: float = ranged(
        50.0, low=0.0, low_open=True,
        doc="lambda in loss = generator MLM loss + lambda * detection loss (50 in the paper: the per-token binary "
            "loss is much smaller than the MLM loss)",
    )
    sampling_temperature: float = ranged(
        1.0, low=0.0, low_open=True, doc="the generator's softmax temperature when it samples replacements",
    )


@dataclass
class NoiseSection:
    """Denoising-autoencoder noise (objective: dae): the one noise dataclass, read by the recipe and handed as it
    is to `hf_pretrain.data.noising.DenoisingCollator` (which documents each rate). The defaults are TSDAE's
    (word_delete_rate 0.6), what objective dae trains when a recipe names no noise; `noising.BART_NOISE` and
    recipes/dae-bart.yaml turn word deletion off: infill_rate 0.3, poisson_lambda 3, permute_sentences 1.0."""

    mask_rate: float = ranged(0.0, low=0.0, high=1.0)
    delete_rate: float = ranged(0.0, low=0.0, high=0.99)
    word_delete_rate: float = ranged(0.6, low=0.0, high=0.99)
    infill_rate: float = ranged(0.0, low=0.0, high=0.99)
    poisson_lambda: float = ranged(3.0, low=0.0, low_open=True)
    permute_sentences: float = ranged(0.0, low=0.0, high=1.0)
    rotate_rate: float = ranged(0.0, low=0.0, high=1.0)
    insert_rate: float = ranged(0.0, low=0.0, high=1.0)
    # Decoder-side word dropout during training (keeps a pooled bottleneck from being ignored; see noising.py).
    decoder_mask_rate: float = ranged(0.0, low=0.0, high=0.99)

    def __post_init__(self):
        # Built in Python (tests, notebooks, the BART/TSDAE presets) it gets the checks a recipe gets.
        hints = typing.get_type_hints(NoiseSection)
        for spec in dataclasses.fields(self):
            checked = check_value(f"noise.{spec.name}", getattr(self, spec.name), hints[spec.name], spec.metadata)
            setattr(self, spec.name, checked)


@dataclass
class FeaturesSection:
    """Float feature vectors (objective: dae-features) and their noise, as in `hf_pretrain.data.features` and
    `hf_pretrain.data.noising.FeatureNoiseCollator`. Each vector of D values is read as `feature_tokens` tokens of
    D / feature_tokens values (an 8x8 digit: 8 rows of 8 pixels)."""

    source: str = choice("digits", "digits", "files")  # digits: scikit-learn's load_digits, scaled to [0, 1]
    train_files: list = field(default_factory=list)  # paths or globs: .npy (N, D), or csv/parquet/jsonl rows
    validation_files: list = field(default_factory=list)  # else validation_fraction of the training rows
    format: str = choice("auto", "auto", "npy", "csv", "parquet", "jsonl")
    columns: list = field(default_factory=list)  # csv/parquet/jsonl feature columns; default: every numeric one
    validation_fraction: float = ranged(0.1, low=0.0, high=0.5)
    feature_tokens: int = ranged(8, low=1)
    gaussian_std: float = ranged(0.1, low=0.0)  # noise added to every value
    mask_rate: float = ranged(0.25, low=0.0, high=0.99)  # share of values set to 0


@dataclass
class TrainSection:
    """Optimizer, schedule, budget, evaluation and checkpoint cadence."""

    seed: int = 0
    batch_size: int = ranged(32, low=1)  # per process, per micro-step
    grad_accum: int = ranged(1, low=1)
    lr: float = ranged(1e-3, low=0.0, low_open=True)
    # Denoising autoencoders: the encoder's lr is lr x this; the decoder and an untied output layer get lr itself.
    encoder_lr_scale: float = ranged(1.0, low=0.0, low_open=True)
    # The token embedding matrix's lr is lr x this (times encoder_lr_scale where that applies too). Below 1 it lets
    # the layers learn at a higher lr while a closed-form start (model.embedding_init: spectral) is kept; tied, the
    # matrix is the output layer as well.
    embedding_lr_scale: float = ranged(1.0, low=0.0, low_open=True)
    weight_decay: float = ranged(0.01, low=0.0)
    beta1: float = ranged(0.9, low=0.0, high=1.0)
    beta2: float = ranged(0.98, low=0.0, high=1.0)
    eps: float = ranged(1e-6, low=0.0, low_open=True)
    # adamw everywhere, or muon: Muon (orthogonalized momentum) for the hidden weight matrices, AdamW with the
    # settings above for embeddings, output layers, norms and biases; one lr and weight_decay for both halves
    # (hf_pretrain/training/optimizers.py).
    optimizer: str = choice("adamw", "adamw", "muon")
    schedule: str = choice("wsd", "wsd", "linear", "cosine", "constant")
    warmup: float = ranged(0.06, low=0.0)  # < 1: a fraction of the budget; >= 1: steps
    decay_fraction: float = ranged(0.3, low=0.0, high=1.0)  # wsd: the final part that decays
    min_lr_ratio: float = ranged(0.0, low=0.0, high=1.0)
    max_steps: int | None = ranged(None, low=1)
    max_tokens: int | None = ranged(None, low=1)
    max_minutes: float | None = ranged(None, low=0.0, low_open=True)
    clip_grad_norm: float | None = ranged(1.0, low=0.0, low_open=True)
    precision: str = choice("auto", "auto", "fp32", "bf16", "fp16")
    compile: bool = False
    activation_checkpointing: bool = False
    num_workers: int = ranged(0, low=0)
    # Steps per metrics record (metrics.jsonl, trackers, progress bar); a record averages the loss and grad norm of
    # its steps. Reading them is a device-to-host wait: on a CPU (the device is the host) it costs nothing, so the
    # default records every step; on GPUs 10-50 keeps the device queue full (the GPU recipes set 10).
    log_every: int = ranged(1, low=1)
    eval_every: int = ranged(200, low=1)
    eval_batches: int = ranged(20, low=1)
    save_every: int = ranged(500, low=1)
    keep_last: int = ranged(2, low=1)
    max_bad_steps: int = ranged(5, low=1)  # consecutive non-finite steps before the run stops
    peak_tflops: float | None = ranged(None, low=0.0, low_open=True)  # for MFU; measured/documented if unset


@dataclass
class OutputSection:
    dir: str = "runs/run"
    log_with: list = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True


class SerializableRecipe:
    """to_dict / to_yaml for the recipe dataclasses (pretraining and fine-tuning): the resolved recipe a run
    writes next to its outputs."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@dataclass
class Recipe(SerializableRecipe):
    objective: str = choice("mlm", "mlm", "clm", "rtd", "dae", "dae-features")
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    data: DataSection = field(default_factory=DataSection)
    masking: MaskingSection = field(default_factory=MaskingSection)
    rtd: ReplacedTokenDetectionSection = field(default_factory=ReplacedTokenDetectionSection)
    noise: NoiseSection = field(default_factory=NoiseSection)
    features: FeaturesSection = field(default_factory=FeaturesSection)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputSection = field(default_factory=OutputSection)


# --------------------------------------------------------------------------------------------------- loading
def shipped_recipe_names() -> list[str]:
    folder = resources.files("hf_pretrain") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_recipe_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a recipe shipped inside the package (`mlm-small`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = resources.files("hf_pretrain") / "recipes" / f"{path.stem if path.suffix else name_or_path}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    names = shipped_recipe_names()
    hint = difflib.get_close_matches(path.stem, names, n=1)
    raise RecipeError(
        f"recipe {name_or_path!r} is neither a file nor a shipped recipe"
        + (f"; did you mean {hint[0]!r}?" if hint else "")
        + f" Shipped recipes: {', '.join(names)}."
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (["train", "lr"], 0.0003). Values are read as YAML scalars/lists."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} is not of the form key=value (e.g. train.lr=3e-4).")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r} has an empty key; write it as section.key=value.")
    return key.split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_override(data: dict, keys: list[str], value: Any) -> None:
    """Set one dotted key. A mapping given for a section the recipe already has is merged into it, so
    `lora={}` turns an optional section on without dropping the settings a recipe file gives it."""
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"override {'.'.join(keys)}: {key!r} is a value, not a section.")
        node = child
    current = node.get(keys[-1])
    node[keys[-1]] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value


# The key that marks each kind of recipe, and what the kind is called in messages.
RECIPE_KINDS = {"pretrain": ("objective", "pretraining"), "finetune": ("task", "fine-tuning")}


def read_recipe_data(name_or_path: str, overrides=(), command: str = "pretrain") -> dict:
    """The mapping a YAML recipe (a path or a shipped name) holds, with `key=value` overrides applied: what both
    kinds of recipe are built from. A recipe of the other kind is refused, naming the command that runs it."""
    path = resolve_recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}.")
    own_key = RECIPE_KINDS[command][0]
    for other, (key, kind) in RECIPE_KINDS.items():
        if other != command and key in data and own_key not in data:
            raise RecipeError(f"recipe {name_or_path!r} is a {kind} recipe (it has '{key}:'); run it with "
                              f"`hf-pretrain {other} {name_or_path}`.")
    for override in overrides:
        apply_override(data, *parse_override(override))
    return data


def load_recipe(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    return recipe_from_dict(read_recipe_data(name_or_path, overrides, "pretrain"))


def recipe_from_dict(data: dict) -> Recipe:
    recipe = build_section(Recipe, data, prefix="")
    check_recipe(recipe)
    return recipe


# --------------------------------------------------------------------------------------------------- resume
# Keys a rerun may change when it resumes: how long to train, how often to evaluate, save and log, and where.
# Everything else decides what a step computes (data, tokenizer, model, noise, optimizer), so a resumed run with
# another value would silently be a mix of two recipes. A changed budget refits the lr schedule from there on.
SAFE_TO_CHANGE_ON_RESUME = frozenset({
    "train.max_steps", "train.max_tokens", "train.max_minutes", "train.eval_every", "train.eval_batches",
    "train.save_every", "train.keep_last", "train.max_bad_steps", "train.peak_tflops",
    "train.log_every", "output.dir", "output.log_with", "output.progress_bar",
})


def flat_items(data: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; values other than mappings are kept as they are."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flat_items(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_changes(trained_with: dict, requested: Recipe) -> tuple[list[str], list[str]]:
    """(allowed, refused): `key: old -> new` for every key whose value differs between the recipe a checkpoint was
    trained with (a dict read from its recipe.yaml) and the one a rerun asks for."""
    try:  # through the dataclasses, so defaults and types compare alike; a stored key since removed compares raw
        old = flat_items(recipe_from_dict(trained_with).to_dict())
    except RecipeError:
        old = flat_items(trained_with)
    new = flat_items(requested.to_dict())
    allowed, refused = [], []
    for key in sorted(old.keys() | new.keys()):
        if old.get(key) != new.get(key):
            line = f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
            (allowed if key in SAFE_TO_CHANGE_ON_RESUME else refused).append(line)
    return allowed, refused


# --------------------------------------------------------------------------------------------------- validation
def build_section(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'recipe'} must be a mapping, got {data!r}.")
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            raise RecipeError(
                f"unknown key {prefix + str(key)!r}"
                + (f"; did you mean {prefix + hint[0]!r}?" if hint else "")
                + f" Allowed in {prefix.rstrip('.') or 'the recipe'}: {', '.join(known)}."
            )
    values = {}
    hints = typing.get_type_hints(cls)
    for name, spec in known.items():
        if name not in data:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = build_section(hint, data[name] or {}, prefix=f"{prefix}{name}.")
        else:
            values[name] = check_value(f"{prefix}{name}", data[name], hint, spec.metadata)
    return cls(**values)


def check_value(key: str, value: Any, hint, metadata) -> Any:
    allowed_types = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in allowed_types
    if value is None:
        if optional:
            return None
        raise RecipeError(f"{key}=null is not allowed; it needs a value of type {describe(allowed_types)}.")
    value = coerce(key, value, [t for t in allowed_types if t is not type(None)])
    choices = metadata.get("choices")
    if choices and value not in choices:
        hint_text = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        raise RecipeError(
            f"{key}={value!r} is not allowed; choose one of {', '.join(map(repr, choices))}"
            + (f" (did you mean {hint_text[0]!r}?)" if hint_text else "")
            + "."
        )
    low, high = metadata.get("low"), metadata.get("high")
    if low is not None and (value < low or (metadata.get("low_open") and value == low)):
        bound = f"> {low}" if metadata.get("low_open") else f">= {low}"
        raise RecipeError(f"{key}={value!r} is not allowed; it must be {bound}.")
    if high is not None and value > high:
        raise RecipeError(f"{key}={value!r} is not allowed; it must be <= {high}.")
    return value


def coerce(key: str, value: Any, types_allowed: list) -> Any:
    for expected in types_allowed:
        origin = typing.get_origin(expected) or expected
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return finite(key, float(value))
        if origin is float and isinstance(value, str):
            try:  # YAML 1.1 reads `1e-3` (no dot) as a string
                number = float(value)
            except ValueError:
                pass
            else:
                return finite(key, number)
        if origin is str and isinstance(value, str):
            return value
        if origin is list:
            return list(value) if isinstance(value, (list, tuple)) else [value]
        if origin is dict and isinstance(value, dict):
            return value
    raise RecipeError(f"{key}={value!r} is not allowed; it must be {describe(types_allowed)}.")


def finite(key: str, value: float) -> float:
    """nan passes every range check (all comparisons with it are false) and inf would never end a budget."""
    if not math.isfinite(value):
        raise RecipeError(f"{key}={value!r} is not allowed; it must be a finite number (not nan or inf).")
    return value


def describe(types_allowed) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(typing.get_origin(t) or t, str(t)) for t in types_allowed)


def check_recipe(recipe: Recipe) -> None:
    """Rules that span several keys."""
    train, data = recipe.train, recipe.data
    for name, value in recipe.model.config.items():  # passed to the model's config class as they are
        if isinstance(value, float):
            finite(f"model.config.{name}", value)
    if train.max_steps is None and train.max_tokens is None and train.max_minutes is None:
        raise RecipeError("train.max_steps, train.max_tokens and train.max_minutes are all null; set a budget.")
    masking = recipe.masking
    if masking.mask_replace_prob + masking.random_replace_prob > 1.0 + 1e-9:
        raise RecipeError(
            f"masking.mask_replace_prob={masking.mask_replace_prob} + masking.random_replace_prob="
            f"{masking.random_replace_prob} is more than 1; the two shares (and the kept share) must sum to 1."
        )
    if masking.whole_word and masking.span:
        raise RecipeError("masking.whole_word=true and masking.span=true: choose one of the two.")
    if recipe.tokenizer.add_tokens and not (recipe.objective == "mlm" and recipe.tokenizer.path and recipe.model.init_from):
        raise RecipeError(
            f"tokenizer.add_tokens={recipe.tokenizer.add_tokens} extends the vocabulary of a checkpoint you continue: "
            "it needs objective 'mlm' with model.init_from and tokenizer.path set (a tokenizer trained here already "
            "fits the corpus)."
        )
    if recipe.objective == "rtd" and recipe.model.init_from:
        raise RecipeError(
            f"model.init_from={recipe.model.init_from!r} with objective 'rtd': replaced-token detection trains a "
            "generator and a discriminator of the hf_pretrain encoder family from scratch; continue a checkpoint "
            "with objective 'mlm' (or 'clm')."
        )
    if recipe.objective == "dae" and data.streaming:
        raise RecipeError(
            "data.streaming=true is not available for objective 'dae': its batches group documents of similar "
            "length (a length-bucketed sampler over the whole corpus), which needs the corpus in memory. Set "
            "data.streaming=false (data.max_documents caps how many are read), or stream with objective 'mlm'."
        )
    check_data_source(data)
    check_warmup(train.warmup)
    if recipe.model.embedding_init == "spectral" and recipe.model.init_from:
        raise RecipeError(
            f"model.embedding_init='spectral' with model.init_from={recipe.model.init_from!r}: a loaded checkpoint "
            "keeps its own trained embeddings; use embedding_init=random (the default) to continue pretraining."
        )
    if recipe.model.embedding_init == "spectral" and recipe.objective == "dae-features":
        raise RecipeError(
            "model.embedding_init='spectral' is for text objectives (mlm, dae): objective 'dae-features' reads "
            "float vectors and has no token embeddings; use embedding_init=random."
        )
    if train.encoder_lr_scale != 1.0 and recipe.objective not in ("dae", "dae-features"):
        raise RecipeError(
            f"train.encoder_lr_scale={train.encoder_lr_scale} is for the denoising autoencoders (objective dae or "
            f"dae-features), whose encoder and decoder can learn at different rates; objective "
            f"{recipe.objective!r} trains one stack at train.lr. Remove it, or set it to 1."
        )
    if train.embedding_lr_scale != 1.0 and recipe.objective == "dae-features":
        raise RecipeError(
            f"train.embedding_lr_scale={train.embedding_lr_scale} scales the token embedding's lr: objective "
            "'dae-features' reads float vectors and has no token embedding. Remove it, or set it to 1."
        )
    check_sections_fit_objective(recipe)


# ----------------------------------------------------------------------------------- rules both kinds share
def check_data_source(data) -> None:
    """The data section of a pretraining or a fine-tuning recipe names what its source needs."""
    if data.source == "files" and not data.train_files:
        raise RecipeError("data.source='files' needs data.train_files (a path or glob, or a list of them).")
    if data.source == "hub" and not data.hub_dataset:
        raise RecipeError("data.source='hub' needs data.hub_dataset (a Hub dataset id, e.g. 'nyu-mll/glue').")


def check_warmup(warmup: float) -> None:
    if warmup >= 1 and warmup != int(warmup):
        raise RecipeError(f"train.warmup={warmup} is not allowed; use a fraction < 1 or a whole number of steps.")


def resolve_precision(precision: str) -> str:
    """What train.precision means on this machine: 'fp32', 'bf16' or 'fp16'. `auto`: bf16 on GPUs that have it,
    fp32 elsewhere (bf16 matmuls on CPUs without AMX run far slower than fp32). Pretraining hands it to
    Accelerate, fine-tuning to TrainingArguments; each spells it its own way."""
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def changed_keys(section, prefix: str) -> list[str]:
    """`prefix.key=value` for every key of a section that differs from its default."""
    default = type(section)()
    return [f"{prefix}.{f.name}={getattr(section, f.name)!r}" for f in dataclasses.fields(section)
            if getattr(section, f.name) != getattr(default, f.name)]


# The text objectives that read each corruption section (the masked LM and replaced-token detection mask, the
# denoising autoencoder adds noise, replaced-token detection samples replacements).
CORRUPTION_SECTION_READERS = {"masking": ("mlm", "rtd"), "noise": ("dae",), "rtd": ("rtd",)}


def check_sections_fit_objective(recipe: Recipe) -> None:
    """A section the objective does not read must stay at its defaults: a setting that would be silently ignored
    is an error naming it."""
    features = recipe.features
    if recipe.objective != "dae-features":
        changed = changed_keys(features, "features")
        if changed:
            raise RecipeError(
                f"{', '.join(changed)}: the features section is for objective 'dae-features' (float vectors); this "
                f"recipe's objective is {recipe.objective!r}. Remove it, or set objective=dae-features."
            )
        for section, readers in CORRUPTION_SECTION_READERS.items():
            changed = changed_keys(getattr(recipe, section), section)
            if changed and recipe.objective not in readers:
                raise RecipeError(
                    f"{', '.join(changed)}: the {section} section is read by objective {' or '.join(readers)} only; "
                    f"objective {recipe.objective!r} would ignore it. Remove it, or set objective={readers[0]}."
                )
        return
    text_sections = ("tokenizer", "data", "masking", "noise")
    changed = [key for name in text_sections for key in changed_keys(getattr(recipe, name), name)]
    if changed:
        raise RecipeError(
            f"{', '.join(changed)}: objective 'dae-features' reads float vectors, not text, so it has no tokenizer, "
            "data, masking or noise settings; use the features section (features.source, features.train_files, "
            "features.validation_fraction, features.gaussian_std, features.mask_rate)."
        )
    if features.source == "files" and not features.train_files:
        raise RecipeError("features.source='files' needs features.train_files (a path or glob, or a list of them).")
    if features.source != "files" and (features.train_files or features.validation_files or features.columns):
        raise RecipeError(
            f"features.source={features.source!r} ignores features.train_files/validation_files/columns; set "
            "features.source=files to train on your own vectors."
        )
    if features.validation_fraction == 0 and not features.validation_files:
        raise RecipeError(
            "features.validation_fraction=0 and no features.validation_files: eval needs held-out vectors."
        )

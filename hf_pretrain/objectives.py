"""The registry of pretraining objectives: one `ObjectiveSpec` per objective, and nothing else branches on its name.

The recipe checks a recipe against its objective's entry (the sections it reads, its cross-key rules), the CLI
prints its eval metrics under their labels, the model card describes it, the tokenizer code reads which special
tokens it needs, and the training loop builds the class the entry names (imported on first use, so this module
and the recipe stay free of torch). Adding an objective is an entry here plus its class under
`hf_pretrain/training/objectives/`.

The rules are functions of the recipe that return what is wrong (a message) or None; the recipe raises it as a
`RecipeError`. They receive the typed `Recipe`; the card's descriptions receive the resolved recipe as a dict
(what a run folder's recipe.yaml holds).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Recipe sections every objective reads; each objective names the others it reads in `ObjectiveSpec.sections`.
COMMON_SECTIONS = ("model", "train", "output")
# The sections of a text objective: where the text comes from, how it is tokenized, and the labeled set probed at
# every eval.
TEXT_SECTIONS = ("tokenizer", "data", "probe")


@dataclass(frozen=True)
class EvalMetric:
    """One number of an objective's eval (a key of its `eval_metrics`), as the run summary and the card name it."""

    key: str
    label: str
    percent: bool = False  # shown as a percentage
    model_index: str | None = None  # the Hub model-index metric type; None: the card's table only


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    implementation: str  # "module:Class" under hf_pretrain.training.objectives, imported by `objective_class`
    summary: str  # one line: what the model learns
    sections: tuple[str, ...]  # recipe sections read besides COMMON_SECTIONS
    # Special-token layout of a tokenizer trained for it (hf_pretrain/data/tokenizer.py TOKENIZER_LAYOUTS); None:
    # the objective reads no text, and `reads` says what it reads instead.
    tokenizer_layout: str | None
    eval_metrics: tuple[EvalMetric, ...]  # what the run summary and the card show, in this order
    describe: Callable[[dict], str]  # the card's sentence on the objective, from the resolved recipe (a dict)
    checks: tuple[Callable[[Any], str | None], ...] = ()  # cross-key rules of this objective: message or None
    reads: str = "text"
    continues_checkpoints: bool = True  # model.init_from may name a checkpoint to continue
    adds_domain_words: bool = False  # tokenizer.add_tokens may grow a continued checkpoint's vocabulary
    encoder_decoder: bool = False  # encoder and decoder may learn at different rates (train.encoder_lr_scale)
    generates_text: bool = False  # the CLI shows greedy continuations of a few prompts after the run

    @property
    def reads_text(self) -> bool:
        return self.tokenizer_layout is not None

    @property
    def all_sections(self) -> tuple[str, ...]:
        return COMMON_SECTIONS + self.sections


# ------------------------------------------------------------------------------------------------ metrics
LOSS = EvalMetric("loss", "eval loss")
PERPLEXITY = EvalMetric("perplexity", "perplexity", model_index="perplexity")
# The linear probe every text objective's eval runs when the recipe has one (recipe/probe.py, training/probe.py).
PROBE = (EvalMetric("probe_accuracy", "linear probe accuracy (frozen features)", percent=True),
         EvalMetric("probe_macro_f1", "linear probe macro F1 (frozen features)", percent=True))


def token_accuracy(label: str) -> EvalMetric:
    return EvalMetric("accuracy", label, percent=True, model_index="accuracy")


# ------------------------------------------------------------------------------------------------ card texts
def masking_text(recipe: dict) -> str:
    masking = recipe.get("masking", {})
    return f"{masking.get('mlm_probability', 0.15):.0%} of tokens masked" + (
        ", whole words" if masking.get("whole_word") else ", spans" if masking.get("span") else ""
    )


def describe_masked_lm(recipe: dict) -> str:
    return f"masked language modeling, {masking_text(recipe)}"


def describe_replaced_token_detection(recipe: dict) -> str:
    rtd, masking = recipe.get("rtd", {}), recipe.get("masking", {})
    return (f"replaced-token detection (ELECTRA): a generator {rtd.get('generator_width')} of this model's width "
            f"fills {masking.get('mlm_probability', 0.15):.0%} of positions with its samples, and this model "
            f"learns at every position whether the token was replaced (loss weight {rtd.get('detection_weight')})")


def describe_causal_lm(recipe: dict) -> str:
    return "causal language modeling: predict each next token, documents packed with per-document attention"


def describe_denoising(recipe: dict) -> str:
    noise = {key: value for key, value in recipe.get("noise", {}).items() if value}
    return f"denoising: reconstruct the text from a corrupted copy ({', '.join(f'{k}={v}' for k, v in noise.items())})"


def describe_feature_denoising(recipe: dict) -> str:
    features = recipe.get("features", {})
    return (f"denoising autoencoder on float vectors: rebuild the clean vector (mean squared error) from a copy "
            f"with Gaussian noise (std {features.get('gaussian_std')}) and {features.get('mask_rate', 0):.0%} of "
            f"values set to 0; {features.get('feature_tokens')} feature tokens per vector")


# ------------------------------------------------------------------------------------------------ rules
def refuse_continuing(recipe) -> str | None:
    if recipe.model.init_from:
        return (f"model.init_from={recipe.model.init_from!r} with objective 'rtd': replaced-token detection trains a "
                "generator and a discriminator of the hf_pretrain encoder family from scratch; continue a checkpoint "
                "with objective 'mlm' (or 'clm').")
    return None


def refuse_mixture_in_memory(recipe) -> str | None:
    # A mixture held in memory mixes packed blocks by weight (data/mixing.py); the autoencoder's rows are whole
    # documents in length buckets, which that sampler does not order. A stream mixes its documents per slot.
    if recipe.data.sources and not recipe.data.streaming:
        return ("data.sources with objective 'dae' needs data.streaming=true: in memory its batches are length "
                "buckets of documents, which the mixture's weighted block order does not cover. Set "
                "data.streaming=true (the sources are then mixed per row by weight), or train on one source.")
    return None


def feature_size_is_derived(recipe) -> str | None:
    if "feature_size" in recipe.model.config:
        return (f"model.config.feature_size={recipe.model.config['feature_size']!r}: it is derived from the data "
                "(values per vector / features.feature_tokens); set features.feature_tokens instead.")
    return None


def feature_files_are_named(recipe) -> str | None:
    features = recipe.features
    if features.source == "files" and not features.train_files:
        return "features.source='files' needs features.train_files (a path or glob, or a list of them)."
    if features.source != "files" and (features.train_files or features.validation_files or features.columns):
        return (f"features.source={features.source!r} ignores features.train_files/validation_files/columns; set "
                "features.source=files to train on your own vectors.")
    return None


def feature_validation_exists(recipe) -> str | None:
    features = recipe.features
    if features.validation_fraction == 0 and not features.validation_files:
        return "features.validation_fraction=0 and no features.validation_files: eval needs held-out vectors."
    return None


# ------------------------------------------------------------------------------------------------ the registry
OBJECTIVES: dict[str, ObjectiveSpec] = {spec.name: spec for spec in (
    ObjectiveSpec(
        name="mlm",
        implementation="masked:MaskedLMObjective",
        summary="masked language model: an encoder predicts masked tokens",
        sections=TEXT_SECTIONS + ("masking",),
        tokenizer_layout="encoder",
        eval_metrics=(LOSS, PERPLEXITY, token_accuracy("masked-token accuracy"), *PROBE),
        describe=describe_masked_lm,
        adds_domain_words=True,
    ),
    ObjectiveSpec(
        name="clm",
        implementation="causal:CausalLMObjective",
        summary="causal language model: a GPT-style decoder predicts each next token",
        sections=TEXT_SECTIONS,
        tokenizer_layout="decoder",
        eval_metrics=(LOSS, PERPLEXITY, token_accuracy("next-token accuracy"), *PROBE),
        describe=describe_causal_lm,
        generates_text=True,
    ),
    ObjectiveSpec(
        name="rtd",
        implementation="masked:ReplacedTokenDetectionObjective",
        summary="replaced-token detection (ELECTRA): an encoder tells which tokens a small generator replaced",
        sections=TEXT_SECTIONS + ("masking", "rtd"),
        tokenizer_layout="encoder",
        eval_metrics=(
            LOSS,
            EvalMetric("detection_accuracy", "replaced-token detection accuracy", percent=True, model_index="accuracy"),
            EvalMetric("replaced_share", "share of tokens replaced by the generator", percent=True),
            EvalMetric("generator_loss", "generator masked-LM loss"),
            *PROBE,
        ),
        describe=describe_replaced_token_detection,
        checks=(refuse_continuing,),
        continues_checkpoints=False,
    ),
    ObjectiveSpec(
        name="dae",
        implementation="denoising:DenoisingObjective",
        summary="denoising autoencoder: encode a corrupted text (to one vector, or to every state) and rebuild it",
        sections=TEXT_SECTIONS + ("noise",),
        tokenizer_layout="encoder-decoder",
        eval_metrics=(LOSS, PERPLEXITY, token_accuracy("reconstruction token accuracy"),
                      EvalMetric("exact_match", "exact match (whole text reconstructed)", percent=True,
                                 model_index="exact_match"), *PROBE),
        describe=describe_denoising,
        checks=(refuse_mixture_in_memory,),
        encoder_decoder=True,
    ),
    ObjectiveSpec(
        name="dae-features",
        implementation="features:FeatureDenoisingObjective",
        summary="denoising autoencoder on float vectors: rebuild a clean vector from a noisy copy",
        sections=("features",),
        tokenizer_layout=None,
        reads="float vectors",
        eval_metrics=(
            EvalMetric("mse", "reconstruction MSE, noisy input", model_index="mse"),
            EvalMetric("clean_mse", "reconstruction MSE, clean input"),
            EvalMetric("baseline_mse", "MSE of predicting the training mean"),
            EvalMetric("r2", "R^2 (noisy input, against the training mean)"),
        ),
        describe=describe_feature_denoising,
        checks=(feature_size_is_derived, feature_files_are_named, feature_validation_exists),
        encoder_decoder=True,
    ),
)}


DEFAULT = next(iter(OBJECTIVES.values()))  # the masked LM: a recipe's `objective` when it names none


def objective_spec(name: str) -> ObjectiveSpec:
    """The entry of a registered objective (a recipe's `objective` was checked against OBJECTIVES already)."""
    return OBJECTIVES[name]


def objective_of_run(recipe: dict) -> ObjectiveSpec:
    """The entry of the objective a run folder's recipe (a dict) trained; a recipe of an older run without the key
    trained the default, the masked LM."""
    return OBJECTIVES.get(recipe.get("objective"), DEFAULT)


def objective_class(name: str):
    """The class that implements the objective, imported on first use (torch and the models load then)."""
    module, _, class_name = OBJECTIVES[name].implementation.partition(":")
    return getattr(importlib.import_module(f"hf_pretrain.training.objectives.{module}"), class_name)


def readers_of(section: str) -> list[str]:
    """The objectives that read a recipe section, in registry order."""
    return [spec.name for spec in OBJECTIVES.values() if section in spec.all_sections]


def names_where(predicate: Callable[[ObjectiveSpec], bool]) -> list[str]:
    return [spec.name for spec in OBJECTIVES.values() if predicate(spec)]


__all__ = ["OBJECTIVES", "DEFAULT", "ObjectiveSpec", "EvalMetric", "objective_spec", "objective_of_run",
           "objective_class", "readers_of", "names_where"]

"""The pretraining recipe: its sections, loading with overrides, and the rules that span several keys.

A recipe fails before any work starts: an unknown key names itself with a did-you-mean, a bad value names the
key, the value and what is allowed. What an objective reads and its own rules come from its registry entry
(hf_pretrain/objectives.py); a section the objective does not read must stay at its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..architectures import OWN, architectures_for
from ..objectives import DEFAULT, OBJECTIVES, names_where, objective_spec, readers_of
from .corruption import FeaturesSection, MaskingSection, NoiseSection, ReplacedTokenDetectionSection
from .data import DataSection, check_data_source
from .fields import RecipeError, SerializableRecipe, build_section, changed_keys, choice, finite, section
from .loading import read_recipe_data
from .model import ModelSection, TokenizerSection
from .probe import ProbeSection, check_probe
from .train import OutputSection, TrainSection, check_warmup


@dataclass
class Recipe(SerializableRecipe):
    """A pretraining recipe: the objective and the sections it reads."""

    objective: str = choice(
        DEFAULT.name, *OBJECTIVES,
        doc="what the model learns: " + "; ".join(f"{name}: {spec.summary}" for name, spec in OBJECTIVES.items()))
    model: ModelSection = section(ModelSection)
    tokenizer: TokenizerSection = section(TokenizerSection)
    data: DataSection = section(DataSection)
    masking: MaskingSection = section(MaskingSection)
    rtd: ReplacedTokenDetectionSection = section(ReplacedTokenDetectionSection, "replaced-token detection's generator")
    noise: NoiseSection = section(NoiseSection)
    features: FeaturesSection = section(FeaturesSection, "float feature vectors and their noise (dae-features)")
    probe: ProbeSection = section(ProbeSection)
    train: TrainSection = section(TrainSection)
    output: OutputSection = section(OutputSection)


def load_recipe(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    return recipe_from_dict(read_recipe_data(name_or_path, overrides, "pretrain"))


def recipe_from_dict(data: dict) -> Recipe:
    recipe = build_section(Recipe, data, prefix="")
    check_recipe(recipe)
    return recipe


# --------------------------------------------------------------------------------------------------- rules
def check_recipe(recipe: Recipe) -> None:
    """Rules that span several keys: the budget, the sections the objective reads, and its own rules."""
    spec = objective_spec(recipe.objective)
    train, masking = recipe.train, recipe.masking
    for name, value in recipe.model.config.items():  # passed to the model's config class as they are
        if isinstance(value, float):
            finite(f"model.config.{name}", value)
    if train.max_steps is None and train.max_tokens is None and train.max_minutes is None:
        raise RecipeError("train.max_steps, train.max_tokens and train.max_minutes are all null; set a budget.")
    if masking.mask_replace_prob + masking.random_replace_prob > 1.0 + 1e-9:
        raise RecipeError(
            f"masking.mask_replace_prob={masking.mask_replace_prob} + masking.random_replace_prob="
            f"{masking.random_replace_prob} is more than 1; the two shares (and the kept share) must sum to 1."
        )
    if masking.whole_word and masking.span:
        raise RecipeError("masking.whole_word=true and masking.span=true: choose one of the two.")
    check_sections_fit_objective(recipe)
    if spec.reads_text:
        check_data_source(recipe.data)
        check_probe(recipe.probe, recipe.data.source)
    check_warmup(train.warmup)
    check_model_keys(recipe)
    for rule in spec.checks:
        problem = rule(recipe)
        if problem:
            raise RecipeError(problem)


def check_model_keys(recipe: Recipe) -> None:
    """The keys whose meaning depends on what the objective's model is: token embeddings, an encoder and a
    decoder, a continued checkpoint's vocabulary."""
    spec, model, train = objective_spec(recipe.objective), recipe.model, recipe.train
    if recipe.tokenizer.add_tokens and not (spec.adds_domain_words and recipe.tokenizer.path and model.init_from):
        names = " or ".join(repr(name) for name in names_where(lambda spec: spec.adds_domain_words))
        raise RecipeError(
            f"tokenizer.add_tokens={recipe.tokenizer.add_tokens} extends the vocabulary of a checkpoint you continue: "
            f"it needs objective {names} with model.init_from and tokenizer.path set (a tokenizer trained here already "
            "fits the corpus)."
        )
    if model.architecture != OWN:
        allowed = architectures_for(recipe.objective)
        if model.architecture not in allowed:
            raise RecipeError(
                f"model.architecture={model.architecture!r} cannot train objective {recipe.objective!r}; allowed: "
                f"{', '.join([OWN, *allowed])}."
            )
        if model.init_from:
            raise RecipeError(
                f"model.architecture={model.architecture!r} with model.init_from={model.init_from!r}: a continued "
                "checkpoint keeps its own class; model.architecture names what a new model is. Set one of the two."
            )
    if model.embedding_init == "spectral" and model.init_from:
        raise RecipeError(
            f"model.embedding_init='spectral' with model.init_from={model.init_from!r}: a loaded checkpoint keeps its "
            "own trained embeddings; use embedding_init=random (the default) to continue pretraining."
        )
    if not spec.reads_text:  # a model of feature vectors has no token embedding
        for key, value, default in (("model.embedding_init", model.embedding_init, "random"),
                                    ("train.embedding_lr_scale", train.embedding_lr_scale, 1.0)):
            if value != default:
                raise RecipeError(
                    f"{key}={value!r} is about token embeddings: objective {recipe.objective!r} reads {spec.reads} "
                    f"and has no token embedding. Remove it, or set it to {default!r}."
                )
    if train.encoder_lr_scale != 1.0 and not spec.encoder_decoder:
        names = " or ".join(names_where(lambda spec: spec.encoder_decoder))
        raise RecipeError(
            f"train.encoder_lr_scale={train.encoder_lr_scale} is for the objectives with an encoder and a decoder "
            f"({names}), which can learn at different rates; objective {recipe.objective!r} trains one stack at "
            "train.lr. Remove it, or set it to 1."
        )


def check_sections_fit_objective(recipe: Recipe) -> None:
    """A section the objective does not read must stay at its defaults: a setting that would be silently ignored
    is an error naming it."""
    spec = objective_spec(recipe.objective)
    unread = [name for name in ("tokenizer", "data", "probe", "masking", "rtd", "noise", "features")
              if name not in spec.all_sections]
    changed = {name: changed_keys(getattr(recipe, name), name) for name in unread}
    if not spec.reads_text and any(changed.values()):  # every unread section is about text
        raise RecipeError(
            f"{', '.join(key for keys in changed.values() for key in keys)}: objective {recipe.objective!r} reads "
            f"{spec.reads}, not text, so it has no tokenizer, data, probe, masking, rtd or noise settings; its input and "
            f"noise are set in the {' and '.join(spec.sections)} section."
        )
    for name in unread:
        if changed[name]:
            readers = readers_of(name)
            raise RecipeError(
                f"{', '.join(changed[name])}: the {name} section is read by objective {' or '.join(readers)} only; "
                f"objective {recipe.objective!r} would ignore it. Remove it, or set objective={readers[0]}."
            )

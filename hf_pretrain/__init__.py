"""hf_pretrain: pretrain your own transformer on your own text, in Hugging Face format.

Importing the package registers its model families with the transformers Auto classes.

Python API (what the `hf-pretrain` commands do, for notebooks and scripts):
* `hf_pretrain.pretrain(recipe, overrides=(), restart=False)` -> the run summary (`hf-pretrain pretrain`)
* `from hf_pretrain.finetune import finetune`; `finetune(recipe, overrides=())` -> the fine-tuning results
  (`hf-pretrain finetune`; `hf_pretrain.finetune` is the subpackage, so the function is imported from it)
* `from hf_pretrain.hub import export_run, embed_file, write_report` (`export`, `embed`, `report`)
"""

from .models import (
    PretrainDAEConfig,
    PretrainDAEFeatureConfig,
    PretrainDAEForDenoising,
    PretrainDAEForFeatureReconstruction,
    PretrainDAEModel,
    PretrainEncoderConfig,
    PretrainEncoderForMaskedLM,
    PretrainEncoderForSequenceClassification,
    PretrainEncoderForTokenClassification,
    PretrainEncoderForReplacedTokenDetection,
    PretrainEncoderModel,
)

from .version import __version__


def pretrain(recipe, overrides=(), restart=False) -> dict:
    """Run a pretraining recipe as `hf-pretrain pretrain RECIPE key=value ... [--restart]` does, and return the run
    summary it prints (steps, tokens, minutes, eval before and after, final_dir, run_dir; also in RUN/summary.json).

    recipe: a YAML path, a shipped recipe name (`mlm-tiny`) or a `hf_pretrain.recipe.Recipe`; overrides: dotted
    `key=value` strings (for a name or path). A rerun on the same output.dir resumes; restart=True moves the
    earlier run aside and starts over. A bad recipe raises RecipeError before any work."""
    from .console import setup_console
    from .recipe import Recipe, load_recipe
    from .training.loop import Pretraining  # torch and accelerate: loaded on first use, not on import

    setup_console(force=False)  # reports on stderr, unless the program set up logging itself
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise ValueError("overrides apply to a recipe name or path; change the Recipe object directly.")
    return Pretraining(recipe, restart=restart).run()

__all__ = [
    "PretrainEncoderConfig",
    "PretrainEncoderModel",
    "PretrainEncoderForMaskedLM",
    "PretrainEncoderForSequenceClassification",
    "PretrainEncoderForTokenClassification",
    "PretrainEncoderForReplacedTokenDetection",
    "PretrainDAEConfig",
    "PretrainDAEFeatureConfig",
    "PretrainDAEModel",
    "PretrainDAEForDenoising",
    "PretrainDAEForFeatureReconstruction",
    "pretrain",
    "__version__",
]

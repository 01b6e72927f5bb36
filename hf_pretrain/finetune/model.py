"""The model to fine-tune: where it comes from, the new head, and what trains — warm start (shrink and perturb),
a frozen encoder (linear probe) or LoRA adapters.
"""

from __future__ import annotations

import inspect
import json
import logging
from contextlib import contextmanager
from pathlib import Path

from ..folders import model_location, remote_code_allowed
from ..recipe import RecipeError
from .data import LabelScheme
from .recipe import LORA_TARGET_MODULES, FinetuneRecipe, LoraSection

logger = logging.getLogger(__name__)


def resolve_model_source(model: str, work_dir: Path) -> str:
    """A loadable model path or Hub id: a run folder becomes its final/, a denoising autoencoder its encoder
    (exported to work_dir/encoder)."""
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
        from ..hub.export import export_dae_encoder

        encoder = export_dae_encoder(path, work_dir / "encoder")
        logger.info(f"{path} is a denoising autoencoder: fine-tuning its encoder, exported to {encoder}")
        return str(encoder)
    return str(path)


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
        with expected_new_head():
            model = auto.from_pretrained(model_path, trust_remote_code=trust, **labels)
    if model.config.pad_token_id is None and pad_token_id is not None:
        model.config.pad_token_id = pad_token_id  # batched classification needs it to find the last real token
    return model


@contextmanager
def expected_new_head():
    """transformers reports a checkpoint loaded under another head (the pretraining head's weights unused, the new
    head's initialized) as a warning table; here that is what fine-tuning means, so the table is shown only with
    --verbose. Size mismatches still raise."""
    import transformers

    from ..console import is_verbose

    if is_verbose():
        yield
        return
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


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


def model_input_names(model) -> set[str]:
    """The arguments the model's forward takes (through a PEFT wrapper too), so only those columns are kept:
    `remove_unused_columns=False` then does no harm, and a tokenizer's token_type_ids reach BERT but not ours."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters) | {"labels"}


def prepare_model(recipe: FinetuneRecipe, model_path: str, pad_token_id, scheme: LabelScheme, from_scratch: bool):
    """The model as it starts training: pretrained (or fresh) weights with a new head, then the recipe's warm start,
    frozen encoder or LoRA adapters."""
    model = build_model(model_path, recipe.task, scheme, from_scratch, pad_token_id, recipe.model_config,
                        recipe.trust_remote_code)
    warm = recipe.warm_start
    if trains_whole_encoder(recipe) and (warm.shrink != 1.0 or warm.perturb != 0.0):
        import torch

        torch.manual_seed(recipe.train.seed + 1)  # W_init: its own draw, independent of the head's
        fresh = build_model(model_path, recipe.task, scheme, True, pad_token_id, recipe.model_config,
                            recipe.trust_remote_code)
        changed = shrink_and_perturb(model, fresh, warm.shrink, warm.perturb)
        start = "fresh" if from_scratch else "pretrained"
        logger.debug(f"warm start: {changed} weight matrices of the {start} encoder -> "
                     f"{warm.shrink} * W + {warm.perturb} * W_init")
        del fresh
    if recipe.freeze_encoder:
        freeze_encoder(model)
    if recipe.lora is not None:
        model = apply_lora(model, recipe.lora, recipe.task)
    return model


def trains_whole_encoder(recipe: FinetuneRecipe) -> bool:
    """Warm start and the linear-probe stage apply only then: a frozen or LoRA-adapted encoder would keep the
    perturbed weights as they are, and its head already trains alone (or with the adapters)."""
    return not recipe.freeze_encoder and recipe.lora is None

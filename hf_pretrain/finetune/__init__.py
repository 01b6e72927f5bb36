"""Fine-tuning with `transformers.Trainer`: text classification and token classification (NER) from a YAML recipe.

    hf-pretrain finetune finetune-classification model=runs/mlm-tiny/final
    hf-pretrain finetune finetune-ner model=runs/mlm-tiny data.train_files=train.jsonl --compare-scratch

Python API: `finetune(recipe, overrides)` runs a recipe and returns what it writes to `OUTPUT/metrics.json`; the
pieces (`load_task_data`, `resolve_model_source`, `build_model`, `build_compute_metrics`, `training_arguments`)
also serve users who write their own `Trainer` code.

Modules: `recipe` (sections, rules, loading), `data` (task data, label schemes, tokenization), `model` (building the
model, warm start, freezing, LoRA), `run` (Trainer, linear-probe stage, metrics, `finetune()`, results table).

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
TrainingArguments fields pass through under their own names: `train.report_to` (trackers) and
`train.activation_checkpointing` (transformers 5's name for gradient_checkpointing). `train.push_to_hub` with
`train.hub_model_id` pushes OUTPUT/model (the best model, its tokenizer and our card) to that repository when
fine-tuning ends; Trainer itself pushes nothing.

Output folder: `metrics.json`, `recipe.yaml` (resolved), `model/` (best checkpoint by the validation metric, with
its tokenizer and a model card naming its base model; LoRA weights merged in), `scratch/model/` with
`compare_scratch`, and `.hf_pretrain_output.json`, the marker that lets a later run replace it. A folder holding
anything else is refused, never overwritten.
"""

from .data import LabelScheme, infer_label_scheme, infer_tag_scheme, load_task_data
from .model import (
    apply_lora,
    build_model,
    freeze_encoder,
    model_input_names,
    resolve_model_source,
    shrink_and_perturb,
)
from .recipe import (
    LORA_TARGET_MODULES,
    FinetuneDataSection,
    FinetuneOutputSection,
    FinetuneRecipe,
    FinetuneTrainSection,
    LinearProbeSection,
    LoraSection,
    WarmStartSection,
    finetune_recipe_from_dict,
    load_finetune_recipe,
)
from .run import build_compute_metrics, finetune, results_table, training_arguments

__all__ = [
    "FinetuneRecipe",
    "FinetuneDataSection",
    "FinetuneTrainSection",
    "FinetuneOutputSection",
    "LoraSection",
    "WarmStartSection",
    "LinearProbeSection",
    "LORA_TARGET_MODULES",
    "LabelScheme",
    "finetune",
    "load_finetune_recipe",
    "finetune_recipe_from_dict",
    "load_task_data",
    "infer_label_scheme",
    "infer_tag_scheme",
    "resolve_model_source",
    "build_model",
    "shrink_and_perturb",
    "freeze_encoder",
    "apply_lora",
    "model_input_names",
    "build_compute_metrics",
    "training_arguments",
    "results_table",
]

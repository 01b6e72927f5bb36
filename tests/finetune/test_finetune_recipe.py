"""The fine-tuning recipe (hf_pretrain.finetune.recipe): shipped recipes, key and value errors, the rules that span
several keys and the TrainingArguments fields it passes on, all checked before any work."""

from __future__ import annotations

import pytest

from hf_pretrain.cli import main
from hf_pretrain.finetune import finetune_recipe_from_dict, load_finetune_recipe
from hf_pretrain.recipe import RecipeError


def test_shipped_recipes_load_and_validate():
    for name in ("finetune-classification", "finetune-ner", "finetune-sst2", "finetune-mrpc"):
        recipe = load_finetune_recipe(name, ["model=some/model", "data.train_files=x.jsonl"])
        assert recipe.model == "some/model"
    assert load_finetune_recipe("finetune-mrpc").data.text_pair_column == "sentence2"
    assert load_finetune_recipe("finetune-ner", ["data.train_files=x.jsonl"]).task == "token-classification"


def test_recipe_errors_name_key_value_and_allowed():
    with pytest.raises(RecipeError, match=r"unknown key 'train.epoch'.*did you mean 'train.epochs'.*Allowed in train: seed, lr"):
        finetune_recipe_from_dict({"train": {"epoch": 3}})
    with pytest.raises(RecipeError, match=r"task='ner' is not allowed; choose one of 'classification'"):
        finetune_recipe_from_dict({"task": "ner"})
    with pytest.raises(RecipeError, match=r"unknown key 'lora.target_module'.*did you mean 'lora.target_modules'"):
        finetune_recipe_from_dict({"lora": {"target_module": ["o_proj"]}})
    with pytest.raises(RecipeError, match="choose one of the two"):
        finetune_recipe_from_dict({"lora": {}, "freeze_encoder": True})
    with pytest.raises(RecipeError, match="metric_for_best_model='bleu'"):
        finetune_recipe_from_dict({"train": {"metric_for_best_model": "bleu"}})
    with pytest.raises(RecipeError, match="needs data.train_files"):
        finetune_recipe_from_dict({"data": {"source": "files"}})
    assert finetune_recipe_from_dict({"lora": {}}).lora.target_modules == ["qkv_proj", "o_proj", "up_proj", "down_proj"]
    assert finetune_recipe_from_dict({"lora": None}).lora is None


def test_cli_without_model_fails_with_a_clear_message(capsys):
    assert main(["finetune", "finetune-classification"]) == 2
    assert "model is not set" in capsys.readouterr().err


def test_a_pretraining_recipe_is_refused_naming_the_command_that_runs_it():
    with pytest.raises(RecipeError, match=r"recipe 'mlm-tiny' is a pretraining recipe .*`hf-pretrain pretrain mlm-tiny`"):
        load_finetune_recipe("mlm-tiny")


def test_the_lora_flag_keeps_a_recipes_own_lora_settings(tmp_path, capsys):
    """--lora is the override `lora={}`: a mapping merges into the section the recipe already has."""
    path = tmp_path / "with-lora.yaml"
    path.write_text("task: classification\nlora: {r: 4, alpha: 8}\n")
    recipe = load_finetune_recipe(str(path), ["lora.dropout=0.2", "lora={}"])
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.dropout) == (4, 8.0, 0.2)
    assert load_finetune_recipe("finetune-classification", ["lora={}"]).lora.r == 8  # off in the recipe: defaults
    assert load_finetune_recipe(str(path), ["lora=null"]).lora is None
    # The flags are overrides, validated with the recipe once, before any work.
    out = tmp_path / "out"
    assert main(["finetune", "finetune-classification", "model=some/model", f"output.dir={out}",
                          "--lora", "--freeze-encoder"]) == 2
    assert "lora and freeze_encoder=true both limit what trains" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.report_to=wandbb", r"train.report_to=\['wandbb'\] is not allowed; list trackers among .*tensorboard"
                                   r".* \(did you mean 'wandb'\?\)"),
        ("train.report_to=[all, tensorboard]", r"or give 'all' \(every one installed\) or 'none' alone"),
        ("train.push_to_hub=maybe", r"train.push_to_hub='maybe' is not allowed; it must be true/false"),
        ("train.push_to_hub=true", r"train.push_to_hub=true needs train.hub_model_id"),
        ("train.hub_model_id=tiny-model", r"train.hub_model_id='tiny-model' is not allowed; write it as user/name"),
        ("train.activation_checkpointing=1", r"train.activation_checkpointing=1 is not allowed; it must be true/false"),
        ("train.gradient_checkpointing=true", r"did you mean 'train.activation_checkpointing'\?"),
    ],
    ids=["tracker-typo", "all-with-others", "push-not-bool", "push-without-repo", "repo-id", "checkpointing-not-bool",
         "old-name"],
)
def test_trainer_fields_with_bad_values_fail_naming_key_value_and_allowed(override, message):
    with pytest.raises(RecipeError, match=message):
        load_finetune_recipe("finetune-classification", ["model=some/model", override])


def test_the_tracker_list_is_transformers_own():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    from hf_pretrain.finetune.recipe import TRACKERS

    assert set(TRACKERS) == set(INTEGRATION_TO_CALLBACK)

"""Recipes: YAML + dotted overrides onto typed sections, validated before any work starts."""

from __future__ import annotations

import pytest

from hf_pretrain.recipe import RecipeError, load_recipe, recipe_from_dict, shipped_recipe_names


def test_every_shipped_recipe_loads_and_starts_with_a_comment_saying_how_to_run_it():
    from importlib import resources

    from hf_pretrain.finetune import load_finetune_recipe

    names = shipped_recipe_names()
    assert {"mlm-tiny", "mlm-small", "mlm-base", "mlm-continue", "clm-tiny", "clm-continue", "rtd-tiny", "rtd-base",
            "dae-sentence", "dae-bart", "dae-features"} <= set(names)
    assert {"finetune-classification", "finetune-ner"} <= set(names)
    for name in names:
        if name.startswith("finetune-"):
            needs_files = name == "finetune-ner"  # no built-in NER data: the user names the files
            overrides = ["data.train_files=train.jsonl"] if needs_files else []
            assert load_finetune_recipe(name, overrides).task in ("classification", "token-classification")
            with pytest.raises(RecipeError, match="is a fine-tuning recipe"):
                load_recipe(name)
            continue
        recipe = load_recipe(name)
        text = (resources.files("hf_pretrain") / "recipes" / f"{name}.yaml").read_text()
        assert text.startswith(f"# {name}:"), name
        assert "hf-pretrain pretrain" in text.split("\n\n")[0] or "accelerate launch" in text, name
        assert recipe.objective in ("mlm", "clm", "rtd", "dae", "dae-features")


def test_overrides_are_typed_and_reach_nested_sections(tmp_path):
    recipe = load_recipe(
        "mlm-tiny",
        ["train.lr=3e-4", "train.max_steps=7", "model.config.hidden_size=64", "data.source=files",
         "data.train_files=a.txt", "output.dir=x"],
    )
    assert recipe.train.lr == pytest.approx(3e-4) and isinstance(recipe.train.lr, float)
    assert recipe.train.max_steps == 7
    assert recipe.model.config["hidden_size"] == 64
    assert recipe.data.train_files == ["a.txt"]
    assert recipe.output.dir == "x"
    # The resolved recipe round-trips through YAML.
    path = tmp_path / "resolved.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(str(path)) == recipe
    # Files named without data.source=files would be ignored (the recipe says builtin): refused, saying so.
    with pytest.raises(RecipeError, match=r"data.train_files=\['a.txt'\] is for source=files, but "
                                          r"data.source='builtin': it would be ignored"):
        load_recipe("mlm-tiny", ["data.train_files=a.txt"])


@pytest.mark.parametrize(
    "data, message",
    [
        ({"trian": {}}, "unknown key 'trian'; did you mean 'train'?"),
        ({"train": {"btach_size": 3}}, "unknown key 'train.btach_size'; did you mean 'train.batch_size'?"),
        ({"train": {"lr": -1}}, "train.lr=-1.0 is not allowed; it must be > 0.0"),
        ({"train": {"schedule": "cosin"}}, "train.schedule='cosin' is not allowed; choose one of 'wsd', 'linear', 'cosine', 'constant' (did you mean 'cosine'?)"),
        ({"train": {"batch_size": "big"}}, "train.batch_size='big' is not allowed; it must be an integer"),
        ({"train": {"batch_size": 0}}, "train.batch_size=0 is not allowed; it must be >= 1"),
        ({"masking": {"mlm_probability": 1.5}}, "masking.mlm_probability=1.5 is not allowed; it must be <= 1.0"),
        ({"objective": "bert"}, "objective='bert' is not allowed; choose one of 'mlm', 'clm', 'rtd', 'dae'"),
        ({"data": {"source": "files"}}, "data.source='files' needs data.train_files"),
        ({"train": {"max_steps": None, "max_minutes": None, "max_tokens": None}}, "set a budget"),
        ({"masking": {"mask_replace_prob": 0.9, "random_replace_prob": 0.2}}, "is more than 1"),
        ({"train": "fast"}, "train must be a mapping"),
        ({"train": {"encoder_lr_scale": 0.1}}, "train.encoder_lr_scale=0.1 is for the objectives with an encoder and a decoder (dae or dae-features)"),
        ({"train": {"encoder_lr_scale": 0}}, "train.encoder_lr_scale=0.0 is not allowed; it must be > 0.0"),
        ({"objective": "dae-features", "train": {"embedding_lr_scale": 0.5}},
         "train.embedding_lr_scale=0.5 is about token embeddings: objective 'dae-features' reads float vectors"),
        ({"train": {"embedding_lr_scale": 0}}, "train.embedding_lr_scale=0.0 is not allowed; it must be > 0.0"),
        # nan passes every range check and inf never ends a budget: both are refused for every float key.
        ({"train": {"max_minutes": "nan"}}, "train.max_minutes=nan is not allowed; it must be a finite number"),
        ({"train": {"max_minutes": float("inf")}}, "train.max_minutes=inf is not allowed; it must be a finite"),
        ({"train": {"lr": float("nan")}}, "train.lr=nan is not allowed; it must be a finite number"),
        ({"masking": {"mlm_probability": "-inf"}}, "masking.mlm_probability=-inf is not allowed; it must be a finite"),
        ({"model": {"config": {"hidden_dropout": float("nan")}}}, "model.config.hidden_dropout=nan is not allowed"),
    ],
)
def test_bad_recipes_fail_with_the_key_the_value_and_what_is_allowed(data, message):
    data = {"train": {"max_steps": 10}, **data} if "train" not in data else data
    if isinstance(data.get("train"), dict) and not any(k.startswith("max_") for k in data["train"]):
        data["train"]["max_steps"] = 10
    with pytest.raises(RecipeError) as error:
        recipe_from_dict(data)
    assert message in str(error.value)


def test_unknown_recipe_name_suggests_a_shipped_one():
    with pytest.raises(RecipeError, match="did you mean 'mlm-tiny'"):
        load_recipe("mlm-tine")


def test_malformed_override_is_rejected():
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe("mlm-tiny", ["train.lr"])


@pytest.mark.parametrize("name, override, message", [
    ("mlm-tiny", "noise.word_delete_rate=0.3", "the noise section is read by objective dae only"),
    ("dae-sentence", "masking.mlm_probability=0.3", "the masking section is read by objective mlm or rtd only"),
    ("dae-features", "masking.span=true", "objective 'dae-features' reads float vectors"),
])
def test_a_section_the_objective_would_ignore_is_an_error_naming_the_key(name, override, message):
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(name, [override])
    assert override.split("=")[0] in str(error.value)


def test_an_autoencoder_mixture_in_memory_is_refused_and_a_streamed_one_is_not():
    sources = "data.sources=[{name: a, weight: 1, source: builtin}, {name: b, weight: 3, source: builtin}]"
    with pytest.raises(RecipeError, match="data.sources with objective 'dae' needs data.streaming=true"):
        load_recipe("dae-sentence", [sources])
    assert len(load_recipe("dae-sentence", [sources, "data.streaming=true"]).data.sources) == 2


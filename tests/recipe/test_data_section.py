"""The data section's sources: Hub keys as people name them, and mixtures under data.sources (parsing, refusals
naming `data.sources[i].key`, the resolved form, and a one-source recipe left as it was)."""

from __future__ import annotations

import pytest

from hf_pretrain.recipe import RecipeError, load_recipe, recipe_from_dict
from hf_pretrain.recipe.data import source_sections
from hf_pretrain.recipe.resume import resume_changes

BUDGET = {"train": {"max_steps": 10}}
WEB = {"name": "web", "weight": 0.7, "train_files": "web/*.jsonl"}
CODE = {"name": "code", "weight": 0.3, "source": "builtin"}


def recipe(data: dict):
    return recipe_from_dict({**BUDGET, "data": data})


def test_a_one_source_recipe_is_one_source_named_after_its_kind():
    data = recipe({"source": "files", "train_files": "a.txt", "max_documents": 5}).data
    assert data.sources == []
    (only,) = source_sections(data)
    assert (only.name, only.weight, only.source, only.train_files, only.max_documents) == ("files", 1.0, "files",
                                                                                          ["a.txt"], 5)
    assert [s.name for s in source_sections(recipe({}).data)] == ["builtin"]


def test_hub_keys_parse_and_reach_the_source():
    data = recipe({"source": "hub", "hub_dataset": "org/corpus", "hub_revision": "v1.0",
                   "hub_data_files": {"train": "data/train-*.parquet", "dev": ["data/dev.parquet"]},
                   "hub_validation_split": "dev"}).data
    (only,) = source_sections(data)
    assert (only.hub_revision, only.hub_validation_split) == ("v1.0", "dev")
    assert only.hub_data_files == {"train": "data/train-*.parquet", "dev": ["data/dev.parquet"]}
    # A single pattern is a one-item list, like every list key.
    assert recipe({"source": "hub", "hub_dataset": "org/c", "hub_data_files": "en/*.jsonl"}).data.hub_data_files == [
        "en/*.jsonl"]


def test_a_mixture_is_resolved_compactly_and_round_trips(tmp_path):
    data = recipe({"sources": [WEB, CODE], "validation_fraction": 0.05}).data
    assert data.sources == [
        {"name": "web", "weight": 0.7, "source": "files", "train_files": ["web/*.jsonl"]},  # source inferred
        {"name": "code", "weight": 0.3, "source": "builtin"},
    ]
    sections = source_sections(data)
    assert [(s.name, s.source, s.weight, s.format) for s in sections] == [("web", "files", 0.7, "auto"),
                                                                         ("code", "builtin", 0.3, "auto")]
    path = tmp_path / "resolved.yaml"
    resolved = recipe_from_dict({**BUDGET, "data": {"sources": [WEB, CODE]}})
    path.write_text(resolved.to_yaml())
    assert load_recipe(str(path)) == resolved
    # A resumed run may not change a weight: that changes what is trained.
    changed = recipe_from_dict({**BUDGET, "data": {"sources": [{**WEB, "weight": 0.5}, CODE]}})
    allowed, refused = resume_changes(resolved.to_dict(), changed)
    assert not allowed and len(refused) == 1 and refused[0].startswith("data.sources:")


def test_a_mixture_from_an_override():
    loaded = load_recipe("mlm-tiny", ["data.sources=[{name: a, weight: 1, hub_dataset: org/a}, {name: b, weight: 3}]"])
    assert [(s.name, s.source) for s in source_sections(loaded.data)] == [("a", "hub"), ("b", "builtin")]


@pytest.mark.parametrize("data, message", [
    ({"sources": [WEB, {**CODE, "wieght": 2}]},
     "unknown key 'data.sources[1].wieght'; did you mean 'data.sources[1].weight'?"),
    ({"sources": [WEB, {**CODE, "weight": 0}]}, "data.sources[1].weight=0.0 is not allowed; it must be > 0.0"),
    ({"sources": [WEB, {**CODE, "weight": "nan"}]}, "data.sources[1].weight=nan is not allowed; it must be a finite"),
    ({"sources": [WEB, {**CODE, "weight": "heavy"}]}, "data.sources[1].weight='heavy' is not allowed; it must be a"),
    ({"sources": [WEB, {"name": "code"}]}, "data.sources[1].weight is missing"),
    ({"sources": [{"weight": 1}]}, "data.sources[0].name is missing"),
    ({"sources": [WEB, {**CODE, "name": "web"}]},
     "data.sources[1].name='web' is also the name of data.sources[0]"),
    ({"sources": [{**CODE, "name": "a b"}]}, "data.sources[0].name='a b' is not allowed"),
    ({"sources": [WEB, "code"]}, "data.sources[1]='code' is not allowed; each source is a mapping"),
    ({"sources": [{**CODE, "source": "hubb"}]},
     "data.sources[0].source='hubb' is not allowed; choose one of 'builtin', 'files', 'hub' (did you mean 'hub'?)"),
    ({"sources": [{**CODE, "source": "files"}]}, "data.sources[0].source='files' needs data.sources[0].train_files"),
    ({"sources": [{**CODE, "source": "hub"}]}, "data.sources[0].source='hub' needs data.sources[0].hub_dataset"),
    ({"sources": [{**WEB, "hub_revision": "v2"}]},
     "data.sources[0].hub_revision='v2' is for source=hub, but data.sources[0].source='files'"),
    ({"sources": [{**CODE, "train_files": "x", "source": "builtin"}]},
     "data.sources[0].train_files=['x'] is for source=files, but data.sources[0].source='builtin'"),
    ({"sources": [WEB], "train_files": "other.txt", "source": "files"},
     "data.source='files', data.train_files=['other.txt'] with data.sources: in a mixture each source names its own"),
    ({"sources": [WEB], "max_documents": 100}, "data.max_documents=100 with data.sources"),
    # The Hub keys, in the data section itself and in a source.
    ({"source": "files", "train_files": "a.txt", "hub_revision": "main"},
     "data.hub_revision='main' is for source=hub, but data.source='files'"),
    ({"source": "hub", "hub_dataset": "org/c", "hub_validation_split": "train"},
     "data.hub_validation_split='train' is also data.hub_split"),
    ({"source": "hub", "hub_dataset": "org/c", "hub_data_files": ["a/*.jsonl"], "hub_split": "en"},
     "data.hub_split='en' with data.hub_data_files as a list: `datasets` names the split of a list of files 'train'"),
    ({"source": "hub", "hub_dataset": "org/c", "hub_data_files": {"train": "t/*", "dev": "d/*"},
      "hub_validation_split": "validation"},
     "data.hub_validation_split='validation' is not a split of data.hub_data_files; its splits: 'train', 'dev'"),
    ({"source": "hub", "hub_dataset": "org/c", "hub_data_files": {"train": 3}},
     "data.hub_data_files={'train': 3} is not allowed; a mapping must give each split name a path or glob"),
    ({"sources": [{"name": "h", "weight": 1, "hub_dataset": "org/c", "hub_data_files": {"dev": "d/*"}}]},
     "data.sources[0].hub_split='train' is not a split of data.sources[0].hub_data_files; its splits: 'dev'"),
])
def test_bad_sources_are_refused_naming_the_key_the_value_and_what_is_allowed(data, message):
    with pytest.raises(RecipeError) as error:
        recipe(data)
    assert message in str(error.value)


def test_recipe_keys_help_documents_the_new_keys():
    from hf_pretrain.cli.pretraining import recipe_keys_help, resolved_recipe_text

    text = recipe_keys_help()
    for key in ("data.hub_revision", "data.hub_data_files", "data.hub_validation_split", "data.sources"):
        assert f"  {key} = " in text, key
    assert "name, weight (share of the trained tokens)" in text
    shown = resolved_recipe_text(load_recipe("mlm-tiny", ["data.sources=[{name: a, weight: 1}, {name: b, weight: 2}]"]))
    assert "sources: [{name: a, source: builtin, weight: 1.0}, {name: b, source: builtin, weight: 2.0}]" in shown

"""Hub datasets as people name them (a revision, data files inside the repo, the dataset's own validation split),
tested on local dataset folders through the same `datasets.load_dataset` path: the Hub is unreachable here."""

from __future__ import annotations

import json
from types import SimpleNamespace

import datasets
import pytest

from hf_pretrain.data import sources
from hf_pretrain.data.pipeline import load_text_splits
from hf_pretrain.recipe import recipe_from_dict


def dataset_folder(root, splits: dict[str, int], files_per_split: int = 2, folder: str = "data"):
    """A dataset repo's layout: data/{split}-0000k-of-0000n.jsonl, documents named by split, file and row."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        for k in range(files_per_split):
            lines = [json.dumps({"text": f"{split} document {k}-{i} about rivers", "id": i}) for i in range(rows)]
            (root / folder / f"{split}-{k:05d}-of-{files_per_split:05d}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def texts(dataset) -> list[str]:
    return [row["text"] for row in dataset]


@pytest.fixture
def calls(monkeypatch):
    """Every call of datasets.load_dataset / load_dataset_builder, with its arguments (the real ones still run)."""
    seen = []
    for name in ("load_dataset", "load_dataset_builder"):
        real = getattr(datasets, name)

        def record(*args, _real=real, _name=name, **kwargs):
            seen.append((_name, args, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(datasets, name, record)
    return seen


@pytest.mark.parametrize("streaming", [False, True])
def test_the_datasets_own_validation_split_is_used(tmp_path, streaming):
    repo = dataset_folder(tmp_path / "repo", {"train": 6, "validation": 3})
    loaded = sources.load_text_sources(hub_dataset=str(repo), validation_fraction=0.2, streaming=streaming)
    assert isinstance(loaded.train, datasets.IterableDataset) == streaming
    assert sorted(texts(loaded.validation)) == sorted(f"validation document {k}-{i} about rivers"
                                                      for k in range(2) for i in range(3))
    assert len(texts(loaded.train)) == 12, "the fraction is not held out of train when the dataset has a split"
    assert loaded.reports["validation"].documents_in == 6


def test_without_a_validation_split_a_fraction_of_train_is_held_out_never_test(tmp_path):
    repo = dataset_folder(tmp_path / "repo", {"train": 200, "test": 5})
    loaded = sources.load_text_sources(hub_dataset=str(repo), validation_fraction=0.1, seed=3)
    held_out = texts(loaded.validation)
    assert held_out and all(text.startswith("train ") for text in held_out)
    assert len(held_out) + len(loaded.train) == 400


def test_a_dev_split_named_in_data_files_is_found_and_a_missing_split_is_named_before_reading(tmp_path, calls):
    repo = dataset_folder(tmp_path / "repo", {"train": 4, "dev": 2}, files_per_split=1, folder="raw")
    files = {"train": "raw/train-*.jsonl", "dev": "raw/dev-*.jsonl"}
    loaded = sources.load_text_sources(hub_dataset=str(repo), hub_data_files=files, validation_fraction=0.5)
    assert texts(loaded.validation) == ["dev document 0-0 about rivers", "dev document 0-1 about rivers"]
    assert len(loaded.train) == 4
    calls.clear()
    with pytest.raises(ValueError, match=r"hub_validation_split='valid' is not a split of .*; its splits: 'train', "
                                         r"'dev'"):
        sources.load_text_sources(hub_dataset=str(repo), hub_data_files=files, hub_validation_split="valid")
    with pytest.raises(ValueError, match=r"hub_split='training' is not a split of .*; its splits: 'train', 'dev'"):
        sources.load_text_sources(hub_dataset=str(repo), hub_data_files=files, hub_split="training")
    assert [name for name, _, _ in calls] == ["load_dataset_builder"] * 2, "refused before any data is read"


@pytest.mark.parametrize("streaming", [False, True])
def test_revision_data_files_and_splits_reach_load_dataset(tmp_path, calls, streaming):
    repo = dataset_folder(tmp_path / "repo", {"train": 5, "validation": 2, "extra": 2})
    recipe = recipe_from_dict({"train": {"max_steps": 1}, "data": {
        "source": "hub", "hub_dataset": str(repo), "hub_revision": "v1.2", "hub_config": None, "streaming": streaming,
        "hub_data_files": {"train": ["data/train-*.jsonl", "data/extra-*.jsonl"], "validation": "data/valid*"}}})
    splits = load_text_splits(recipe)
    loads = [kwargs for name, _, kwargs in calls if name == "load_dataset"]
    builders = [kwargs for name, _, kwargs in calls if name == "load_dataset_builder"]
    expected_files = {"train": ["data/train-*.jsonl", "data/extra-*.jsonl"], "validation": "data/valid*"}  # as given
    assert [kwargs["split"] for kwargs in loads] == ["train", "validation"]
    for kwargs in loads + builders:
        assert kwargs["revision"] == "v1.2" and kwargs["data_files"] == expected_files
    assert all(kwargs["streaming"] == streaming for kwargs in loads)
    assert len(texts(splits.train)) == 14 and len(texts(splits.validation)) == 4


def test_resolve_hub_files_on_a_local_folder(tmp_path):
    repo = dataset_folder(tmp_path / "repo", {"train": 3, "validation": 1})
    files, fmt, commit = sources.resolve_hub_files(str(repo), split="validation")
    assert files == [str(repo / "data" / f"validation-0000{k}-of-00002.jsonl") for k in range(2)]
    assert (fmt, commit) == ("jsonl", None)
    files, _, _ = sources.resolve_hub_files(str(repo), data_files=["data/train-00001-*"], split="train")
    assert files == [str(repo / "data" / "train-00001-of-00002.jsonl")]
    with pytest.raises(ValueError, match=r"hub_split='test' is not a split of .*; its splits: 'train', 'validation'"):
        sources.resolve_hub_files(str(repo), split="test")
    parquet = tmp_path / "pq"
    datasets.Dataset.from_dict({"text": ["a", "b"]}).to_parquet(str(parquet / "train.parquet"))
    assert sources.resolve_hub_files(str(parquet))[1] == "parquet"


def test_resolve_hub_files_reads_the_commit_of_pinned_hub_urls(monkeypatch):
    """What datasets 5.2 returns for a Hub repo (hf://datasets/{repo}@{sha}/...), faked: the Hub is unreachable."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    pinned = [f"hf://datasets/org/corpus@{sha}/data/train-0000{k}.parquet" for k in range(2)]
    from datasets.packaged_modules.parquet.parquet import Parquet

    class FakeBuilder(Parquet):
        def __init__(self):
            self.config = SimpleNamespace(data_files={"train": pinned})

    seen = {}

    def fake_builder(name, config, **kwargs):
        seen.update(name=name, config=config, **kwargs)
        return FakeBuilder()

    monkeypatch.setattr(datasets, "load_dataset_builder", fake_builder)
    files, fmt, commit = sources.resolve_hub_files("org/corpus", "en", "refs/pr/3", ["data/*.parquet"], "train")
    assert (files, fmt, commit) == (pinned, "parquet", sha)
    assert seen == {"name": "org/corpus", "config": "en", "revision": "refs/pr/3", "data_files": ["data/*.parquet"]}
    FakeBuilder.__init__ = lambda self: setattr(self, "config", SimpleNamespace(
        data_files={"train": [f"zip://train.jsonl::hf://datasets/org/corpus@{sha}/data.zip"]}))
    with pytest.raises(ValueError, match="files inside archives"):
        sources.resolve_hub_files("org/corpus")

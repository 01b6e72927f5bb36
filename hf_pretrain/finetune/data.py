"""Task data for fine-tuning: loading the splits, the label scheme (what the labels are and how a raw label becomes
a model target), and tokenization with labels aligned to the tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..data.collation import IGNORE_INDEX
from ..recipe import RecipeError
from .recipe import FinetuneDataSection, FinetuneRecipe

logger = logging.getLogger(__name__)


def load_task_data(recipe: FinetuneRecipe):
    """DatasetDict with `train`, `validation` and (when the data has one) `test`, raw columns as loaded."""
    import datasets

    data = recipe.data
    if data.source == "builtin":
        from ..data.builtin import load_builtin_task

        task = load_builtin_task()
        splits = {"train": task["train"], "test": task["test"]}
    elif data.source == "files":
        splits = load_file_splits(data)
    else:
        splits = load_hub_splits(data)
    if "validation" not in splits:
        held_out = splits["train"].train_test_split(test_size=data.validation_fraction, seed=recipe.train.seed)
        splits["train"], splits["validation"] = held_out["train"], held_out["test"]
        logger.info(f"no validation split given: {len(splits['validation'])} training examples "
                    f"(data.validation_fraction={data.validation_fraction}) are held out for it")
    splits["train"] = take(splits["train"].shuffle(seed=recipe.train.seed), data.max_train_examples)
    for name in ("validation", "test"):
        if name in splits:
            splits[name] = take(splits[name], data.max_eval_examples)
    return datasets.DatasetDict(splits)


def take(dataset, limit: int | None):
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def load_file_splits(data: FinetuneDataSection) -> dict:
    import datasets

    from ..data.sources import DATASETS_BUILDER, infer_format, resolve_files

    named = {"train": data.train_files, "validation": data.validation_files, "test": data.test_files}
    files = {split: resolve_files(patterns) for split, patterns in named.items() if patterns}
    fmt = data.format if data.format != "auto" else infer_format([f for group in files.values() for f in group])
    if fmt not in ("jsonl", "csv", "parquet"):
        raise RecipeError(
            f"data.format={fmt!r} (from the file names) is not allowed for labeled data; use jsonl, csv or parquet "
            "files with named columns."
        )
    try:
        loaded = datasets.load_dataset(DATASETS_BUILDER[fmt], data_files=files)
    except Exception as error:  # the builders raise many types; name the files and format
        raise ValueError(f"could not read {files} as format={fmt!r}: {error}") from error
    return dict(loaded)


def load_hub_splits(data: FinetuneDataSection) -> dict:
    from ..data.sources import load_hub_dataset

    wanted = {"train": data.train_split, "validation": data.validation_split, "test": data.test_split}
    return {
        name: load_hub_dataset(data.hub_dataset, data.hub_config, split, streaming=False)
        for name, split in wanted.items()
        if split
    }


def require_columns(splits, columns: list[str]) -> None:
    for name, dataset in splits.items():
        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise RecipeError(
                f"the {name} split has no column {missing[0]!r} (columns: {', '.join(dataset.column_names)}); "
                "set data.text_column / data.text_pair_column / data.label_column / data.tokens_column / "
                "data.tags_column to the names your data uses."
            )


# ------------------------------------------------------------------------------------------------ labels
@dataclass
class LabelScheme:
    """What the labels are: problem type, names in id order, and how a raw label value becomes a model target."""

    problem_type: str
    names: list[str]

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == "regression" else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def encode(self, value):
        if self.problem_type == "regression":
            return float(value)
        if self.problem_type == "multi_label_classification":
            row = [0.0] * len(self.names)
            for item in value:
                row[self.index(item)] = 1.0
            return row
        return self.index(value)

    def index(self, value) -> int:
        if isinstance(value, str):
            if value not in self.names:
                raise RecipeError(f"label {value!r} is not one of the label names {self.names}.")
            return self.names.index(value)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < len(self.names):
            raise RecipeError(
                f"label {value!r} is not allowed; labels must be names or ids in [0, {len(self.names)}) "
                "(a split whose labels are -1, like GLUE's test sets, has no labels to train or score on)."
            )
        return int(value)


def feature_names(feature) -> list[str] | None:
    """ClassLabel names, also inside a Sequence/List feature."""
    inner = getattr(feature, "feature", feature)
    return list(inner.names) if hasattr(inner, "names") else None


def infer_label_scheme(splits, column: str, problem_type: str, given_names: list) -> LabelScheme:
    """Problem type and label names from the label column: floats -> regression, lists -> multi-label, strings or
    ints -> single-label. Names come from a ClassLabel feature, then `data.label_names`, then the values."""
    train = splits["train"]
    values = [v for split in splits.values() for v in split[column]]
    sample = next((v for v in values if v is not None), None)
    if problem_type == "auto":
        if isinstance(sample, (list, tuple)):
            problem_type = "multi_label_classification"
        elif isinstance(sample, float) and not all(float(v).is_integer() for v in values):
            problem_type = "regression"
        else:
            problem_type = "single_label_classification"
    if problem_type == "regression":
        return LabelScheme(problem_type, [column])
    flat = [item for v in values for item in v] if problem_type == "multi_label_classification" else values
    names = feature_names(train.features[column]) or [str(n) for n in given_names]
    if not names:
        if all(isinstance(v, str) for v in flat):
            names = sorted(set(flat))
        else:
            names = [str(i) for i in range(int(max(flat)) + 1)]
    return LabelScheme(problem_type, names)


def infer_tag_scheme(splits, column: str, given_names: list) -> LabelScheme:
    """BIO tag names in id order: a ClassLabel feature's, `data.label_names`, or "O" then the sorted tag strings."""
    names = feature_names(splits["train"].features[column]) or [str(n) for n in given_names]
    if not names:
        tags = {t for split in splits.values() for row in split[column] for t in row}
        if not all(isinstance(t, str) for t in tags):
            raise RecipeError(f"{column} holds integer tags without names; list them in data.label_names (id order).")
        names = ["O"] + sorted(tags - {"O"})
    for name in names:
        if name != "O" and not (name[:2] in ("B-", "I-") and len(name) > 2):
            raise RecipeError(
                f"tag {name!r} is not a BIO tag; allowed: 'O', 'B-<TYPE>', 'I-<TYPE>' (entity-level metrics need BIO)."
            )
    return LabelScheme("single_label_classification", names)


# --------------------------------------------------------------------------------------------- tokenization
def tokenize_classification(splits, tokenizer, scheme: LabelScheme, data: FinetuneDataSection, max_length: int,
                            keep_columns: set[str]):
    def encode(batch):
        pairs = batch[data.text_pair_column] if data.text_pair_column else None
        encoded = tokenizer(batch[data.text_column], pairs, truncation=True, max_length=max_length)
        encoded["labels"] = [scheme.encode(v) for v in batch[data.label_column]]
        return {k: v for k, v in encoded.items() if k in keep_columns}

    return splits.map(encode, batched=True, remove_columns=splits["train"].column_names, desc="Tokenizing")


def tokenize_tagging(splits, tokenizer, scheme: LabelScheme, data: FinetuneDataSection, max_length: int,
                     keep_columns: set[str]):
    """Words -> sub-tokens; the first sub-token of each word carries the word's tag, the rest and the special
    tokens get IGNORE_INDEX (ignored by the loss and the metrics)."""
    if not getattr(tokenizer, "is_fast", False):
        raise RecipeError("token-classification needs a fast tokenizer (word_ids() maps sub-tokens to words).")

    def encode(batch):
        encoded = tokenizer(batch[data.tokens_column], is_split_into_words=True, truncation=True, max_length=max_length)
        labels = []
        for row, tags in enumerate(batch[data.tags_column]):
            previous, targets = None, []
            for word in encoded.word_ids(row):
                targets.append(IGNORE_INDEX if word is None or word == previous else scheme.index(tags[word]))
                previous = word
            labels.append(targets)
        encoded["labels"] = labels
        return {k: v for k, v in encoded.items() if k in keep_columns}

    return splits.map(encode, batched=True, remove_columns=splits["train"].column_names, desc="Tokenizing")


def label_scheme_for(recipe: FinetuneRecipe, splits) -> LabelScheme:
    """The label scheme of the task's columns, after checking that every split has them."""
    data = recipe.data
    if recipe.task == "token-classification":
        require_columns(splits, [data.tokens_column, data.tags_column])
        return infer_tag_scheme(splits, data.tags_column, data.label_names)
    pair = [data.text_pair_column] if data.text_pair_column else []
    require_columns(splits, [data.text_column, data.label_column, *pair])
    return infer_label_scheme(splits, data.label_column, recipe.problem_type, data.label_names)


def tokenize_task(recipe: FinetuneRecipe, splits, tokenizer, scheme: LabelScheme, keep_columns: set[str]):
    """Token ids and label targets for every split, keeping only `keep_columns` (the model's inputs)."""
    tokenize = tokenize_tagging if recipe.task == "token-classification" else tokenize_classification
    return tokenize(splits, tokenizer, scheme, recipe.data, recipe.train.max_length, keep_columns)

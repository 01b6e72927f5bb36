"""The built-in corpus (stdlib docstrings via ast) and the labeled task derived from it."""

from __future__ import annotations

import collections
import math
import re
import sys
import time

import pytest

from hf_pretrain.data import builtin


def test_corpus_size_and_columns(corpus):
    assert corpus.column_names == ["text", "package", "module", "name", "kind"]
    total_bytes = sum(len(text.encode()) for text in corpus["text"])
    if sys.version_info[:2] == (3, 11):
        # The design target: about 6,400 documents / 1.6 MB before the task's test split is held out.
        assert 5_800 <= len(corpus) <= 6_600
        assert 1_400_000 <= total_bytes <= 1_900_000
    else:
        assert len(corpus) > 3_000 and total_bytes > 700_000
    assert set(corpus["kind"]) == {"module", "class", "function"}
    assert all(len(text.split()) >= builtin.MIN_WORDS_PER_DOCUMENT for text in corpus["text"])
    assert len(set(corpus["text"])) == len(corpus), "documents are unique"


def test_corpus_is_deterministic_and_imports_nothing():
    modules_before = set(sys.modules)
    started = time.perf_counter()
    rebuilt = builtin.collect_stdlib_docstrings.__wrapped__()  # bypass the process cache: a real second build
    elapsed = time.perf_counter() - started
    assert rebuilt == builtin.collect_stdlib_docstrings()
    assert elapsed < 20, f"building the corpus took {elapsed:.1f}s; it should take seconds"
    # Parsing with ast never imports: packages like tkinter or turtle would appear in sys.modules otherwise.
    newly_imported = set(sys.modules) - modules_before
    assert not {"tkinter", "turtle", "idlelib", "antigravity", "this"} & newly_imported


def test_corpus_rejects_a_folder_without_python(tmp_path):
    with pytest.raises(ValueError, match="no docstrings"):
        builtin.collect_stdlib_docstrings(str(tmp_path))
    with pytest.raises(ValueError, match="not a directory"):
        builtin.collect_stdlib_docstrings(str(tmp_path / "missing"))


def test_task_classes_are_balanced_with_a_fifth_held_out():
    task = builtin.load_builtin_task()
    names = task["train"].features["label"].names
    assert len(names) == builtin.TASK_NUM_CLASSES
    per_class = collections.Counter(task["train"]["label"]) + collections.Counter(task["test"]["label"])
    assert set(per_class) == set(range(len(names)))
    assert len(set(per_class.values())) == 1, f"classes are balanced exactly: {per_class}"
    test_share = len(task["test"]) / (len(task["train"]) + len(task["test"]))
    assert abs(test_share - builtin.TASK_TEST_FRACTION) < 0.04
    test_counts = collections.Counter(task["test"]["label"])
    assert min(test_counts.values()) >= 0.5 * max(test_counts.values()), f"test split roughly balanced: {test_counts}"
    assert not set(task["train"]["text"]) & set(task["test"]["text"])


def test_task_test_split_is_held_out_of_the_pretraining_corpus(corpus):
    test_texts = set(builtin.load_builtin_task()["test"]["text"])
    assert test_texts == builtin.builtin_task_test_texts()
    assert not test_texts & set(corpus["text"])
    full = builtin.load_builtin_corpus(hold_out_task_test=False)
    assert len(full) == len(corpus) + len(test_texts)
    assert test_texts <= set(full["text"])


def naive_bayes_accuracy(train, test) -> float:
    def words(text):
        return re.findall(r"[a-z]+", text.lower())

    counts = collections.defaultdict(collections.Counter)
    priors = collections.Counter(train["label"])
    for text, label in zip(train["text"], train["label"]):
        counts[label].update(words(text))
    vocabulary = len(set().union(*counts.values()))
    totals = {label: sum(counter.values()) for label, counter in counts.items()}

    def score(label, text):
        return math.log(priors[label]) + sum(
            math.log((counts[label][w] + 1) / (totals[label] + vocabulary)) for w in words(text)
        )

    correct = sum(max(counts, key=lambda label: score(label, text)) == gold for text, gold in zip(test["text"], test["label"]))
    return correct / len(test)


def test_task_is_learnable_but_not_trivial():
    task = builtin.load_builtin_task()
    accuracy = naive_bayes_accuracy(task["train"], task["test"])
    chance = 1 / builtin.TASK_NUM_CLASSES
    # A bag-of-words baseline is far above chance (the signal is there) yet clearly short of perfect.
    assert 4 * chance < accuracy < 0.95, accuracy

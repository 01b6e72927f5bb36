"""The built-in corpus and labeled task: docstrings of the Python standard library, generated offline.

Nothing third-party is committed: every Python installation carries its standard library as source, so the
corpus is rebuilt at run time by parsing those files with `ast` (modules are never imported, so nothing runs).
It is deterministic for a given Python version: files are visited in sorted order, definitions in source order,
and exact duplicates keep their first occurrence. On Python 3.11 it holds about 6,400 documents / 1.7 MB and
builds in a few seconds (then it is cached for the process).

Public API
----------
`load_builtin_corpus(hold_out_task_test=True) -> datasets.Dataset`
    Columns: `text` (the docstring), `package` (top-level stdlib module or package), `module` (dotted module
    path), `name` (dotted path of the documented object), `kind` ("module" | "class" | "function").
    By default the docstrings of the labeled task's TEST split are left out, so a model pretrained on this
    corpus has never seen the texts it is evaluated on after fine-tuning.
`load_builtin_task() -> datasets.DatasetDict`
    Splits "train" and "test", columns `text` and `label` (a `ClassLabel` whose names are package names):
    "which standard-library package does this docstring belong to?".
`builtin_task_test_texts() -> frozenset[str]`
    The texts of the task's test split (what the corpus holds out).

The task: the TASK_NUM_CLASSES largest *packages* (directories such as `email`, `asyncio`) by number of
documents, each capped at the size of the smallest chosen class so classes are exactly balanced; 20% of each
class goes to the test split, chosen by a hash of the text (stable, independent of order). Docstrings often do
not name their package, and related packages share vocabulary (e.g. `asyncio` and `multiprocessing`), so the task
is learnable but not trivial for a bag-of-words baseline, with room for pretraining to matter
(benchmarks/RESULTS.md#unrecorded: TF-IDF + logistic regression). The chosen packages depend on the Python version (e.g. `distutils` is gone in 3.12), which is why the
class names travel with the dataset's `ClassLabel`.
"""

from __future__ import annotations

import ast
import functools
import gc
import hashlib
import os
import sysconfig
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets

# Short docstrings ("Return self.") carry little language; eight words keeps sentences and drops stubs.
MIN_WORDS_PER_DOCUMENT = 8
# Test suites repeat the library's vocabulary with little prose, and site-packages is not the standard library.
SKIPPED_DIRECTORIES = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})

TASK_NUM_CLASSES = 8
TASK_TEST_FRACTION = 0.2

@dataclass(frozen=True)
class Docstring:
    text: str
    package: str
    module: str
    name: str
    kind: str
    is_package_member: bool  # the module lives in a directory package (candidate class for the task)


def stdlib_directory() -> Path:
    """Where this interpreter's standard library sources are (the base install, also from inside a venv)."""
    return Path(sysconfig.get_paths()["stdlib"])


def iter_stdlib_sources(root: Path):
    """Yield (relative path, absolute path) of every .py file under root, in a sorted, reproducible order."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES and not d.startswith("."))
        for file_name in sorted(files):
            if file_name.endswith(".py"):
                path = Path(directory) / file_name
                yield path.relative_to(root), path


def module_name_from_path(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


# Fields that hold statement lists: definitions (the only nodes with docstrings) never hide inside expressions,
# so walking statements alone finds them all while skipping the bulk of the tree.
_STATEMENT_LIST_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")
_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def iter_definitions(node: ast.AST, prefix: str):
    """Yield (definition node, dotted name) for every class/function under node, depth first in source order."""
    for field_name in _STATEMENT_LIST_FIELDS:
        for child in getattr(node, field_name, None) or ():
            if isinstance(child, _DEFINITIONS):
                name = f"{prefix}.{child.name}"
                yield child, name
                yield from iter_definitions(child, name)
            elif isinstance(child, ast.AST):
                yield from iter_definitions(child, prefix)


def docstrings_of_file(relative: Path, path: Path) -> list[Docstring]:
    module = module_name_from_path(relative)
    tree = ast.parse(path.read_bytes(), filename=str(path))
    found = []
    for node, name in [(tree, module), *iter_definitions(tree, module)]:
        text = ast.get_docstring(node, clean=True)
        if not text or len(text.split()) < MIN_WORDS_PER_DOCUMENT:
            continue
        kind = "module" if isinstance(node, ast.Module) else "class" if isinstance(node, ast.ClassDef) else "function"
        found.append(
            Docstring(
                text=text,
                package=relative.parts[0].removesuffix(".py"),
                module=module,
                name=name,
                kind=kind,
                is_package_member=len(relative.parts) > 1,
            )
        )
    return found


@functools.lru_cache(maxsize=2)
def collect_stdlib_docstrings(root: str | None = None) -> tuple[Docstring, ...]:
    """All unique docstrings of the standard library (first occurrence wins), cached for the process."""
    root_path = Path(root) if root else stdlib_directory()
    if not root_path.is_dir():
        raise ValueError(f"stdlib root={str(root_path)!r} is not a directory; pass the folder holding os.py.")
    seen: set[str] = set()
    unique = []
    unparsable = 0
    # ast trees are millions of short-lived objects; with a large heap around (torch, datasets) the cyclic
    # garbage collector would rescan it again and again and triple the build time. Nothing here makes cycles
    # that outlive a file, so collection can wait until the end.
    collector_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for relative, path in iter_stdlib_sources(root_path):
            try:
                docstrings = docstrings_of_file(relative, path)
            except (SyntaxError, ValueError, UnicodeDecodeError):
                unparsable += 1  # e.g. deliberately broken files kept as fixtures; they teach nothing here
                continue
            for docstring in docstrings:
                if docstring.text not in seen:
                    seen.add(docstring.text)
                    unique.append(docstring)
    finally:
        if collector_was_enabled:
            gc.enable()
    if not unique:
        raise ValueError(f"stdlib root={str(root_path)!r} holds no docstrings; is it a Python standard library?")
    if unparsable > 10:
        warnings.warn(f"{unparsable} standard-library files could not be parsed; the built-in corpus is smaller.")
    return tuple(unique)


def stable_fraction(text: str, salt: str) -> float:
    """A number in [0, 1) that depends only on (salt, text): the same on every run, machine and order."""
    digest = hashlib.blake2b(f"{salt}\x00{text}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def task_classes(docstrings: tuple[Docstring, ...]) -> list[str]:
    """The TASK_NUM_CLASSES packages with most documents (ties broken by name), sorted by name."""
    counts = Counter(d.package for d in docstrings if d.is_package_member)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if len(ranked) < TASK_NUM_CLASSES:
        raise ValueError(f"the standard library has {len(ranked)} packages; the task needs {TASK_NUM_CLASSES}.")
    return sorted(name for name, _ in ranked[:TASK_NUM_CLASSES])


@functools.lru_cache(maxsize=2)
def _task_rows(root: str | None = None) -> dict[str, list[tuple[str, str]]]:
    docstrings = collect_stdlib_docstrings(root)
    classes = task_classes(docstrings)
    by_class = {name: [] for name in classes}
    for docstring in docstrings:
        if docstring.is_package_member and docstring.package in by_class:
            by_class[docstring.package].append(docstring.text)
    # Balance: every class keeps the same number of documents, picked by hash rather than by file order so
    # that the kept ones are spread over the whole package.
    per_class = min(len(texts) for texts in by_class.values())
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for name in classes:
        kept = sorted(by_class[name], key=lambda text: stable_fraction(text, "balance"))[:per_class]
        for text in kept:
            split = "test" if stable_fraction(text, "task-split") < TASK_TEST_FRACTION else "train"
            splits[split].append((text, name))
    return splits


def builtin_task_test_texts(root: str | None = None) -> frozenset[str]:
    return frozenset(text for text, _ in _task_rows(root)["test"])


def load_builtin_task(root: str | None = None) -> datasets.DatasetDict:
    """Which standard-library package a docstring belongs to: balanced classes, train/test splits."""
    splits = _task_rows(root)
    class_names = task_classes(collect_stdlib_docstrings(root))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=class_names)})
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"text": [text for text, _ in rows], "label": [class_names.index(name) for _, name in rows]},
                features=features,
            )
            for split, rows in splits.items()
        }
    )


def load_builtin_corpus(hold_out_task_test: bool = True, root: str | None = None) -> datasets.Dataset:
    """The standard-library docstring corpus (see the module docstring for columns and the hold-out)."""
    docstrings = collect_stdlib_docstrings(root)
    held_out = builtin_task_test_texts(root) if hold_out_task_test else frozenset()
    kept = [d for d in docstrings if d.text not in held_out]
    return datasets.Dataset.from_dict(
        {
            "text": [d.text for d in kept],
            "package": [d.package for d in kept],
            "module": [d.module for d in kept],
            "name": [d.name for d in kept],
            "kind": [d.kind for d in kept],
        }
    )

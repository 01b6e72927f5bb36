"""The text pipeline every text objective starts with: sources -> tokenizer -> packed blocks or documents.

`load_text_splits` reads the recipe's data section (files, Hub, built-in) into train/validation texts;
`prepare_tokenizer` loads, reuses or trains the tokenizer (`train_recipe_tokenizer`, which `hf-pretrain tokenizer`
runs too; optionally adding domain words); `prepare_splits` runs a preparation function (block packing or
document encoding) on both splits with rank 0 first, so the other ranks load its cache; `first_blocks` packs the
validation split of a streamed corpus (whose training split every process reads in its own shards:
data/block_stream.py).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ..architectures import stock_architecture
from ..console import shows_progress
from ..recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)


@dataclass
class TextSplits:
    """The recipe's text: train and validation datasets (a `text` column; IterableDatasets when streamed) and the
    training split's cleaning report (for a stream it fills in as the stream is read).

    Per source (one entry, named after its kind, in a one-source recipe; data.sources in a mixture):
    `train_by_source` / `validation_by_source` (name -> texts), `reports_by_source` (name -> {"train": report,
    "validation": report}), `weights` (name -> share of the trained tokens, summing to 1). In a mixture `train` and
    `validation` hold every source's documents once, interleaved by weight (what the tokenizer reads), and
    `train_report` summarizes the sources' reports; packed training mixes per block (data/mixing.py)."""

    train: datasets.Dataset | datasets.IterableDataset
    validation: datasets.Dataset | datasets.IterableDataset
    train_report: object
    train_by_source: dict = field(default_factory=dict)
    validation_by_source: dict = field(default_factory=dict)
    reports_by_source: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)

    @property
    def is_mixture(self) -> bool:
        return len(self.weights) > 1


def load_text_splits(recipe: Recipe) -> TextSplits:
    """The recipe's text, from its data section (files, Hub, built-in; or each source of data.sources), cleaned,
    with a validation split per source."""
    from ..recipe.data import source_sections
    from .mixing import SourceReports, mix_documents
    from .mixture import normalized_weights
    from .sources import load_source_texts

    data, mixture = recipe.data, bool(recipe.data.sources)
    sections = source_sections(data)
    loaded = {}
    for index, section in enumerate(sections):
        where = f"data.sources[{index}] ({section.name!r})" if mixture else ""
        try:
            loaded[section.name] = load_source_texts(section, data, recipe.train.seed)
        except ValueError as error:
            if not mixture:
                raise
            raise ValueError(f"{where}: {error}") from error
        if data.streaming:  # the stream's readers count what they clean and pack (training/streamed.py)
            logger.info(f"text{' of source ' + section.name if mixture else ''}: streamed; what its readers clean and "
                        "pack is reported at each eval and checkpoint")
        else:
            logger.info(f"text{' of source ' + section.name if mixture else ''}: {loaded[section.name].summary()}")
        if loaded[section.name].validation is None:
            raise RecipeError(
                f"no validation text{' for ' + where if mixture else ''}: set data.validation_fraction > 0 or "
                f"data.{'sources[i].' if mixture else ''}validation_files (eval needs it)."
            )
    shares = dict(zip(loaded, map(float, normalized_weights([section.weight for section in sections]))))
    trains = {name: texts.train for name, texts in loaded.items()}
    validations = {name: texts.validation for name, texts in loaded.items()}
    reports = {name: texts.reports for name, texts in loaded.items()}
    if mixture:
        train = mix_documents(trains.values(), shares.values(), recipe.train.seed)
        validation = mix_documents(validations.values(), shares.values(), recipe.train.seed)
        train_report = SourceReports({name: report["train"] for name, report in reports.items()})
    else:
        (train,), (validation,), (train_report,) = trains.values(), validations.values(), [
            report["train"] for report in reports.values()]
    return TextSplits(train, validation, train_report, trains, validations, reports, shares)


# A streamed corpus may be endless: the tokenizer learns from its first documents.
STREAMING_TOKENIZER_DOCUMENTS = 200_000


def texts_for_tokenizer(train_texts, limit: int | None) -> list[str]:
    if isinstance(train_texts, datasets.IterableDataset):
        limit = limit or STREAMING_TOKENIZER_DOCUMENTS
        return [row["text"] for row in itertools.islice(train_texts, limit)]
    texts = train_texts["text"]
    return texts[:limit] if limit else texts


def first_blocks(texts, tokenizer, block_size: int, with_word_starts: bool, count: int) -> list[dict]:
    """The first `count` packed blocks of a stream, in memory (a fixed validation set)."""
    from .streaming import pack_stream

    blocks = list(itertools.islice(pack_stream(texts, tokenizer, block_size, with_word_starts=with_word_starts), count))
    logger.info(f"validation: the first {len(blocks):,} packed blocks of the validation stream")
    return blocks


def prepare_splits(prepare, splits: TextSplits, tokenizer, accelerator, **settings):
    """Run a data-preparation function (packing or short documents) on both splits and report them in one line;
    rank 0 goes first and caches, the other ranks then load the cache. Returns (train, validation) datasets."""
    with accelerator.main_process_first():
        prepared = {
            split: prepare(texts, tokenizer, **settings)
            for split, texts in (("train", splits.train), ("validation", splits.validation))
        }
    logger.info("; ".join(f"{split}: {result.report.summary()}" for split, result in prepared.items()))
    return prepared["train"].dataset, prepared["validation"].dataset


def prepare_tokenizer(recipe: Recipe, train_texts, accelerator, run_dir: Path, layout: str):
    """Load the recipe's tokenizer, reuse the run's own (on resume), or train one on the training text (of the
    objective's special-token `layout`, hf_pretrain/data/tokenizer.py)."""
    from .tokenizer import load_tokenizer

    section = recipe.tokenizer
    saved = run_dir / "tokenizer"
    if section.path and section.add_tokens:
        with accelerator.main_process_first():
            if accelerator.is_main_process and not (saved / "tokenizer.json").exists():
                add_domain_words(load_tokenizer(section.path), train_texts, section, saved)
        return load_tokenizer(saved)
    if section.path:
        return load_tokenizer(section.path)
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (saved / "tokenizer.json").exists():
            train_recipe_tokenizer(recipe, train_texts, layout).save_pretrained(saved)
    return load_tokenizer(saved)


def train_recipe_tokenizer(recipe: Recipe, train_texts, layout: str):
    """The tokenizer the recipe's tokenizer section asks for, trained on (the first documents of) the training
    text: what a run trains before its first step and what `hf-pretrain tokenizer` writes. A stock architecture's
    tokenizer names its special tokens as that family does (RoBERTa's <s> and </s>, BERT's [CLS] and [SEP])."""
    from tqdm.auto import tqdm

    from .tokenizer import train_tokenizer

    section = recipe.tokenizer
    texts = texts_for_tokenizer(train_texts, section.max_train_documents)
    stock = stock_architecture(recipe.model.architecture)  # its special tokens as the family names them
    started = time.perf_counter()
    with tqdm(total=len(texts), desc="tokenizer: reading", unit=" documents", leave=False,
              disable=not shows_progress()) as bar:
        tokenizer = train_tokenizer(
            texts,
            kind=section.kind,
            vocab_size=section.vocab_size,
            lowercase=section.lowercase,
            layout=layout,
            special_tokens=stock.special_tokens if stock else None,
            model_max_length=recipe.data.block_size,
            progress=bar.update,
        )
    logger.info(f"trained a {section.kind} tokenizer of {len(tokenizer):,} tokens on {len(texts):,} documents "
                f"({time.perf_counter() - started:.1f} s)")
    return tokenizer


DOMAIN_WORDS_FILE = "domain_words.json"  # in the run's tokenizer folder: the added words and their old pieces


def add_domain_words(tokenizer, train_texts, section, saved: Path) -> None:
    """tokenizer.add_tokens: add the corpus's most frequent multi-piece words to a copy of the tokenizer, saved in
    the run folder (a resume reuses it), with the pieces each word replaces (init_domain_rows reads them)."""
    from tokenizers import AddedToken

    from .tokenizer import find_domain_words

    texts = texts_for_tokenizer(train_texts, section.max_train_documents)
    words = find_domain_words(tokenizer, texts, section.add_tokens)
    # single_word: matched only as a whole word; lstrip: the word takes the space before it, so byte-level BPE
    # does not leave a lone space token in front of it.
    tokenizer.add_tokens([AddedToken(word.text, single_word=True, lstrip=True) for word in words])
    tokenizer.save_pretrained(saved)
    records = [{"word": w.text, "id": tokenizer.convert_tokens_to_ids(w.text), "pieces": list(w.pieces),
                "count": w.count} for w in words]
    (saved / DOMAIN_WORDS_FILE).write_text(json.dumps(records, indent=1))
    shown = ", ".join(f"{w.text} ({len(w.pieces)} pieces, {w.count}x)" for w in words[:10])
    logger.info(f"tokenizer.add_tokens: added {len(words)} domain words to the vocabulary: {shown}"
                + (" ..." if len(words) > 10 else ""))

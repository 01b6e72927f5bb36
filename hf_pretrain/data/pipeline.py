"""The text pipeline every text objective starts with: sources -> tokenizer -> packed blocks or documents.

`load_text_splits` reads the recipe's data section (files, Hub, built-in) into train/validation texts;
`prepare_tokenizer` loads, reuses or trains the tokenizer (`train_recipe_tokenizer`, which `hf-pretrain tokenizer`
runs too; optionally adding domain words); `prepare_splits` runs a preparation function (block packing or
document encoding) on both splits with rank 0 first, so the other ranks load its cache; `StreamedBlocks` /
`first_blocks` do the same for a corpus streamed from disk or the Hub.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch

from ..architectures import stock_architecture
from ..console import shows_progress
from ..recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)


@dataclass
class TextSplits:
    """The recipe's text: train and validation datasets (a `text` column; IterableDatasets when streamed) and the
    training split's cleaning report (for a stream it fills in as the stream is read)."""

    train: datasets.Dataset | datasets.IterableDataset
    validation: datasets.Dataset | datasets.IterableDataset
    train_report: object


def load_text_splits(recipe: Recipe) -> TextSplits:
    """The recipe's text, from its data section (files, Hub, built-in), cleaned, with a validation split."""
    from .sources import load_text_sources

    data = recipe.data
    validation_files = data.validation_files if data.source == "files" else ()
    sources = load_text_sources(
        train_files=data.train_files if data.source == "files" else (),
        validation_files=validation_files,
        format=data.format,
        text_column=data.text_column,
        hub_dataset=data.hub_dataset if data.source == "hub" else None,
        hub_config=data.hub_config,
        hub_split=data.hub_split,
        builtin=data.source == "builtin",
        validation_fraction=0.0 if validation_files else data.validation_fraction,
        seed=recipe.train.seed,
        max_documents=data.max_documents,
        num_proc=data.num_proc,
        streaming=data.streaming,
    )
    if data.streaming:  # a stream's cleaning report fills in as it is read: each pass over it reports it
        logger.info("text: streamed; cleaning and packing are reported after each pass over the stream")
    else:
        logger.info(f"text: {sources.summary()}")
    if sources.validation is None:
        raise RecipeError(
            "no validation text: set data.validation_fraction > 0 or data.validation_files (eval needs it)."
        )
    return TextSplits(sources.train, sources.validation, sources.reports["train"])


# A streamed corpus may be endless: the tokenizer learns from its first documents.
STREAMING_TOKENIZER_DOCUMENTS = 200_000


def texts_for_tokenizer(train_texts, limit: int | None) -> list[str]:
    if isinstance(train_texts, datasets.IterableDataset):
        limit = limit or STREAMING_TOKENIZER_DOCUMENTS
        return [row["text"] for row in itertools.islice(train_texts, limit)]
    texts = train_texts["text"]
    return texts[:limit] if limit else texts


class StreamedBlocks(torch.utils.data.IterableDataset):
    """Packed blocks of a text stream, for corpora larger than memory (the DataLoader iterates it; Accelerate's
    dispatcher reads it on the main process and hands each rank its slice of every global batch, so ranks never
    see the same block). Each pass over the stream is one epoch; the masks still change per epoch. A pass ends
    with its cleaning and packing reports (per DataLoader worker: each counts the documents it read).

    DataLoader workers: a `datasets.IterableDataset` read inside worker w of k yields only that worker's shards
    (files) of the corpus, so each worker packs its own documents and block n of worker w gets the noise key
    n * k + w: every block once, keys unique across workers, the same blocks and keys on every pass (exact
    resume, for a fixed train.num_workers). Any other iterable of texts is read whole by every worker, which keeps
    every k-th block under its own global key."""

    def __init__(self, texts, tokenizer, block_size: int, with_word_starts: bool, cleaning_report=None):
        from .streaming import pack_stream

        super().__init__()
        self.shards_per_worker = isinstance(texts, datasets.IterableDataset)
        self.blocks = pack_stream(texts, tokenizer, block_size, with_word_starts=with_word_starts)
        self.cleaning_report = cleaning_report

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        if worker is None:
            yield from self.blocks
        elif self.shards_per_worker:
            for block in self.blocks:
                yield {**block, "example_index": block["example_index"] * worker.num_workers + worker.id}
        else:
            for block in self.blocks:
                if int(block["example_index"]) % worker.num_workers == worker.id:
                    yield block
        reader = f" (DataLoader worker {worker.id + 1} of {worker.num_workers})" if worker is not None else ""
        cleaning = f"cleaning: {self.cleaning_report.summary()}; " if self.cleaning_report is not None else ""
        logger.info(f"a pass over the stream ended{reader}: {cleaning}packing: {self.blocks.report.summary()}")


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

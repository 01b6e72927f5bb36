"""Corpora larger than memory: the recipe's streamed sources, and packing any stream of texts.

A streamed training corpus is read by many readers at once, every process and DataLoader worker its own shards,
shuffled and resumable (data/block_stream.py, data/stream_state.py); this module says what it reads. A single
stream of texts (a validation split, the first documents for a tokenizer) is packed by `pack_stream`.

Public API
----------
`stream_sources(recipe) -> list[TextSource]`: the recipe's streamed sources (files, a Hub dataset's data files, or
    builtin; each source of data.sources in a mixture). Refuses max_documents of files (no "first N" across readers).
`held_out_fractions(recipe) -> list[float]`: per source, the share of its documents the training readers leave to
    validation (0 for a source with validation_files or a Hub dataset with its own validation split).
`plan_recipe_stream(recipe, num_processes, rows="blocks") -> StreamPlan`: those sources cut into shards for
    num_processes x max(train.num_workers, 1) readers (refused, before any work, when too few); rows="documents"
    reads one truncated document per row (the denoising autoencoder) instead of packed blocks.
`pack_stream(texts, tokenizer, block_size, text_column="text", with_word_starts=False, batch_size=1000)
        -> PackedStream`
    `texts` is any iterable of strings or of row dicts (e.g. a streaming `datasets.IterableDataset`); the result
    is an iterable of row dicts (the columns of `pack_dataset`'s rows, numpy arrays) with a live `.report`.
    Memory holds one batch of documents plus one partial block. Each batch is encoded by the tokenizers
    library's own thread pool, which uses every core. Same ids, positions and word starts as `pack_dataset`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .block_stream import StreamPlan, plan_stream
from .encoding import TOKENIZE_BATCH_SIZE, DocumentEncoder, minimum_document_tokens
from .mixture import TextSource
from .packing import BlockPacker, PackingReport
from .tokenizer import iter_text_batches


def stream_sources(recipe) -> list[TextSource]:
    """The recipe's training text as stream sources, one per source of data.sources (or the one source its own
    keys name), with their normalized weights (module docstring)."""
    from ..recipe import RecipeError
    from ..recipe.data import source_sections
    from .sources import recipe_text_sources

    for index, section in enumerate(source_sections(recipe.data)):
        where = f"data.sources[{index}]." if recipe.data.sources else "data."
        if section.source == "files" and section.max_documents is not None:
            raise RecipeError(
                f"{where}max_documents={section.max_documents} with data.streaming=true and source='files': a stream "
                "read by every process and DataLoader worker at once has no \"first N documents\". Set it to null "
                "(pass fewer files to read less), or data.streaming=false."
            )
    return recipe_text_sources(recipe)


def held_out_fractions(recipe) -> list[float]:
    """Per source, the share of its documents held out for validation (by the hash rule of sources.in_validation):
    data.validation_fraction, or 0 for a source whose validation_files hold its eval text."""
    from ..recipe.data import source_sections

    from .sources import HubSource, choose_validation_split

    def own_validation(section) -> bool:  # validation_files, or a Hub dataset's own validation split
        if section.source == "files":
            return bool(section.validation_files)
        if section.source == "hub":
            hub = HubSource(section.hub_dataset, section.hub_config, section.hub_split, section.hub_revision,
                            section.hub_data_files or None)
            return choose_validation_split(hub, section.hub_validation_split) is not None
        return False

    fraction = recipe.data.validation_fraction
    return [0.0 if own_validation(section) else fraction for section in source_sections(recipe.data)]


def plan_recipe_stream(recipe, num_processes: int, rows: str = "blocks") -> StreamPlan:
    """The recipe's sources cut into shards for its readers (refused before any work when there are too few)."""
    data, train = recipe.data, recipe.train
    return plan_stream(stream_sources(recipe), num_processes, train.num_workers, data.block_size, train.batch_size,
                       train.seed, data.shuffle_buffer, held_out_fractions(recipe), rows=rows)


class PackedStream:
    """Iterable of packed row dicts (numpy arrays) from a stream of texts; `.report` is updated as it goes and
    final once iteration ends. Each new iteration starts over from the texts."""

    def __init__(self, texts: Iterable, tokenizer, block_size: int, text_column: str = "text",
                 with_word_starts: bool = False, batch_size: int = TOKENIZE_BATCH_SIZE):
        if not isinstance(block_size, int) or block_size < 2:
            raise ValueError(f"block_size={block_size!r}; allowed: an integer >= 2.")
        if isinstance(texts, str):
            raise ValueError("texts is a single string; pass an iterable of documents.")
        self.texts = texts
        self.encoder = DocumentEncoder(tokenizer, text_column, with_word_starts)
        self.block_size = block_size
        self.text_column = text_column
        self.batch_size = batch_size
        self.report = PackingReport(block_size=block_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        packer = BlockPacker(self.block_size, min_document_tokens=minimum_document_tokens(self.encoder))
        self.report = packer.report
        index = 0
        for texts in iter_text_batches(self.texts, self.text_column, self.batch_size):
            encoded = self.encoder.encode(texts)
            lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), np.int64, len(texts))
            ids = np.fromiter((i for ids in encoded["input_ids"] for i in ids), np.int32, int(lengths.sum()))
            word_starts = None
            if self.encoder.with_word_starts:
                word_starts = np.fromiter((f for flags in encoded["word_starts"] for f in flags), np.int8, len(ids))
            blocks = packer.add(ids, lengths, word_starts)
            for row in range(len(blocks.input_ids)):
                item = {"input_ids": blocks.input_ids[row], "position_ids": blocks.position_ids[row],
                        "example_index": np.int64(index)}
                if blocks.word_starts is not None:
                    item["word_starts"] = blocks.word_starts[row]
                index += 1
                yield item
        packer.finish()


def pack_stream(texts: Iterable, tokenizer, block_size: int, text_column: str = "text",
                with_word_starts: bool = False, batch_size: int = TOKENIZE_BATCH_SIZE) -> PackedStream:
    """Pack a stream of texts larger than memory (see module doc)."""
    return PackedStream(texts, tokenizer, block_size, text_column, with_word_starts, batch_size)

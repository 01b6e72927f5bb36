"""Pack a stream of texts larger than memory into the same blocks as `packing.pack_dataset`.

Public API
----------
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

from .encoding import TOKENIZE_BATCH_SIZE, DocumentEncoder, minimum_document_tokens
from .packing import BlockPacker, PackingReport
from .tokenizer import batches_of_text

def iter_text_batches(texts: Iterable, text_column: str, batch_size: int) -> Iterator[list[str]]:
    """Lists of `batch_size` strings from an iterable of strings or of dicts holding one under `text_column`."""
    return batches_of_text((item[text_column] if isinstance(item, dict) else item for item in texts), batch_size)


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

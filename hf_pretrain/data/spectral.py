"""Spectral token embeddings: a few seconds of linear algebra on the corpus before gradient pretraining starts.

Why: with a few CPU-minutes of budget, a masked LM sees about a million tokens and its token embeddings end
up close to where they started: mean-pooled, they classify the built-in task no better than a random encoder's.
Which words occur in the same documents is what separates a domain's topics, and that statistic can be read
off the corpus in closed form: latent semantic analysis (Deerwester et al. 1990) factorises the TF-IDF
document-token matrix with a truncated SVD, and the token loadings become the initial embedding rows. Word
embeddings learned by prediction are themselves implicit factorisations of such co-occurrence matrices (Levy
and Goldberg 2014, "Neural Word Embedding as Implicit Matrix Factorization"), so this starts the encoder where
gradient training would go slowly, and the masked LM trains on top. With them, 3 minutes of mlm-tiny fine-tune
better than the same architecture from scratch (benchmarks/RESULTS.md#quickstart). With a recipe that keeps these
rows (a slow embedding lr) and a cheap stack trained by Muon, the MLM steps add to the start: +1.0 points after 3
and +2.4 after 10 one-core minutes on the built-in task (benchmarks/RESULTS.md#levers); with the recipe before that,
they only kept it.

Nothing here is learned by gradient; the factorisation is a randomized low-rank SVD (Halko et al. 2011) of
a sparse matrix, so it scales to corpora whose dense matrix would not fit in memory. The result is a pure
function of the token ids and the seed.

Public API
----------
`spectral_token_embeddings(segments, vocab_size, dim, ignore_ids=(), eigenvalue_power=1.0, seed=0)`
    -> (embeddings (vocab_size, dim) float32, seen (vocab_size,) bool, documents): one row per token id, zero for
    ids that never occur (or are ignored); `seen` marks the rows that carry corpus statistics.
`segments_of_packed_rows(input_ids, position_ids)`: the documents (pieces) of packed rows, cut where the
    position ids restart.
`initialize_token_embeddings(embedding, segments, ignore_ids=(), seed=0, max_segments=None)`: writes scaled
    spectral rows into an `nn.Embedding` (rows of unseen tokens keep their random init); returns a small report.
`smooth_inverse_frequency_weights(segments, vocab_size)`: per-token weights a / (a + p(token)) for a weighted
    mean of token states (the denoising autoencoder's `sentence_pooling="weighted_mean"`).
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

# Subspace iterations of the randomized SVD: 4 brings the leading singular vectors of a TF-IDF matrix to
# agree with a full SVD to ~1e-3 (Halko et al. recommend 1-4 for slowly decaying spectra); each is two sparse
# matrix products, a fraction of a second on a 2 MB corpus.
SVD_ITERATIONS = 4
# Extra columns of the random test matrix beyond the rank asked for (Halko et al.'s "oversampling", p = 5..10).
SVD_OVERSAMPLING = 10


def segments_of_packed_rows(input_ids, position_ids) -> Iterable[np.ndarray]:
    """Yield each document piece of packed rows: a new piece starts wherever the position ids restart at 0.
    input_ids, position_ids: (rows, block_size) arrays (or lists of lists)."""
    for ids, positions in zip(input_ids, position_ids):
        ids, positions = np.asarray(ids), np.asarray(positions)
        starts = np.flatnonzero(positions == 0)
        if len(starts) == 0 or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        yield from np.split(ids, starts[1:])


def tfidf_matrix(segments: Iterable[np.ndarray], vocab_size: int, ignore_ids=()) -> tuple[torch.Tensor, np.ndarray]:
    """Sparse (segments, vocab) TF-IDF matrix with sublinear term frequency (1 + log count), smoothed idf
    (log((1 + n) / (1 + df)) + 1) and unit-length rows (the weighting of Salton and Buckley 1988 that sklearn's
    TfidfVectorizer(sublinear_tf=True) also uses). Returns (matrix, document frequency per token id)."""
    ignore = np.zeros(vocab_size, dtype=bool)
    ignore[[i for i in ignore_ids if i is not None and 0 <= i < vocab_size]] = True
    rows, columns = [], []
    count = 0
    for segment in segments:
        ids = np.asarray(segment, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < vocab_size)]
        ids = ids[~ignore[ids]]
        if len(ids) == 0:
            continue
        rows.append(np.full(len(ids), count, dtype=np.int64))
        columns.append(ids)
        count += 1
    if count == 0:
        raise ValueError("spectral embeddings need at least one document with ordinary (non-special) tokens.")
    indices = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(columns)]))
    counts = torch.sparse_coo_tensor(
        indices, torch.ones(indices.shape[1]), (count, vocab_size), check_invariants=True
    ).coalesce()
    row, column = counts.indices()
    document_frequency = np.bincount(column.numpy(), minlength=vocab_size)
    idf = torch.from_numpy(np.log((1 + count) / (1 + document_frequency)) + 1).float()
    values = (1 + torch.log(counts.values())) * idf[column]
    row_norm = torch.zeros(count).index_add_(0, row, values * values).sqrt()
    values = values / row_norm[row]
    matrix = torch.sparse_coo_tensor(
        counts.indices(), values, (count, vocab_size), is_coalesced=True, check_invariants=False
    )
    return matrix, document_frequency


def spectral_token_embeddings(segments: Iterable[np.ndarray], vocab_size: int, dim: int, ignore_ids=(),
                              eigenvalue_power: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, int]:
    """Token loadings of a rank-`dim` truncated SVD of the TF-IDF matrix, V * S**eigenvalue_power: (vocab, dim).
    Returns (embeddings, seen: bool per token id, number of documents in the matrix).

    eigenvalue_power 1 is classic LSA (token coordinates scaled by the singular values, so the leading topics
    weigh most); 0.5 splits them evenly between documents and tokens, 0 whitens (Levy, Goldberg and Dagan 2015
    prefer 0 or 0.5 for word similarity). 1 is the default: for classifying the built-in task's documents with a
    linear probe on mean-pooled embeddings it did best of the three (benchmarks/RESULTS.md#unrecorded). Rows of
    tokens that never occur are zero. When the corpus has fewer documents or token types than `dim`, the trailing
    columns are zero."""
    matrix, document_frequency = tfidf_matrix(segments, vocab_size, ignore_ids)
    seen = document_frequency > 0
    rank = min(dim, *matrix.shape)
    _, singular_values, token_vectors = randomized_svd(matrix, rank, seed)  # (rank,), (vocab, rank)
    embeddings = torch.zeros(vocab_size, dim)
    embeddings[:, :rank] = token_vectors * singular_values.clamp_min(0) ** eigenvalue_power
    embeddings[~torch.from_numpy(seen)] = 0.0
    return embeddings, seen, matrix.shape[0]


def randomized_svd(matrix: torch.Tensor, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank-`rank` SVD (U, S, V) of a sparse matrix by randomized subspace iteration (Halko, Martinsson and Tropp
    2011, algorithms 4.4 + 5.1). Written out instead of calling torch.svd_lowrank, which spends most of its time in
    the final dense SVD (benchmarks/RESULTS.md#unrecorded): both orientations of the matrix are kept in CSR form, so each product is one
    sparse-dense matmul, and the final small SVD goes through a Gram matrix. Seeded: same inputs, same vectors."""
    rows, columns = matrix.shape
    width = min(rank + SVD_OVERSAMPLING, rows, columns)
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta": matmul is all we use of it
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        forward = matrix.to_sparse_csr()  # (rows, columns)
        backward = matrix.t().coalesce().to_sparse_csr()  # (columns, rows)
    generator = torch.Generator().manual_seed(seed)
    test_matrix = torch.randn(columns, width, generator=generator)
    basis = torch.linalg.qr(forward @ test_matrix).Q  # (rows, width): spans A's leading left singular vectors
    for _ in range(SVD_ITERATIONS):  # power iterations, re-orthonormalised each half step for stability
        basis = torch.linalg.qr(forward @ torch.linalg.qr(backward @ basis).Q).Q
    small = (backward @ basis).t().double()  # (width, columns) = basis^T A
    # SVD of the wide small matrix through the eigendecomposition of its (width, width) Gram matrix: LAPACK's
    # gesdd on the wide matrix itself is slow, eigh on the small Gram matrix is not (benchmarks/RESULTS.md#unrecorded;
    # float64 keeps the squared spectrum accurate).
    eigenvalues, left = torch.linalg.eigh(small @ small.t())  # ascending
    order = eigenvalues.flip(0).clamp_min(0)[:rank]
    left = left.flip(1)[:, :rank]
    singular_values = order.sqrt()
    right = (small.t() @ left) / singular_values.clamp_min(1e-12)  # (columns, rank)
    return (basis.double() @ left).float(), singular_values.float(), right.float()


@dataclass
class SpectralReport:
    segments: int
    tokens_initialized: int
    vocab_size: int
    dim: int
    seconds: float

    def summary(self) -> str:
        return (
            f"spectral token embeddings: TF-IDF SVD of {self.segments:,} documents -> {self.tokens_initialized:,} "
            f"of {self.vocab_size:,} rows initialised ({self.dim} dims, {self.seconds:.1f} s)"
        )


def initialize_token_embeddings(embedding: torch.nn.Embedding, segments: Iterable[np.ndarray], ignore_ids=(),
                                seed: int = 0, max_segments: int | None = None,
                                eigenvalue_power: float = 1.0) -> SpectralReport:
    """Overwrite the rows of the tokens that occur in `segments` with spectral embeddings, rescaled so their
    standard deviation matches the rows they replace (the model's own init scale: the norms, attention and
    optimizer settings were chosen for it). Rows of tokens that never occur keep their random init."""
    started = time.perf_counter()
    weight = embedding.weight
    vocab_size, dim = weight.shape
    if max_segments:
        segments = itertools.islice(segments, max_segments)
    spectral, seen, documents = spectral_token_embeddings(segments, vocab_size, dim, ignore_ids, eigenvalue_power, seed)
    seen_rows = torch.from_numpy(seen)
    with torch.no_grad():
        target_std = weight[seen_rows].float().std()
        values = spectral[seen_rows]
        scale = target_std / values.std().clamp_min(1e-12)
        weight[seen_rows] = (values * scale).to(weight.dtype)
    return SpectralReport(documents, int(seen.sum()), vocab_size, dim, time.perf_counter() - started)


# Arora, Liang and Ma (2017) weigh a token by a / (a + p(token)) and report a in 1e-4..1e-3 working best across
# their tasks; with 1e-3 a token making up 0.1% of the corpus counts half as much as a rare one.
SIF_SMOOTHING = 1e-3


def smooth_inverse_frequency_weights(segments: Iterable[np.ndarray], vocab_size: int,
                                     smoothing: float = SIF_SMOOTHING) -> torch.Tensor:
    """Per-token pooling weights (vocab_size,) float32: a / (a + p(token)) with p the token's share of all tokens
    in `segments` (token-id arrays). Frequent tokens (punctuation, "the", [CLS]) count little in a weighted mean,
    rare content tokens fully; ids that never occur get weight 1."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for segment in segments:
        counts += np.bincount(np.asarray(segment, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    shares = counts / max(int(counts.sum()), 1)
    return torch.from_numpy(smoothing / (smoothing + shares)).float()


def default_ignore_ids(tokenizer) -> list[int]:
    """Special tokens ([CLS], [SEP], [PAD], [MASK], ...): they occur in every document or none and carry no topic."""
    return sorted(set(tokenizer.all_special_ids))


__all__ = [
    "SpectralReport",
    "default_ignore_ids",
    "initialize_token_embeddings",
    "segments_of_packed_rows",
    "smooth_inverse_frequency_weights",
    "spectral_token_embeddings",
    "tfidf_matrix",
]

"""Spectral token embeddings: the TF-IDF matrix matches scikit-learn's, the randomized SVD matches a full SVD,
tokens that share documents end up close, and the embedding rows are written at the model's own scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_pretrain.data.spectral import (
    initialize_token_embeddings,
    randomized_svd,
    segments_of_packed_rows,
    spectral_token_embeddings,
    tfidf_matrix,
)


def topic_corpus(documents_per_topic=60, seed=0):
    """Two topics with disjoint vocabularies (ids 10-29 and 30-49) plus shared filler ids 50-59 everywhere."""
    rng = np.random.default_rng(seed)
    documents, topics = [], []
    for topic, (low, high) in enumerate(((10, 30), (30, 50))):
        for _ in range(documents_per_topic):
            words = rng.integers(low, high, size=rng.integers(5, 15))
            filler = rng.integers(50, 60, size=5)
            documents.append(rng.permutation(np.concatenate([words, filler])))
            topics.append(topic)
    return documents, topics


def test_tfidf_matrix_matches_scikit_learn_on_token_ids():
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    documents, _ = topic_corpus(10)
    matrix, document_frequency = tfidf_matrix(documents, vocab_size=64, ignore_ids=[0, 1])
    vectorizer = sklearn_text.TfidfVectorizer(
        sublinear_tf=True, lowercase=False, analyzer=lambda ids: [int(i) for i in ids], vocabulary=list(range(64))
    )
    expected = vectorizer.fit_transform(documents).toarray()
    np.testing.assert_allclose(matrix.to_dense().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert document_frequency[10:60].sum() > 0 and document_frequency[:10].sum() == 0


def test_ignored_and_out_of_range_ids_do_not_enter_the_matrix():
    matrix, document_frequency = tfidf_matrix([np.array([1, 2, 2, 3, 99, -100])], vocab_size=8, ignore_ids=[1, None])
    dense = matrix.to_dense()[0]
    assert dense[1] == 0 and dense[2] > dense[3] > 0  # 2 occurs twice: 1 + log 2 > 1
    assert document_frequency.tolist() == [0, 0, 1, 1, 0, 0, 0, 0]


def test_a_corpus_of_special_tokens_only_is_an_error():
    with pytest.raises(ValueError, match="at least one document"):
        tfidf_matrix([np.array([0, 1]), np.array([1])], vocab_size=4, ignore_ids=[0, 1])


def test_randomized_svd_matches_the_full_svd():
    generator = torch.Generator().manual_seed(0)
    # A matrix with a decaying spectrum (as text's is), stored sparse.
    dense = (torch.randn(120, 8, generator=generator) * torch.tensor([9.0, 7, 5, 3, 2, 1, 0.5, 0.2])) @ torch.randn(
        8, 90, generator=generator
    )
    dense = dense + 0.01 * torch.randn(120, 90, generator=generator)
    left, singular_values, right = randomized_svd(dense.to_sparse(), rank=5, seed=0)
    expected = torch.linalg.svdvals(dense)[:5]
    torch.testing.assert_close(singular_values, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(left @ torch.diag(singular_values) @ right.t(),
                               torch.linalg.svd(dense).U[:, :5] @ torch.diag(expected) @ torch.linalg.svd(dense).Vh[:5],
                               rtol=1e-3, atol=1e-3)
    again = randomized_svd(dense.to_sparse(), rank=5, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again, (left, singular_values, right)))


def test_tokens_of_the_same_topic_get_similar_rows():
    documents, _ = topic_corpus()
    embeddings, seen, count = spectral_token_embeddings(documents, vocab_size=64, dim=8, ignore_ids=[50, 51])
    assert count == len(documents)
    assert seen[10:50].all() and not seen[:10].any() and not seen[50:52].any() and seen[52:60].all()
    assert embeddings[~torch.from_numpy(seen)].abs().sum() == 0
    unit = torch.nn.functional.normalize(embeddings[10:50], dim=1)
    cosine = unit @ unit.t()
    same_topic = torch.cat([cosine[:20, :20].flatten(), cosine[20:, 20:].flatten()]).mean()
    other_topic = cosine[:20, 20:].mean()
    assert same_topic > 0.5 and other_topic < 0.2, (same_topic, other_topic)


def test_more_dimensions_than_the_corpus_has_leaves_trailing_columns_zero():
    embeddings, seen, _ = spectral_token_embeddings([np.array([3, 4]), np.array([4, 5])], vocab_size=8, dim=6)
    assert embeddings.shape == (8, 6)
    assert embeddings[:, 2:].abs().sum() == 0 and embeddings[3:6, :2].abs().sum() > 0


def test_segments_restart_where_the_position_ids_restart():
    input_ids = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    position_ids = [[0, 1, 2, 0, 1, 2], [3, 4, 0, 1, 2, 3]]  # the second row continues a split document
    pieces = [segment.tolist() for segment in segments_of_packed_rows(input_ids, position_ids)]
    assert pieces == [[5, 6, 7], [8, 9, 10], [11, 12], [13, 14, 15, 16]]


def test_initialization_writes_seen_rows_at_the_models_scale_and_keeps_the_rest():
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(64, 8)
    torch.nn.init.normal_(embedding.weight, std=0.02)
    before = embedding.weight.detach().clone()
    documents, _ = topic_corpus()
    report = initialize_token_embeddings(embedding, documents, ignore_ids=[50], seed=3, max_segments=100)
    after = embedding.weight.detach()
    assert report.segments == 100 and report.tokens_initialized == 49  # ids 10-59 minus the ignored 50
    seen = torch.zeros(64, dtype=torch.bool)
    seen[10:60] = True
    seen[50] = False
    assert torch.equal(after[~seen], before[~seen])
    assert not torch.allclose(after[seen], before[seen])
    assert after[seen].std().item() == pytest.approx(before[seen].std().item(), rel=1e-4)
    assert "100 documents" in report.summary() and "49 of 64 rows" in report.summary()
    torch.manual_seed(0)
    same = torch.nn.Embedding(64, 8)
    same.weight.data.copy_(before)
    initialize_token_embeddings(same, documents, ignore_ids=[50], seed=3, max_segments=100)
    assert torch.equal(same.weight, embedding.weight)  # a pure function of the ids and the seed


def test_smooth_inverse_frequency_weights_follow_token_shares():
    from hf_pretrain.data.spectral import SIF_SMOOTHING, smooth_inverse_frequency_weights

    # token 1 in every document (like [CLS]), token 2 three times, tokens 3 and 4 once, 5..7 never
    documents = [np.array([1, 2, 3]), np.array([1, 2, 2]), np.array([1, 4])]
    weights = smooth_inverse_frequency_weights(iter(documents), vocab_size=8)
    shares = np.array([0, 3, 3, 1, 1, 0, 0, 0]) / 8
    np.testing.assert_allclose(weights.numpy(), SIF_SMOOTHING / (SIF_SMOOTHING + shares), rtol=1e-6)
    assert weights.dtype == torch.float32
    assert weights[0] == weights[5] == 1.0  # never seen: full weight
    assert weights[3] > weights[1]  # rarer counts more

"""Sentence-embedding helpers for the denoising-autoencoder family: sentence-transformers loading files and a
retrieval check.

* `write_sentence_transformers_config(folder)` writes the files that make a saved `PretrainDAEModel` /
  `PretrainDAEForDenoising` folder loadable by `SentenceTransformer(folder, trust_remote_code=True)` with the
  same vectors as our `pooler_output`. The one module is sentence-transformers' Transformer module told to read the
  model's `pooler_output` as the sentence embedding: whatever the model's pooling (cls, mean, or the weighted and
  centred `sentence_pooling="weighted_mean"`), sentence-transformers returns exactly that vector, with no Pooling
  module that would have to re-implement it. Written in the format of sentence-transformers >= 5 (the
  `modality_config` of the Transformer module; tested with 6.2).
* `retrieval_map(embeddings, groups)`: mean average precision where every document queries all the others by
  cosine similarity and the relevant ones share its group (e.g. the stdlib package of a docstring).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ST_TRANSFORMER_TYPE = "sentence_transformers.base.modules.transformer.Transformer"


def write_sentence_transformers_config(folder: str | Path, similarity: str = "cosine") -> Path:
    """Write modules.json, sentence_bert_config.json and config_sentence_transformers.json into a saved
    autoencoder folder (config.json + weights + tokenizer already there)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder / 'config.json'} does not exist: save the model into {folder} first.")

    def dump(path: Path, data) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    dump(folder / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER_TYPE}])
    dump(folder / "sentence_bert_config.json", {
        "transformer_task": "feature-extraction",
        # Without decoder inputs only the encoder runs; `pooler_output` is the model's own sentence embedding.
        "modality_config": {"text": {"method": "forward", "method_output_name": "pooler_output"}},
        "module_output_name": "sentence_embedding",
    })
    dump(folder / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer",
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": similarity,
    })
    return folder


def average_precisions(embeddings, groups) -> np.ndarray:
    """Per-document average precision (NaN for a document alone in its group: it has nothing to find)."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"embeddings must be (N, C); got shape {vectors.shape}.")
    labels = np.asarray(list(groups))
    if len(labels) != len(vectors):
        raise ValueError(f"{len(vectors)} embeddings but {len(labels)} groups.")
    count = len(vectors)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)  # a document never retrieves itself
    result = np.full(count, np.nan)
    for query in range(count):
        # Stable sort by descending score; ties keep input order (deterministic).
        order = np.argsort(-scores[query], kind="stable")[: count - 1]
        relevant = labels[order] == labels[query]
        total = relevant.sum()
        if total == 0:
            continue
        hits = np.cumsum(relevant)
        ranks = np.arange(1, count)
        result[query] = float((hits[relevant] / ranks[relevant]).sum() / total)
    return result


def retrieval_map(embeddings, groups) -> float:
    """Mean average precision: each document queries all others (cosine similarity); relevant = same group.
    Documents with no other member of their group are left out of the mean."""
    values = average_precisions(embeddings, groups)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        raise ValueError("no group has two or more documents: retrieval MAP is undefined.")
    return float(values.mean())


__all__ = ["write_sentence_transformers_config", "retrieval_map", "average_precisions"]

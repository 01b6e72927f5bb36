"""Sentence vectors from a pretrained model: `hf-pretrain embed MODEL FILE --out vectors.npy|.parquet`.

Pooling (how token states become one vector per text):
* `mean`   — the average of the last hidden states over real (non-padding) tokens. The default for masked-LM
             encoders, whose first token is never trained to summarize the sentence.
* `cls`    — the first token's last hidden state ([CLS] / <s>); meaningful after fine-tuning with cls pooling.
* `pooler` — the model's `pooler_output`. For a denoising autoencoder this is the bottleneck vector its decoder
             reconstructs the sentence from (TSDAE style), or with `sentence_pooling="weighted_mean"` a frequency-
             weighted mean of the same encoder states, centred on the training corpus: the default there.
* `auto`   — `pooler` for a denoising autoencoder, `mean` otherwise.

`pipeline("feature-extraction", model=FOLDER, trust_remote_code=True)` also works on both families: it returns the
per-token states of the encoder (for the autoencoder, the encoder's states; the decoder does not run).

Our own families load through the classes hf_pretrain installs (a folder's .py files never run); another model's own
code runs only with `trust_remote_code=True` (`--trust-remote-code`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.features import read_table
from ..folders import model_location, remote_code_allowed
from ..pooling import default_pooling, pool

POOLINGS = ("auto", "mean", "cls", "pooler")
TEXT_SUFFIXES = (".txt", ".text", ".md")


def load_feature_model(model: str, trust_remote_code: bool = False):
    """(model in eval mode, tokenizer) through AutoModel: the bare encoder, or the autoencoder's base model.
    A run folder means its final/. trust_remote_code: run a model's own code when it is not one of our families."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = model_location(model)
    trust = remote_code_allowed(path, trust_remote_code, "--trust-remote-code")
    if AutoConfig.from_pretrained(path, trust_remote_code=trust).model_type == "hf_pretrain_dae_features":
        # (checked first: such a folder has no tokenizer to load)
        raise ValueError(f"model={model!r} is a feature autoencoder (vector inputs); embedding text needs a text model.")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
    loaded = AutoModel.from_pretrained(path, trust_remote_code=trust).eval()
    return loaded, tokenizer


def embed_texts(model, tokenizer, texts: list[str], pooling: str = "auto", batch_size: int = 32,
                max_length: int | None = None, normalize: bool = False) -> np.ndarray:
    """(len(texts), hidden) float32 vectors, in the order of `texts`."""
    import torch

    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not allowed; choose one of {', '.join(POOLINGS)}.")
    pooling = default_pooling(model) if pooling == "auto" else pooling
    max_length = max_length or min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512))
    # Batches of similar lengths waste less compute on padding; results are put back in input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in chosen], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt", return_token_type_ids=False)
            pooled = pool(model(**batch), batch["attention_mask"], pooling).float()
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for index, vector in zip(chosen, pooled.numpy()):
                vectors[index] = vector
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, model.config.hidden_size), np.float32)


def read_texts(file: str | Path, column: str = "text") -> list[str]:
    """Texts from a plain-text file (one per non-empty line) or a jsonl/csv/parquet file's `column`."""
    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"FILE={str(file)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [str(row_value(row, column, path)) for row in rows]
    if suffix in (".csv", ".parquet"):
        table = read_table(str(path), suffix[1:])
        if column not in table.column_names:
            raise ValueError(f"--column {column!r} is not a column of {path} (columns: {', '.join(table.column_names)}).")
        return ["" if value is None else str(value) for value in table.column(column).to_pylist()]
    raise ValueError(
        f"FILE={str(file)!r} has extension {suffix!r}; allowed: {', '.join(TEXT_SUFFIXES)} (one text per line), "
        ".jsonl, .csv, .parquet (with --column)."
    )


def row_value(row: dict, column: str, path: Path):
    if column not in row:
        raise ValueError(f"--column {column!r} is not a key of the rows of {path} (keys: {', '.join(row)}).")
    return row[column]


def write_vectors(vectors: np.ndarray, texts: list[str], out: str | Path) -> Path:
    """.npy: the (N, C) float32 matrix. .parquet: columns `text` and `embedding` (a list of floats per row).
    Written to a temporary file beside `out` and renamed, so a crash never leaves a torn file under its name."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".tmp-{out.name}")
    if out.suffix == ".npy":
        np.save(temporary, vectors)
    elif out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"text": texts, "embedding": pa.array(list(vectors), type=pa.list_(pa.float32()))})
        pq.write_table(table, temporary)
    else:
        raise ValueError(f"--out {str(out)!r} is not allowed; name a .npy or .parquet file.")
    temporary.replace(out)
    return out


def check_output_file(out: str | Path, overwrite: bool) -> None:
    """Before any work: a .npy or .parquet name, and no existing file replaced unless asked (--overwrite)."""
    out = Path(out)
    if out.suffix not in (".npy", ".parquet"):
        raise ValueError(f"--out {str(out)!r} is not allowed; name a .npy or .parquet file.")
    if out.exists() and not overwrite:
        raise ValueError(f"--out {str(out)!r} already exists; choose another name, or pass --overwrite to replace it.")


def embed_file(model: str, file: str | Path, out: str | Path, column: str = "text", pooling: str = "auto",
               batch_size: int = 32, max_length: int | None = None, normalize: bool = False,
               trust_remote_code: bool = False, overwrite: bool = False) -> Path:
    check_output_file(out, overwrite)  # fail before loading anything
    texts = read_texts(file, column)
    loaded, tokenizer = load_feature_model(model, trust_remote_code)
    vectors = embed_texts(loaded, tokenizer, texts, pooling, batch_size, max_length, normalize)
    return write_vectors(vectors, texts, out)


__all__ = ["POOLINGS", "load_feature_model", "embed_texts", "read_texts", "write_vectors", "embed_file"]

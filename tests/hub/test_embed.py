"""`hf-pretrain embed` and feature extraction on both model families."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import tiny_models

from hf_pretrain.cli import main
from hf_pretrain.hub.embed import embed_texts, load_feature_model

TEXTS = ["Alice read the report", "the parser returns a value", "Oslo", "a dull film with an awful plot in spring"]


def test_embed_text_lines_to_npy_in_input_order(mlm_run, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS[:2]) + "\n\n" + "\n".join(TEXTS[2:]) + "\n")  # the blank line is skipped
    out = tmp_path / "vectors.npy"
    assert main(["embed", str(mlm_run), str(source), "--out", str(out)]) == 0  # a run folder: uses final/
    vectors = np.load(out)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    model, tokenizer = load_feature_model(str(mlm_run / "final"))
    for index, text in enumerate(TEXTS):  # batching sorts by length; each row must still belong to its text
        alone = embed_texts(model, tokenizer, [text], pooling="mean")[0]
        np.testing.assert_allclose(vectors[index], alone, atol=1e-5)


def test_embed_jsonl_column_to_parquet_with_cls_pooling(mlm_run, tmp_path):
    import pyarrow.parquet as pq

    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(json.dumps({"id": i, "body": t}) for i, t in enumerate(TEXTS)))
    out = tmp_path / "vectors.parquet"
    code = main(["embed", str(mlm_run / "final"), str(source), "--out", str(out), "--column", "body",
                          "--pooling", "cls", "--normalize"])
    assert code == 0
    table = pq.read_table(out)
    assert table.column("text").to_pylist() == TEXTS
    norms = np.linalg.norm(np.array(table.column("embedding").to_pylist()), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_embed_errors_name_the_problem(mlm_run, tmp_path, capsys):
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps({"body": "x"}) + "\n")
    assert main(["embed", str(mlm_run), str(source), "--out", str(tmp_path / "v.npy")]) == 2
    assert "--column 'text' is not a key" in capsys.readouterr().err
    assert main(["embed", str(mlm_run), str(source), "--out", str(tmp_path / "v.csv")]) == 2
    assert "name a .npy or .parquet file" in capsys.readouterr().err


def test_embed_never_replaces_an_existing_file_unless_asked(mlm_run, tmp_path, capsys):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "vectors.npy"
    out.write_bytes(b"someone else's data")
    assert main(["embed", str(mlm_run), str(source), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"someone else's data"
    assert main(["embed", str(mlm_run), str(source), "--out", str(out), "--overwrite"]) == 0
    assert np.load(out).shape == (4, 32) and not list(tmp_path.glob(".tmp-*"))


def test_dae_vectors_default_to_the_bottleneck_pooler_output(dae_run):
    model, tokenizer = load_feature_model(str(dae_run))
    vectors = embed_texts(model, tokenizer, TEXTS[:2])  # auto pooling
    batch = tokenizer(TEXTS[:2], padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        expected = model.encode(batch["input_ids"], batch["attention_mask"])
    np.testing.assert_allclose(vectors, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("run", ["mlm_run", "dae_run"])
def test_feature_extraction_pipeline_works_on_both_families(run, request):
    from transformers import pipeline

    folder = request.getfixturevalue(run) / "final"
    extract = pipeline("feature-extraction", model=str(folder), trust_remote_code=True)
    features = np.asarray(extract("Alice read the report"))
    tokens = len(extract.tokenizer("Alice read the report")["input_ids"])
    assert features.shape == (1, tokens, 32)


def test_embed_never_runs_code_files_of_our_own_folder(mlm_run, tmp_path):
    """Our families load through the installed classes: a folder of ours whose code files (and a tokenizer
    auto_map) raise when run embeds all the same, to the same vectors."""
    folder = tiny_models.tamper_code_files(shutil.copytree(mlm_run / "final", tmp_path / "tampered"))
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    assert main(["embed", str(folder), str(source), "--out", str(tmp_path / "v.npy")]) == 0
    assert main(["embed", str(mlm_run), str(source), "--out", str(tmp_path / "clean.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), np.load(tmp_path / "clean.npy"))


def test_embed_runs_a_foreign_models_code_only_with_the_flag(tmp_path, capsys):
    folder = tiny_models.save_foreign_code_folder(tmp_path / "foreign")
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "v.npy"
    assert main(["embed", str(folder), str(source), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "--trust-remote-code" in error and "configuration_foreign.py" in error and str(folder) in error
    assert not out.exists()
    with pytest.raises(RuntimeError, match=tiny_models.FOREIGN):  # asked for: its code runs (and here raises)
        main(["embed", str(folder), str(source), "--out", str(out), "--trust-remote-code"])

"""A saved PretrainDAEModel folder plus `write_sentence_transformers_config` loads with
`SentenceTransformer(folder, trust_remote_code=True)` and gives our `pooler_output` vectors (cls and mean pooling, the weighted and centred sentence pooling,
base model and denoising head folders)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hub"))

pytest.importorskip(
    "sentence_transformers",
    reason="sentence-transformers is not installed (pip install sentence-transformers --no-deps: it needs nothing "
           "beyond what hf_pretrain already requires)",
)

from tiny_models import make_tokenizer, sentences  # noqa: E402

from hf_pretrain import PretrainDAEConfig, PretrainDAEForDenoising, PretrainDAEModel  # noqa: E402
from hf_pretrain.hub.retrieval import write_sentence_transformers_config  # noqa: E402

TEXTS = sentences(7, seed=3) + ["a", "the parser module returns a value to Alice in Paris and then Oslo"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def save_folder(folder: Path, cls, pooling: str, sentence_pooling: str = "bottleneck") -> Path:
    tokenizer = make_tokenizer("encoder-decoder")
    config = PretrainDAEConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, decoder_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id, bottleneck="pooled", pooling=pooling,
        sentence_pooling=sentence_pooling,
    )
    torch.manual_seed(0)
    model = cls(config)
    base = model if isinstance(model, PretrainDAEModel) else model.model
    if sentence_pooling == "weighted_mean":  # corpus statistics as the dae-sentence recipe would set them
        base.token_pooling_weights.copy_(torch.rand(config.vocab_size, generator=torch.Generator().manual_seed(1)))
        base.pooled_center.normal_(generator=torch.Generator().manual_seed(2))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_sentence_transformers_config(folder)
    return folder


def our_vectors(folder: Path) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    rows = []
    with torch.inference_mode():
        for text in TEXTS:  # one at a time: no padding involved in the reference
            batch = tokenizer([text], return_tensors="pt", return_token_type_ids=False)
            rows.append(model(**batch).pooler_output[0])
    return torch.stack(rows)


@pytest.mark.parametrize(("cls", "pooling", "sentence_pooling"), [
    (PretrainDAEModel, "cls", "bottleneck"), (PretrainDAEModel, "mean", "bottleneck"),
    (PretrainDAEForDenoising, "cls", "bottleneck"), (PretrainDAEModel, "mean", "weighted_mean"),
    (PretrainDAEForDenoising, "mean", "weighted_mean"),
])
def test_sentence_transformers_gives_our_vectors(tmp_path, cls, pooling, sentence_pooling):
    from sentence_transformers import SentenceTransformer

    folder = save_folder(tmp_path / "model", cls, pooling, sentence_pooling)
    modules = json.loads((folder / "modules.json").read_text())
    assert [module["path"] for module in modules] == [""]

    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    assert model.get_embedding_dimension() == 32
    # batched with padding on ST's side, one text at a time on ours
    theirs = model.encode(TEXTS, batch_size=4, convert_to_tensor=True)
    ours = our_vectors(folder)
    assert theirs.shape == ours.shape == (len(TEXTS), 32)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_config_needs_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_sentence_transformers_config(tmp_path)
    assert not os.listdir(tmp_path)

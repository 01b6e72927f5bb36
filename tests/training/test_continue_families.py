"""Continued pretraining of the encoder families people start from (issue 16): BERT, RoBERTa, XLM-R, DistilBERT,
DeBERTa-v2, ModernBERT and ours, each a tiny checkpoint made here with a tokenizer of its kind (no Hub).

* parity: at step 0, the loss our pipeline (packing -> masking collator -> forward, as the loop calls it) computes
  on a block holding one document equals the model's own loss on the same ids and labels through the stock path;
* the real CLI (`pretrain mlm-continue model.init_from=DIR tokenizer.path=DIR`) writes a final folder of the same
  class that loads without trust_remote_code, with the tokenizer unchanged;
* whole-word masking with each tokenizer kind (WordPiece "##", byte-level BPE "Ġ", SentencePiece "▁").
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
import transformers

from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM
from hf_pretrain.data.builtin import load_builtin_corpus
from hf_pretrain.data.masking import MaskingCollator
from hf_pretrain.data.packing import pack_dataset
from hf_pretrain.data.tokenizer import train_tokenizer
from hf_pretrain.training.objectives.stock import MaskedPositionsHead, packing_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pretrain_cli import run_cli, step_losses  # noqa: E402

ROBERTA_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "cls_token": "<s>", "sep_token": "</s>",
                  "mask_token": "<mask>"}
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}

# family: (model class, tokenizer kind, special tokens or None for [CLS]-style, config keyword arguments)
FAMILIES = {
    "bert": ("BertForMaskedLM", "wordpiece", None, {**SMALL, "max_position_embeddings": 64}),
    "roberta": ("RobertaForMaskedLM", "bpe", ROBERTA_TOKENS, {**SMALL, "max_position_embeddings": 66}),
    "xlm-roberta": ("XLMRobertaForMaskedLM", "unigram", ROBERTA_TOKENS, {**SMALL, "max_position_embeddings": 66}),
    "distilbert": ("DistilBertForMaskedLM", "wordpiece", None,
                   {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "max_position_embeddings": 64}),
    "deberta-v2": ("DebertaV2ForMaskedLM", "unigram", None, {**SMALL, "max_position_embeddings": 64}),
    "modernbert": ("ModernBertForMaskedLM", "bpe", None,
                   {**SMALL, "max_position_embeddings": 64, "local_attention": 16, "global_attn_every_n_layers": 2}),
    "hf_pretrain": ("PretrainEncoderForMaskedLM", "wordpiece", None, {**SMALL, "max_position_embeddings": 64}),
}
BLOCK = 32


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load_builtin_corpus()["text"][:300]


def model_class(name: str):
    return PretrainEncoderForMaskedLM if name == "PretrainEncoderForMaskedLM" else getattr(transformers, name)


def make_checkpoint(family: str, texts: list[str], folder: Path) -> Path:
    """A tiny randomly initialized checkpoint of `family` with a tokenizer of its kind, saved like a Hub folder."""
    class_name, kind, special_tokens, settings = FAMILIES[family]
    tokenizer = train_tokenizer(texts, kind=kind, vocab_size=320, special_tokens=special_tokens, model_max_length=64)
    cls = model_class(class_name)
    config_class = PretrainEncoderConfig if cls is PretrainEncoderForMaskedLM else cls.config_class
    extra = {"cls_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id} if family == "modernbert" else {}
    config = config_class(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **settings, **extra)
    torch.manual_seed(0)
    cls(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def one_document_block(tokenizer, text: str) -> dict:
    """The first packed block of one long document: its positions run 0..BLOCK-1 (nothing else in the row)."""
    import datasets

    packed = pack_dataset(datasets.Dataset.from_dict({"text": [text]}), tokenizer, block_size=BLOCK,
                          with_word_starts=False, use_cache=False).dataset
    row = packed.with_format("numpy")[0]
    assert row["position_ids"].tolist() == list(range(BLOCK))
    return {key: row[key] for key in ("input_ids", "position_ids", "example_index")}


# ----------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("family", list(FAMILIES))
def test_step_zero_loss_equals_the_models_own_loss(family, texts, tmp_path):
    folder = make_checkpoint(family, texts, tmp_path / family)
    model = model_class(FAMILIES[family][0]).from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    document = max(texts, key=len)
    per_document, _ = packing_plan(model)
    collator = MaskingCollator(tokenizer, mlm_probability=0.3, seed=1, with_position_ids=per_document)
    batch = collator([one_document_block(tokenizer, document)])
    items = (batch["labels"] != -100).sum()
    with torch.no_grad():
        if family == "hf_pretrain":  # sparse prediction built in
            ours = model(**batch, num_items_in_batch=items).loss  # what the loop computes
        else:  # what MaskedLMObjective.loss computes: the family's head on the masked positions only
            ours = MaskedPositionsHead(model).loss(model, batch, items)
        stock = model(input_ids=batch["input_ids"], labels=batch["labels"])
    assert abs(ours.item() - stock.loss.item()) < 1e-5, (family, ours.item(), stock.loss.item())
    assert per_document == (family == "hf_pretrain")
    if family != "hf_pretrain":  # the same logits, in the order of the labels; other calls see the model unchanged
        with torch.no_grad():
            masked, targets = MaskedPositionsHead(model).logits_and_targets(model, batch)
            dense = model(**batch).logits
        selected = batch["labels"] != -100
        assert masked.shape == (int(items), dense.shape[-1])
        torch.testing.assert_close(masked, dense[selected], atol=1e-5, rtol=1e-5)
        assert targets.tolist() == batch["labels"][selected].tolist()


def test_given_per_document_positions_would_shift_roberta(texts, tmp_path):
    """Why the plan leaves position_ids out for transformers families: RoBERTa makes its positions from
    padding_idx + 1 on, so the 0-based ids of packed rows are not what it was trained with."""
    folder = make_checkpoint("roberta", texts, tmp_path / "roberta")
    model = transformers.RobertaForMaskedLM.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = MaskingCollator(tokenizer, mlm_probability=0.3, seed=1)([one_document_block(tokenizer, max(texts, key=len))])
    with torch.no_grad():
        given = model(**batch).loss
        stock = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    assert abs(given.item() - stock.item()) > 1e-4


# ----------------------------------------------------------------------------------------------- the CLI
@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_mlm_continue_through_the_cli_keeps_the_class_and_the_tokenizer(family, texts, tmp_path):
    folder = make_checkpoint(family, texts, tmp_path / "start")
    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", "mlm-continue", f"model.init_from={folder}", f"tokenizer.path={folder}",
                     f"output.dir={run_dir}", f"data.block_size={BLOCK}", "data.max_documents=200",
                     "train.batch_size=4", "train.max_steps=2", "train.eval_every=100", "train.eval_batches=1",
                     "train.save_every=100", "output.log_with=[]", "output.progress_bar=false")
    plan = "per-document positions" if family == "hf_pretrain" else "rows of concatenated documents"
    assert "packing: " in result.stderr and plan in result.stderr
    if family == "deberta-v2":  # no SDPA path in transformers: the family's own default, said in the log
        assert "model.attn_implementation='sdpa' is not available for DebertaV2ForMaskedLM" in result.stderr
    assert sorted(step_losses(run_dir)) == [1, 2]
    final = run_dir / "final"
    start_config = json.loads((folder / "config.json").read_text())
    assert json.loads((final / "config.json").read_text())["model_type"] == start_config["model_type"]
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(final)  # no trust_remote_code
    assert type(loaded).__name__ == FAMILIES[family][0]
    start_tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    final_tokenizer = json.loads((final / "tokenizer_config.json").read_text())
    assert final_tokenizer["model_max_length"] == start_tokenizer["model_max_length"] == 64
    assert (final / "tokenizer.json").read_text() == (folder / "tokenizer.json").read_text()


# ----------------------------------------------------------------------------------------------- whole words
@pytest.mark.parametrize("kind, marker", [("wordpiece", "##"), ("bpe", "Ġ"), ("unigram", "▁")])
def test_whole_word_masking_with_each_tokenizer_kind(kind, marker, texts):
    """Every masked word is masked with all its pieces, whatever marks word pieces in the vocabulary."""
    import datasets

    tokenizer = train_tokenizer(texts, kind=kind, vocab_size=320)
    assert any(marker in token for token in tokenizer.get_vocab()), f"{kind} vocabulary has no {marker!r} pieces"
    packed = pack_dataset(datasets.Dataset.from_dict({"text": texts[:40]}), tokenizer, block_size=BLOCK,
                          with_word_starts=True, use_cache=False).dataset.with_format("numpy")
    rows = [{key: packed[i][key] for key in ("input_ids", "position_ids", "example_index", "word_starts")}
            for i in range(16)]
    collator = MaskingCollator(tokenizer, mlm_probability=0.3, whole_word=True, seed=2)
    labels = collator(rows)["labels"]
    selected = (labels != -100).numpy()
    multi_piece_words = 0
    for row, flags in zip(selected, (r["word_starts"] for r in rows)):
        starts = [i for i, flag in enumerate(flags) if flag] + [len(flags)]
        for begin, end in zip(starts, starts[1:]):
            word = row[begin:end]
            assert word.all() or not word.any(), (kind, begin, end, word)  # all pieces of a word, or none
            multi_piece_words += int(word.all() and end - begin > 1)
    assert multi_piece_words > 0  # some masked words really had several pieces


# ----------------------------------------------------------------------------------------------- domain words
def test_added_domain_words_start_as_the_mean_of_their_pieces(texts, tmp_path, caplog):
    from hf_pretrain.recipe import TokenizerSection
    from hf_pretrain.data.pipeline import DOMAIN_WORDS_FILE, add_domain_words
    from hf_pretrain.training.objectives.stock import init_domain_rows

    folder = make_checkpoint("roberta", texts, tmp_path / "start")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    before = len(tokenizer)
    import datasets

    caplog.set_level(logging.INFO, logger="hf_pretrain")
    corpus = datasets.Dataset.from_dict({"text": texts})  # the training split, as the objective has it
    add_domain_words(tokenizer, corpus, TokenizerSection(path=str(folder), add_tokens=6), tmp_path / "tok")
    extended = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    records = json.loads((tmp_path / "tok" / DOMAIN_WORDS_FILE).read_text())
    assert len(extended) == before + 6 == before + len(records) and "added 6 domain words" in caplog.text
    model = transformers.RobertaForMaskedLM.from_pretrained(folder)
    old_rows = model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(len(extended))
    init_domain_rows(model, tmp_path / "tok")
    for record in records:
        # The word is now one token in running text, and its row is the mean of the rows it was split into.
        assert extended(f"see the {record['word']} here", add_special_tokens=False)["input_ids"].count(record["id"]) == 1
        assert len(record["pieces"]) >= 2 and record["id"] >= before
        torch.testing.assert_close(model.get_input_embeddings().weight[record["id"]],
                                   old_rows[record["pieces"]].mean(dim=0))
        assert tokenizer.decode(record["pieces"]).strip() == record["word"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_add_tokens_through_the_cli_leaves_a_tokenizer_and_model_that_agree(family, texts, tmp_path):
    folder = make_checkpoint(family, texts, tmp_path / "start")
    run_dir = tmp_path / "run"
    result = run_cli(tmp_path, "pretrain", "mlm-continue", f"model.init_from={folder}", f"tokenizer.path={folder}",
                     "tokenizer.add_tokens=5", f"output.dir={run_dir}", f"data.block_size={BLOCK}",
                     "data.max_documents=200", "train.batch_size=4", "train.max_steps=2", "train.eval_every=100",
                     "train.eval_batches=1", "train.save_every=100", "output.log_with=[]", "output.progress_bar=false")
    assert "tokenizer.add_tokens: added 5 domain words" in result.stderr
    final = run_dir / "final"
    tokenizer = transformers.AutoTokenizer.from_pretrained(final)
    model = transformers.AutoModelForMaskedLM.from_pretrained(final)
    words = json.loads((run_dir / "tokenizer" / "domain_words.json").read_text())
    assert len(tokenizer) == len(transformers.AutoTokenizer.from_pretrained(folder)) + 5
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    for record in words:
        assert tokenizer.convert_tokens_to_ids(record["word"]) == record["id"]
    ids = tokenizer(" ".join(r["word"] for r in words), return_tensors="pt")
    assert torch.isfinite(model(**ids).logits).all()


def test_add_tokens_needs_a_checkpoint_to_continue(tmp_path):
    result = run_cli(tmp_path, "pretrain", "mlm-tiny", "tokenizer.add_tokens=10", check=False)
    assert result.returncode == 2 and "tokenizer.add_tokens=10 extends the vocabulary of a checkpoint" in result.stderr

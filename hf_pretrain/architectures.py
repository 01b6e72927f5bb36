"""The model architectures a recipe can train from scratch (`model.architecture`): our own families (the default,
the fast path) or a stock transformers architecture, whose folder serving and conversion tools take as it is
(Text Embeddings Inference, vLLM, optimum/ONNX, llama.cpp) and which loads without `trust_remote_code`.

Torch-free, beside the objective registry: the recipe checks a recipe against it, the tokenizer code reads the
special tokens each family expects, the objectives build the model it names. `model.config` holds fields of the
architecture's transformers config class (e.g. ModernBertConfig's hidden_size, num_hidden_layers, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

OWN = "hf_pretrain"  # our own families: the encoder (mlm, rtd), the decoder (clm), the autoencoders (dae, ...)

BERT_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
               "mask_token": "[MASK]"}
ROBERTA_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "cls_token": "<s>", "sep_token": "</s>",
                  "mask_token": "<mask>", "bos_token": "<s>", "eos_token": "</s>"}
LLAMA_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
GPT2_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"}


@dataclass(frozen=True)
class StockArchitecture:
    name: str  # the recipe's model.architecture
    model_type: str  # transformers' model_type (its AutoConfig.for_model key)
    objectives: tuple[str, ...]  # the objectives that can train it
    special_tokens: dict = field(default_factory=dict)  # the roles of a tokenizer trained for it, as the family names them
    # RoBERTa-style positions start at padding_idx + 1: the table needs block_size + pad id + 1 rows.
    positions_after_padding: bool = False
    # A decoder whose forward takes per-document `position_ids` on a packed row (and, with no cache, keeps
    # attention inside each document): trained on packed rows as our decoder is. Else rows of concatenated
    # documents with the model's own positions, as run_mlm.py / run_clm.py make them.
    per_document: bool = False
    # The config fields that name the special tokens' ids, set from the tokenizer: {config field: token role}.
    token_ids: dict = field(default_factory=dict)
    verified_by: str = ""  # the test that trains it through the CLI
    # Config values that differ from the class's defaults when we pretrain it (a recipe's model.config still wins).
    config_defaults: dict = field(default_factory=dict)

    def trains(self, objective_name: str) -> bool:
        """Whether this entry's registry row lists the objective (data, not a branch on a name)."""
        return objective_name in self.objectives


STOCK_ARCHITECTURES: dict[str, StockArchitecture] = {entry.name: entry for entry in (
    StockArchitecture(
        "bert", "bert", ("mlm", "rtd"), BERT_TOKENS,
        token_ids={"pad_token_id": "pad_token"},
        verified_by="tests/training/test_stock_architectures.py",
    ),
    StockArchitecture(
        "roberta", "roberta", ("mlm", "rtd"), ROBERTA_TOKENS, positions_after_padding=True,
        token_ids={"pad_token_id": "pad_token", "bos_token_id": "bos_token", "eos_token_id": "eos_token"},
        verified_by="tests/training/test_stock_architectures.py",
    ),
    StockArchitecture(
        "modernbert", "modernbert", ("mlm", "rtd"), BERT_TOKENS,
        token_ids={"pad_token_id": "pad_token", "cls_token_id": "cls_token", "sep_token_id": "sep_token",
                   "bos_token_id": "cls_token", "eos_token_id": "sep_token"},
        verified_by="tests/training/test_stock_architectures.py",
        # ModernBERT classifies from [CLS] by default, a position masked-LM pretraining never trains as a summary:
        # fine-tuned from our 3-minute run it scored 67.6/11.8/72.3% (seeds 42-44, one collapsed to a single class)
        # against 72.3/73.6/77.0% with mean pooling (benchmarks/RESULTS.md#stock-architectures).
        config_defaults={"classifier_pooling": "mean"},
    ),
    StockArchitecture(
        "electra", "electra", ("rtd",), BERT_TOKENS,
        token_ids={"pad_token_id": "pad_token"},
        verified_by="tests/training/test_stock_architectures.py",
    ),
    StockArchitecture(
        "llama", "llama", ("clm",), LLAMA_TOKENS, per_document=True,
        token_ids={"pad_token_id": "pad_token", "bos_token_id": "bos_token", "eos_token_id": "eos_token"},
        verified_by="tests/training/test_stock_architectures.py",
    ),
    StockArchitecture(
        "gpt2", "gpt2", ("clm",), GPT2_TOKENS, per_document=True,
        token_ids={"pad_token_id": "pad_token", "bos_token_id": "bos_token", "eos_token_id": "eos_token"},
        verified_by="tests/training/test_stock_architectures.py",
    ),
)}

ARCHITECTURE_CHOICES = (OWN, *STOCK_ARCHITECTURES)


def stock_architecture(name: str) -> StockArchitecture | None:
    """The stock entry of a recipe's model.architecture; None for our own families."""
    return STOCK_ARCHITECTURES.get(name)


def architectures_for(objective_name: str) -> list[str]:
    """The stock architectures an objective can train, in registry order."""
    return [entry.name for entry in STOCK_ARCHITECTURES.values() if entry.trains(objective_name)]


__all__ = ["OWN", "STOCK_ARCHITECTURES", "ARCHITECTURE_CHOICES", "StockArchitecture", "stock_architecture",
           "architectures_for"]

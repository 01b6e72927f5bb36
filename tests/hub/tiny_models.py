"""Tiny models, tokenizers, run folders and labeled data for the fine-tuning, export and embedding tests.

Everything is generated in the test session (no network, no committed data): a WordPiece tokenizer trained on a
few hundred synthetic sentences, encoder/autoencoder folders with hidden size 32, and a fake pretraining run folder
laid out as the training loop writes it (final/, metrics.jsonl, summary.json, recipe.yaml).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["Alice", "Bruno", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jun"]
CITIES = ["Paris", "Lagos", "Lima", "Oslo", "Quito", "Seoul"]
WORDS = ["the", "report", "was", "read", "by", "and", "then", "sent", "to", "a", "friend", "in", "late", "spring",
         "parser", "module", "returns", "value", "good", "bad", "great", "awful", "film", "plot", "fine", "dull"]
POSITIVE, NEGATIVE = ["good", "great", "fine"], ["bad", "awful", "dull"]


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS + NAMES + CITIES) for _ in range(rng.randint(4, 12))) for _ in range(count)]


def make_tokenizer(layout: str = "encoder"):
    from hf_pretrain.data.tokenizer import train_tokenizer

    texts = sentences(400) + [" ".join(NAMES + CITIES + WORDS)] * 3
    return train_tokenizer(texts, kind="wordpiece", vocab_size=128, layout=layout, model_max_length=64,
                           min_frequency=1)


def encoder_config(tokenizer, **overrides):
    from hf_pretrain import PretrainEncoderConfig

    settings = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    settings.update(overrides)
    return PretrainEncoderConfig(**settings)


def save_encoder(folder: Path, seed: int = 0, **config) -> Path:
    """A (randomly initialized) masked-LM encoder folder with its tokenizer, as `final/` of a run holds."""
    import torch

    from hf_pretrain import PretrainEncoderForMaskedLM

    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    PretrainEncoderForMaskedLM(encoder_config(tokenizer, **config)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_decoder(folder: Path, seed: int = 0) -> Path:
    """A (randomly initialized) causal-LM decoder folder with its clm tokenizer, as `final/` of a clm run holds."""
    import torch

    from hf_pretrain.models import PretrainDecoderConfig, PretrainDecoderForCausalLM

    tokenizer = make_tokenizer("decoder")
    config = PretrainDecoderConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    PretrainDecoderForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_dae(folder: Path, seed: int = 0) -> Path:
    import torch

    from hf_pretrain import PretrainDAEConfig, PretrainDAEForDenoising

    tokenizer = make_tokenizer("encoder-decoder")
    config = PretrainDAEConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, decoder_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    PretrainDAEForDenoising(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_run_dir(run_dir: Path, objective: str = "mlm", steps: int = 20, **config) -> Path:
    """A run folder as the pretraining loop leaves it, with made-up but well-formed metrics; `config`: encoder
    config fields."""
    from hf_pretrain.folders import write_complete_marker
    from hf_pretrain.recipe import Recipe

    if objective == "dae":
        save_dae(run_dir / "final")
    elif objective == "clm":
        save_decoder(run_dir / "final")
    else:
        save_encoder(run_dir / "final", **config)
    write_complete_marker(run_dir / "final")  # the loop marks final/ complete last
    recipe = Recipe(objective=objective)
    recipe.output.dir = str(run_dir)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml())
    records = [{"step": 0, "eval/loss": 5.0, "eval/perplexity": 148.4, "eval/accuracy": 0.01}]
    for step in range(1, steps + 1):
        records.append({"step": step, "loss": 5.0 - step * 0.1, "lr": 1e-3 * min(1.0, step / 5), "grad_norm": 1.0,
                        "tokens_per_s": 1000.0 + step, "mfu": 0.1, "tokens": step * 4096})
    final_eval = {"loss": 3.2, "perplexity": 24.5, "accuracy": 0.31}
    if objective == "dae":
        final_eval["exact_match"] = 0.05
    records.append({"step": steps, **{f"eval/{k}": v for k, v in final_eval.items()}})
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    summary = {"objective": objective, "steps": steps, "tokens": steps * 4096, "skipped_steps": 0, "minutes": 1.5,
               "initial_eval": {"loss": 5.0, "perplexity": 148.4, "accuracy": 0.01, **({"exact_match": 0.0} if objective == "dae" else {})},
               "final_eval": {**final_eval, "step": steps}, "final_dir": str(run_dir / "final"),
               "run_dir": str(run_dir), "mfu_peak": "0.05 TFLOP/s (measured fp32 GEMM on 2 CPU threads)",
               "precision": "fp32"}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir


# ------------------------------------------------------------------------------------------------- model code
TAMPERED = "TAMPERED CODE RAN"
FOREIGN = "FOREIGN CODE RAN"


def tamper_code_files(folder: Path) -> Path:
    """Make the code a saved folder of ours carries raise when run: every .py file, and a tokenizer auto_map naming
    one more (transformers prefers our registered model classes to a folder's, but runs a tokenizer auto_map
    whenever trust_remote_code is true). Anyone can edit the files of a folder they hand over."""
    for code in folder.glob("*.py"):
        code.write_text(code.read_text() + f"\nraise RuntimeError({TAMPERED!r} + ' ({code.name})')\n")
    (folder / "tokenization_tampered.py").write_text(f"raise RuntimeError({TAMPERED!r})\n")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_tampered.TamperedTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def save_foreign_code_folder(folder: Path) -> Path:
    """A model folder of a family neither transformers nor hf_pretrain knows: it loads only by running its own
    code (named by its auto_map), which raises FOREIGN when it runs."""
    folder.mkdir(parents=True, exist_ok=True)
    auto_map = {"AutoConfig": "configuration_foreign.ForeignConfig", "AutoModel": "modeling_foreign.ForeignModel",
                "AutoModelForSequenceClassification": "modeling_foreign.ForeignForSequenceClassification"}
    (folder / "config.json").write_text(json.dumps({"model_type": "someone_elses_model", "auto_map": auto_map}))
    for name in ("configuration_foreign.py", "modeling_foreign.py"):
        (folder / name).write_text(f"raise RuntimeError({FOREIGN!r})\n")
    make_tokenizer().save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------------- labeled data
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def sentiment_rows(count: int, seed: int) -> list[dict]:
    """Label 1 when the sentence holds a positive word, 0 a negative one: learnable from one token."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.randint(0, 1)
        words = [rng.choice(WORDS[:14]) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        rows.append({"text": " ".join(words), "label": ["negative", "positive"][label]})
    return rows


def pair_rows(count: int, seed: int) -> list[dict]:
    """MRPC-shaped rows: label 1 (equivalent) when sentence2 names the same person as sentence1."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        name = rng.choice(NAMES)
        label = rng.randint(0, 1)
        other = name if label else rng.choice([n for n in NAMES if n != name])
        rows.append({"sentence1": f"{name} read the report", "sentence2": f"the report was read by {other}",
                     "label": label})
    return rows


def ner_rows(count: int, seed: int) -> list[dict]:
    """Sentences with BIO tags: capitalized names are PER (one or two words), cities LOC."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        tokens, tags = [], []
        for _ in range(rng.randint(4, 9)):
            roll = rng.random()
            if roll < 0.2:
                tokens.append(rng.choice(NAMES))
                tags.append("B-PER")
                if rng.random() < 0.4:
                    tokens.append(rng.choice(NAMES))
                    tags.append("I-PER")
            elif roll < 0.3:
                tokens.append(rng.choice(CITIES))
                tags.append("B-LOC")
            else:
                tokens.append(rng.choice(WORDS))
                tags.append("O")
        rows.append({"tokens": tokens, "ner_tags": tags})
    return rows

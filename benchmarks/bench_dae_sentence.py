#!/usr/bin/env python
"""Sentence embeddings from the denoising autoencoder vs sentence-transformers' TSDAE, same wall-clock budget.

    pip install sentence-transformers --no-deps nltk     # only this benchmark needs them
    HF_HUB_OFFLINE=1 python benchmarks/bench_dae_sentence.py --quick      # ~5 minutes: 0.5 min per training
    HF_HUB_OFFLINE=1 python benchmarks/bench_dae_sentence.py              # 3 minutes per training (~15 minutes)

Data: the built-in corpus (stdlib docstrings), shuffled with --seed; --train-docs for pretraining (written to a
jsonl and read with data.source=files) and a disjoint held-out set of --eval-docs documents from packages with at
least --min-group of them. Score: retrieval MAP (`hf_pretrain.hub.retrieval.retrieval_map`): every held-out
docstring queries the others by cosine similarity, relevant = same stdlib package.

Contenders (each training gets --minutes of training wall clock):
  (a) ours: the dae-sentence recipe (pooled bottleneck, mean pooling, spectral token embeddings, 2-layer
      decoder with its own output layer, encoder at 0.1x the lr), `pooler_output`: the token-weighted mean of the
      encoder states minus the training documents' mean vector (sentence_pooling: weighted_mean).
  (b) TSDAE: sentence-transformers' DenoisingAutoEncoderDataset + DenoisingAutoEncoderLoss (tied encoder/decoder)
      on a random BERT of equal encoder size (hidden 256, 4 layers, 4 heads, intermediate 1024) with OUR tokenizer
      (from (a)), models.Transformer + Pooling cls, SentenceTransformerTrainer stopped by a time-budget callback.
      Noise: the 60% word deletion of `DenoisingAutoEncoderDataset.delete`, with NLTK's Treebank word tokenizer
      instead of `word_tokenize` (which needs the punkt data download; the word split is the same for one sentence).
  (c) the (a) architecture with random weights (pooler_output: a plain mean, no corpus statistics).
  (d) mlm-tiny recipe, same budget, mean-pooled last hidden states.
  (e) (a) without its training steps: the same recipe's spectral embeddings, token weights and centre on a model
      that never trained: what the closed-form statistics give before any denoising.
Every contender's MAP is also shown after subtracting its own mean training-document vector ("centred"), the
post-processing (a) has built in, so the comparison does not hinge on it.
Throughput: encoder input tokens (non-padding tokens of the corrupted text) per second of training, for (a) and (b).
Results: benchmarks/RESULTS.md#dae-sentence.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="training wall clock per contender (default 3)")
    parser.add_argument("--train-docs", type=int, default=2000)
    parser.add_argument("--eval-docs", type=int, default=None, help="default 1000")
    parser.add_argument("--min-group", type=int, default=5, help="held-out packages need this many documents")
    parser.add_argument("--tsdae-lr", type=float, default=5e-4, help="peak lr for TSDAE (random init BERT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="runs/bench_dae_sentence")
    parser.add_argument("--quick", action="store_true", help="0.5 min per training, 600 held-out documents")
    parser.add_argument("--skip", default="", help="comma list of contenders to skip: a,b,c,d,e")
    parser.add_argument("--dae-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the dae-sentence recipe for (a) and (e) (a lever: e.g. "
                             "train.encoder_lr_scale=0.3); give each variant its own --workdir")
    args = parser.parse_args()
    if args.minutes is None:
        args.minutes = 0.5 if args.quick else 3.0
    if args.eval_docs is None:
        args.eval_docs = 600 if args.quick else 1000
    return args


def split_corpus(args):
    from hf_pretrain.data.builtin import load_builtin_corpus

    corpus = load_builtin_corpus()
    rows = list(zip(corpus["text"], corpus["package"]))
    random.Random(args.seed).shuffle(rows)
    train = rows[: args.train_docs]
    rest = rows[args.train_docs:]
    counts: dict[str, int] = {}
    for _, package in rest[: args.eval_docs * 3]:
        counts[package] = counts.get(package, 0) + 1
    held = [(t, p) for t, p in rest[: args.eval_docs * 3] if counts[p] >= args.min_group][: args.eval_docs]
    return [t for t, _ in train], [t for t, _ in held], [p for _, p in held]


def run_recipe(name: str, run_dir: Path, train_file: Path, minutes: float, extra=()) -> dict:
    from hf_pretrain.recipe import load_recipe
    from hf_pretrain.training.loop import Pretraining

    shutil.rmtree(run_dir, ignore_errors=True)  # a leftover run folder would be RESUMED (and its model reported)
    overrides = [f"output.dir={run_dir}", f"train.max_minutes={minutes}", "data.source=files",
                 f"data.train_files={train_file}", "data.format=jsonl", "train.eval_every=100000",
                 "train.save_every=100000", *extra]
    return Pretraining(load_recipe(name, overrides)).run()


def score(vectors, groups, train_vectors=None) -> dict:
    """MAP of the vectors as given, and (with the same contender's training-document vectors) after subtracting
    their mean."""
    from hf_pretrain.hub.retrieval import retrieval_map

    result = {"map": retrieval_map(vectors, groups)}
    if train_vectors is not None:
        result["map_centred"] = retrieval_map(np.asarray(vectors) - np.asarray(train_vectors).mean(axis=0), groups)
    return result


def untrained_recipe_model(run_dir: Path, train_file: Path, extra=()):
    """(e): the dae-sentence recipe's model with its corpus statistics (spectral embeddings, token weights,
    centre) and no training step."""
    from hf_pretrain.recipe import load_recipe
    from hf_pretrain.training.loop import Pretraining

    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [f"output.dir={run_dir}", "data.source=files", f"data.train_files={train_file}", "data.format=jsonl",
                 *extra]
    objective = Pretraining(load_recipe("dae-sentence", overrides)).objective
    objective.finish_training(objective.model)
    return objective.model.base_model.eval(), objective.tokenizer


def train_tsdae(args, tokenizer_dir: Path, train_texts, out: Path) -> tuple[object, dict]:
    from datasets import Dataset
    from nltk.tokenize.treebank import TreebankWordDetokenizer, TreebankWordTokenizer
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.sentence_transformer.datasets import DenoisingAutoEncoderDataset
    from sentence_transformers.sentence_transformer.losses import DenoisingAutoEncoderLoss
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers import AutoTokenizer, BertConfig, BertModel, TrainerCallback

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    bert_dir = out / "random_bert"
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(args.seed)
    BertModel(config).save_pretrained(bert_dir)
    tokenizer.save_pretrained(bert_dir)
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    model = SentenceTransformer(modules=[transformer, models.Pooling(256, pooling_mode="cls")], device="cpu")

    rng = random.Random(args.seed)
    word_tokenizer, detokenizer = TreebankWordTokenizer(), TreebankWordDetokenizer()

    def delete(text: str, del_ratio: float = 0.6) -> str:  # DenoisingAutoEncoderDataset.delete minus punkt
        words = word_tokenizer.tokenize(text)
        if not words:
            return text
        kept = [w for w in words if rng.random() > del_ratio]
        return detokenizer.detokenize(kept or [rng.choice(words)])

    pairs = DenoisingAutoEncoderDataset(train_texts, noise_fn=delete)
    # Enough epochs of pre-noised pairs that the time budget, not the data, ends training.
    damaged, original = [], []
    for _ in range(40):
        for i in range(len(pairs)):
            example = pairs[i]
            damaged.append(example.texts[0] if hasattr(example, "texts") else example[0])
            original.append(example.texts[1] if hasattr(example, "texts") else example[1])
    dataset = Dataset.from_dict({"damaged": damaged, "original": original})

    counted = {"tokens": 0, "steps": 0}

    class CountingLoss(DenoisingAutoEncoderLoss):
        def forward(self, sentence_features, labels=None):
            if self.training:
                counted["tokens"] += int(sentence_features[0]["attention_mask"].sum())
            return super().forward(sentence_features, labels)

    loss = CountingLoss(model, tie_encoder_decoder=True)
    budget = args.minutes * 60
    timing = {}

    class TimeBudget(TrainerCallback):
        def on_train_begin(self, train_args, state, control, **kwargs):
            timing["start"] = time.perf_counter()

        def on_step_end(self, train_args, state, control, **kwargs):
            counted["steps"] = state.global_step
            if time.perf_counter() - timing["start"] >= budget:
                control.should_training_stop = True

    steps_cap = 100_000
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=32, learning_rate=args.tsdae_lr,
        warmup_steps=0.05, lr_scheduler_type="constant_with_warmup", max_steps=steps_cap, save_strategy="no",
        logging_steps=50, report_to="none", use_cpu=True, seed=args.seed, dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss,
                                         callbacks=[TimeBudget()])
    trainer.train()
    seconds = time.perf_counter() - timing["start"]
    model.eval()
    return model, {"steps": counted["steps"], "tokens": counted["tokens"], "seconds": seconds}


def main() -> None:
    args = parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    train_texts, eval_texts, eval_groups = split_corpus(args)
    train_file = work / "train.jsonl"
    train_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in train_texts))
    print(f"train docs {len(train_texts)}, held-out docs {len(eval_texts)} in {len(set(eval_groups))} packages, "
          f"{args.minutes} min per training" + (f", dae-sentence with {args.dae_overrides}" if args.dae_overrides
                                                else ""), flush=True)

    from hf_pretrain.hub.embed import embed_texts, load_feature_model

    results: dict[str, dict] = {}
    dae_dir = work / "dae"
    if "a" not in skip or not (dae_dir / "final").is_dir():
        summary = run_recipe("dae-sentence", dae_dir, train_file, args.minutes, args.dae_overrides)
        results["a"] = {"tokens_per_s": summary["tokens"] / (summary["minutes"] * 60), "steps": summary["steps"],
                        "final_eval": summary.get("final_eval")}
    model, tokenizer = load_feature_model(str(dae_dir))

    def evaluate(model, tokenizer, pooling: str) -> dict:
        """Scores of one model: its held-out vectors, centred with its own training-document vectors."""
        held_out = embed_texts(model, tokenizer, eval_texts, pooling=pooling)
        return score(held_out, eval_groups, embed_texts(model, tokenizer, train_texts, pooling=pooling))

    if "a" in results:
        results["a"].update(evaluate(model, tokenizer, "pooler"))
        print("(a)", results["a"], flush=True)

    if "c" not in skip:
        from transformers import AutoModel

        torch.manual_seed(args.seed)
        random_model = AutoModel.from_config(model.config, trust_remote_code=True).eval()
        results["c"] = evaluate(random_model, tokenizer, "pooler")
        print("(c)", results["c"], flush=True)

    if "e" not in skip:
        untrained, untrained_tokenizer = untrained_recipe_model(work / "untrained", train_file, args.dae_overrides)
        results["e"] = evaluate(untrained, untrained_tokenizer, "pooler")
        print("(e)", results["e"], flush=True)

    if "b" not in skip:
        st_model, timing = train_tsdae(args, dae_dir / "final", train_texts, work / "tsdae")
        vectors = st_model.encode(eval_texts, batch_size=32)
        results["b"] = {"tokens_per_s": timing["tokens"] / timing["seconds"], "steps": timing["steps"],
                        **score(vectors, eval_groups, st_model.encode(train_texts, batch_size=32))}
        print("(b)", results["b"], flush=True)

    if "d" not in skip:
        run_recipe("mlm-tiny", work / "mlm", train_file, args.minutes)
        mlm, mlm_tokenizer = load_feature_model(str(work / "mlm"))
        results["d"] = evaluate(mlm, mlm_tokenizer, "mean")
        print("(d)", results["d"], flush=True)

    names = {"a": "ours: dae-sentence (pooler)", "b": "sentence-transformers TSDAE (cls)",
             "c": "untrained DAE, random init (pooler)", "d": "mlm-tiny (mean pooling)",
             "e": "(a) before any training step"}
    print(f"\nretrieval MAP on {len(eval_texts)} held-out docstrings (relevant = same package), "
          f"{args.minutes} min training each")
    for key in "abcde":
        if key in results:
            r = results[key]
            speed = f"  {r['tokens_per_s']:8,.0f} tok/s  ({r['steps']} steps)" if "tokens_per_s" in r else ""
            print(f"  ({key}) {names[key]:38s} MAP {r['map']:.4f}  centred {r['map_centred']:.4f}{speed}")
    if "a" in results and "b" in results:
        print(f"  ours / TSDAE: MAP x{results['a']['map'] / results['b']['map']:.3f}, "
              f"throughput x{results['a']['tokens_per_s'] / results['b']['tokens_per_s']:.2f}")
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())

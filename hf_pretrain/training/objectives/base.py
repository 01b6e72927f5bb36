"""The contract between the training loop and an objective, and what the text objectives share.

`Objective` declares every member the loop calls, once, with its shapes; the loop never looks for optional
members. An objective builds, in its constructor and before any training compute, the tokenizer, the datasets,
the model and the collators; it counts a batch's tokens and predicted items, computes the loss of a micro-batch,
the eval sums and a step's FLOPs. What the rest of the package knows about an objective (its recipe sections and
rules, tokenizer layout, metric labels, card text) is its entry in the registry, hf_pretrain/objectives.py, which
names the class here that implements it: adding an objective is that entry plus its class.
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import logging
import math
from pathlib import Path

import torch
from torch.nn import functional as F

from ...architectures import StockArchitecture, stock_architecture
from ...data.collation import IGNORE_INDEX
from ...data.pipeline import first_blocks, load_text_splits, prepare_splits, prepare_tokenizer
from ...objectives import objective_class, objective_spec
from ...recipe import Recipe, RecipeError

logger = logging.getLogger(__name__)

# Eval batches are corrupted with their own noise stream, drawn once (epoch 0) and never changed, so eval losses of
# different steps compare. Any fixed offset would do; a prime keeps seed s's eval stream from being seed s+1's
# training stream for small seeds.
EVAL_SEED_OFFSET = 7919


# ----------------------------------------------------------------------------------------------- the contract
class Objective(abc.ABC):
    """What the loop reads from an objective. Built by `__init__(recipe, accelerator, run_dir)`.

    Attributes set by the constructor:
      tokenizer          a PreTrainedTokenizerBase, or None (the feature autoencoder reads vectors)
      model              the model to train (a PreTrainedModel; the loop wraps it with Accelerate)
      train_dataset      map-style dataset, or a data.block_stream.BlockStream for a streamed corpus (it makes
                         its own micro-batches, collated by train_collator in the DataLoader workers)
      eval_dataset       map-style dataset of the held-out split
      train_collator     list of examples -> batch dict of tensors; has `set_epoch(epoch)`
      eval_collator      the same for eval batches; fixed noise
      train_batch_sampler  None (the loop batches `train.batch_size` rows, shuffled) or a batch sampler with
                         `set_epoch(epoch)`, e.g. length-bucketed batches of variable-length documents
      eval_datasets_by_source  {} or, for a mixture of sources, source name -> its own held-out dataset (the loop
                         logs eval/<name>/<metric> beside the mixed eval)
    """

    config_class: type  # the family config a new model is built from (model.config holds its fields)
    tokenizer = None
    train_batch_sampler = None
    eval_datasets_by_source: dict = {}

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        self.recipe = recipe
        self.run_dir = run_dir
        self.spec = objective_spec(recipe.objective)
        check_model_config(recipe, self.config_class)  # a bad model config fails before any work

    def new_model(self, model_class, **config_fields):
        """A randomly initialized model of the family, seeded by train.seed (the same weights on every rank);
        `config_fields` are set from the data and override nothing the recipe may set."""
        torch.manual_seed(self.recipe.train.seed)
        return model_class(model_config_from_recipe(self.config_class, self.recipe, **config_fields))

    @property
    def eval_seed(self) -> int:
        return self.recipe.train.seed + EVAL_SEED_OFFSET

    def set_epoch(self, epoch: int) -> None:
        """Called when an epoch starts (also on resume): noise and batch order are functions of the epoch."""
        self.train_collator.set_epoch(epoch)
        if self.train_batch_sampler is not None:
            self.train_batch_sampler.set_epoch(epoch)

    @abc.abstractmethod
    def count_items(self, batch: dict) -> torch.Tensor:
        """Scalar tensor: the predicted items of a batch the loss averages over (masked tokens, target tokens,
        reconstructed values); or a 1-D tensor, one count per term of a loss whose terms average over different
        items. The loop sums it over a step's micro-batches and ranks and hands the sum to `loss`."""

    @abc.abstractmethod
    def count_tokens(self, batch: dict) -> int:
        """Input tokens of a batch that count toward `train.max_tokens` and tokens/s (padding excluded)."""

    def loss(self, model, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        """Scalar loss of one micro-batch: its summed loss over the whole step's items (`items_in_step`, all
        micro-batches and ranks), so that accumulation and data parallelism give the gradient of one big batch.
        transformers models do this themselves when given `num_items_in_batch`."""
        return model(**batch, num_items_in_batch=items_in_step).loss

    @abc.abstractmethod
    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        """Sums over one eval batch (e.g. summed loss, correct predictions, item count); the loop adds them over
        batches and ranks and hands the totals to `eval_metrics`. No logits are kept across batches."""

    @abc.abstractmethod
    def eval_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Eval metrics from the summed totals; always includes `loss`."""

    @abc.abstractmethod
    def step_flops(self, micro_batches: list[dict]) -> float:
        """Useful FLOPs of one optimizer step on this rank (what MFU divides)."""

    def finish_training(self, model) -> None:
        """Runs after the last step, before the last checkpoint and the final folder are written (e.g. corpus
        statistics saved with the model). `model` is the unwrapped model."""

    def final_folders(self, model, weights: dict | None) -> list[tuple[str, object, dict | None]]:
        """The model folders written when training ends, as (folder name in the run folder, model, its weights).
        `weights` is the gathered state of a sharded model (rank 0), None when `model` holds its own weights.
        `final` is the folder finetune, embed and export read."""
        return [("final", model, weights)]


# ----------------------------------------------------------------------------------------------- text objectives
def model_config_from_recipe(config_class, recipe: Recipe, **fixed):
    """The family config from `model.config`, validated with the recipe's key names in the messages."""
    allowed = {f.name for f in dataclasses.fields(config_class)} - {"transformers_version", "architectures"}
    for key in recipe.model.config:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise RecipeError(
                f"unknown key 'model.config.{key}'"
                + (f"; did you mean 'model.config.{hint[0]}'?" if hint else "")
                + f" Allowed: {', '.join(sorted(allowed))}."
            )
    settings = {**recipe.model.config, **fixed}
    try:
        return config_class(**settings, attn_implementation=recipe.model.attn_implementation)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"model.config: {error}") from None


def stock_config_class(architecture: StockArchitecture):
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[architecture.model_type]


def stock_config_keys(config_class) -> set[str]:
    """The model.config keys a stock config class takes (its fields and their aliases)."""
    return (set(config_class().to_dict()) | set(getattr(config_class, "attribute_map", {}))) - {
        "transformers_version", "architectures", "model_type"}


def own_family_keys(recipe: Recipe) -> list[str]:
    """Keys of model.config that only our own family's config has (a shipped recipe's `first_layer_attn_norm`,
    say): a stock architecture's config leaves them out, with a warning, so that a recipe switched to a stock
    architecture (`mlm-tiny model.architecture=bert`) still runs. A key neither config knows is refused."""
    stock = stock_config_keys(stock_config_class(stock_architecture(recipe.model.architecture)))
    own = {f.name for f in dataclasses.fields(objective_class(recipe.objective).config_class)}
    return [key for key in recipe.model.config if key not in stock and key in own]


def check_stock_config(recipe: Recipe) -> None:
    """model.config against the stock architecture's config class: an unknown field is named, with a did-you-mean,
    before any work (a field of our own family only is left out instead: own_family_keys)."""
    architecture = stock_architecture(recipe.model.architecture)
    config_class = stock_config_class(architecture)
    allowed = stock_config_keys(config_class)
    left_out = own_family_keys(recipe)
    for key in recipe.model.config:
        if key not in allowed and key not in left_out:
            hint = difflib.get_close_matches(key, allowed, n=1)
            raise RecipeError(
                f"unknown key 'model.config.{key}' for model.architecture={architecture.name!r} "
                f"({config_class.__name__})" + (f"; did you mean 'model.config.{hint[0]}'?" if hint else "")
                + f" Allowed: {', '.join(sorted(allowed))}."
            )


def check_model_config(recipe: Recipe, config_class) -> None:
    """model.config against the config class of the model a run builds (a new model: our family's, or the stock
    architecture's); a continued checkpoint brings its own config."""
    if recipe.model.init_from is not None:
        return
    if stock_architecture(recipe.model.architecture) is not None:
        check_stock_config(recipe)
    else:
        model_config_from_recipe(config_class, recipe)


def vocab_rows(tokenizer) -> int:
    """Embedding rows: the tokenizer's size rounded up to a multiple of 64 (aligned GEMM tiles)."""
    return int(math.ceil(len(tokenizer) / 64) * 64)


class TextObjective(Objective):
    """Text in, token ids, labels with IGNORE_INDEX where nothing is predicted.

    The constructor reads the text splits and prepares the tokenizer; the subclass then builds its datasets, model
    (`new_model`: vocabulary size and padding id from the tokenizer) and collators.
    """

    stream_rows = "blocks"  # what a streamed corpus's rows are: packed blocks, or "documents" (data/block_stream.py)

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        super().__init__(recipe, accelerator, run_dir)
        self.stream_plan = None
        # A streamed corpus's shards are listed first: one too few readers can share is refused before the tokenizer
        # is trained.
        if recipe.data.streaming:
            from ...data.streaming import plan_recipe_stream

            self.stream_plan = plan_recipe_stream(recipe, accelerator.num_processes, rows=self.stream_rows)
        self.texts = load_text_splits(recipe)
        self.tokenizer = prepare_tokenizer(recipe, self.texts.train, accelerator, run_dir, self.spec.tokenizer_layout)

    def new_model(self, model_class, **config_fields):
        return super().new_model(
            model_class, vocab_size=vocab_rows(self.tokenizer), pad_token_id=self.tokenizer.pad_token_id,
            **config_fields,
        )

    def apply_embedding_init(self, documents) -> None:
        """model.embedding_init=spectral: token embedding rows from the corpus's TF-IDF SVD (data/spectral.py).
        `documents()` returns an iterator over the training documents as token-id arrays (called only when the
        recipe asks for spectral rows, so a random init reads nothing). Every rank computes the same rows (the
        SVD is seeded), so no broadcast is needed."""
        recipe = self.recipe
        if recipe.model.embedding_init != "spectral" or recipe.model.init_from:
            return
        from ...data.spectral import default_ignore_ids, initialize_token_embeddings

        report = initialize_token_embeddings(
            self.model.get_input_embeddings(),
            documents(),
            ignore_ids=default_ignore_ids(self.tokenizer),
            seed=recipe.train.seed,
            max_segments=recipe.model.embedding_init_max_documents,
            eigenvalue_power=recipe.model.embedding_init_power,
        )
        logger.info(report.summary())

    def count_items(self, batch: dict) -> torch.Tensor:
        return (batch["labels"] != IGNORE_INDEX).sum()

    def count_tokens(self, batch: dict) -> int:
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else batch["input_ids"].numel()

    def eval_metrics(self, totals: dict) -> dict:
        items = max(totals.get("items", 0), 1)
        loss = totals.get("loss_sum", math.nan) / items
        return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "accuracy": totals.get("correct", 0) / items}


def predicted_token_sums(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summed cross-entropy, correct predictions and count of (N, V) logits against (N,) target ids."""
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = (logits.argmax(-1) == targets).sum()
    return {"loss_sum": loss_sum.detach(), "correct": correct, "items": torch.tensor(targets.numel())}


class PackedTextObjective(TextObjective):
    """Text packed into fixed-length blocks of concatenated documents (in memory, cached, or streamed)."""

    def build_packed_datasets(self, accelerator, with_word_starts: bool) -> None:
        recipe, block_size = self.recipe, self.recipe.data.block_size
        self.streaming = recipe.data.streaming
        if self.streaming:  # every process and DataLoader worker reads its own shards (data/block_stream.py)
            from ...data.block_stream import BlockStream

            self.train_dataset = BlockStream(self.stream_plan, self.tokenizer, accelerator.process_index,
                                             with_word_starts)
            eval_rows = recipe.train.eval_batches * recipe.train.batch_size * accelerator.num_processes
            if self.texts.is_mixture:  # each source's first validation blocks, mixed in the training order
                self.stream_mixture_eval(block_size, with_word_starts, eval_rows)
            else:
                self.eval_dataset = first_blocks(self.texts.validation, self.tokenizer, block_size,
                                                 with_word_starts, eval_rows)
        elif self.texts.is_mixture:  # each source packed on its own; the mixture orders the blocks (data/mixing.py)
            from ...data.mixing import prepare_mixture
            from ...data.packing import pack_dataset

            mixed = prepare_mixture(
                pack_dataset, self.texts, self.tokenizer, accelerator, batch_size=recipe.train.batch_size,
                seed=recipe.train.seed, block_size=block_size, num_proc=recipe.data.num_proc,
                with_word_starts=with_word_starts,
            )
            self.train_dataset, self.eval_dataset = mixed.train, mixed.validation
            self.train_batch_sampler = mixed.batch_sampler  # the mixture's order, not shuffled by the loop
            self.eval_datasets_by_source = mixed.validation_by_source
        else:
            from ...data.packing import pack_dataset

            self.train_dataset, self.eval_dataset = prepare_splits(
                pack_dataset, self.texts, self.tokenizer, accelerator,
                block_size=block_size, num_proc=recipe.data.num_proc, with_word_starts=with_word_starts,
            )

    def stream_mixture_eval(self, block_size: int, with_word_starts: bool, rows: int) -> None:
        """A streamed mixture's eval: every source's first `rows` validation blocks (its own eval, logged per source)
        and, as the mixed eval, `rows` of them in the order the mixture index gives (each block one source's)."""
        from ...data.mixing import mixture_index

        names, weights = list(self.texts.weights), list(self.texts.weights.values())
        per_source = {name: first_blocks(self.texts.validation_by_source[name], self.tokenizer, block_size,
                                         with_word_starts, rows) for name in names}
        empty = [name for name in names if not per_source[name]]
        if empty:
            raise ValueError(f"data.sources {empty}: the validation text packs into no block of {block_size} tokens; "
                             "raise data.validation_fraction or give the source validation_files.")
        sources, blocks = mixture_index([len(per_source[name]) for name in names], weights, 0, rows,
                                        self.recipe.train.seed)
        self.eval_dataset = [per_source[names[source]][block] for source, block in zip(sources, blocks)]
        self.eval_datasets_by_source = per_source

    def training_documents(self):
        """The training documents as token-id arrays: the pieces of the packed rows. A streamed corpus is packed
        again from its start by the same packer (the consumer stops after embedding_init_max_documents)."""
        from ...data.spectral import segments_of_packed_rows
        from ...data.streaming import pack_stream

        if self.streaming:
            blocks = pack_stream(self.texts.train, self.tokenizer, self.recipe.data.block_size)
            return (
                segment
                for block in blocks
                for segment in segments_of_packed_rows([block["input_ids"]], [block["position_ids"]])
            )
        return (
            segment
            for chunk in self.train_dataset.with_format("numpy").iter(batch_size=1024)
            for segment in segments_of_packed_rows(chunk["input_ids"], chunk["position_ids"])
        )


def build_objective(recipe: Recipe, accelerator, run_dir: Path) -> Objective:
    """The recipe's objective, of the class its registry entry names."""
    return objective_class(recipe.objective)(recipe, accelerator, run_dir)

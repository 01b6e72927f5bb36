"""The feature autoencoder (objective `dae-features`): float vectors in, the clean vectors rebuilt (MSE)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ...models import PretrainDAEFeatureConfig
from ...recipe import Recipe, RecipeError
from .base import Objective

logger = logging.getLogger(__name__)


class FeatureDenoisingObjective(Objective):
    """Float vectors (scikit-learn's digits, or your .npy / csv / parquet / jsonl files), each read as
    `features.feature_tokens` feature tokens, corrupted by `FeatureNoiseCollator` (Gaussian noise + masked values);
    `PretrainDAEForFeatureReconstruction` rebuilds the clean vector and its loss is the mean squared error.

    No tokenizer (`tokenizer` is None). A "token" in the loop's counts and budgets (`train.max_tokens`) is a
    feature token. Eval on the held-out vectors: `loss` (= `mse`), the denoising MSE (noisy input, clean target:
    what training minimizes); `clean_mse`, the reconstruction MSE of uncorrupted inputs; `baseline_mse`,
    predicting the training mean for every vector; `r2` = 1 - mse / baseline_mse."""

    config_class = PretrainDAEFeatureConfig

    def __init__(self, recipe: Recipe, accelerator, run_dir: Path):
        from ...data.features import FeatureDataset, split_features
        from ...data.noising import FeatureNoiseCollator

        super().__init__(recipe, accelerator, run_dir)
        section = recipe.features
        train, validation, description = self.load_vectors(recipe)
        if validation is None:
            train, validation = split_features(train, section.validation_fraction, recipe.train.seed)
        width = train.shape[1]
        if validation.shape[1] != width:
            raise RecipeError(
                f"features.validation_files hold vectors of {validation.shape[1]} values, the training vectors "
                f"{width}; both must have the same size."
            )
        if width % section.feature_tokens:
            divisors = [d for d in range(1, width + 1) if width % d == 0]
            raise RecipeError(
                f"features.feature_tokens={section.feature_tokens} does not divide the {width} values of each "
                f"vector; choose one of {divisors} (each token holds {width} / feature_tokens values)."
            )
        self.feature_size = width // section.feature_tokens
        logger.info(
            f"features: {description}; train {len(train):,}, validation {len(validation):,} vectors; "
            f"{section.feature_tokens} feature tokens of {self.feature_size} values; noise: Gaussian std "
            f"{section.gaussian_std}, {section.mask_rate:.0%} of values masked"
        )
        self.train_dataset, self.eval_dataset = FeatureDataset(train), FeatureDataset(validation)
        self.train_mean = torch.from_numpy(train.astype("float64").mean(axis=0)).float()  # (D,), eval's baseline
        self.model = self.build_model()
        noise = dict(gaussian_std=section.gaussian_std, mask_rate=section.mask_rate)
        self.train_collator = FeatureNoiseCollator(**noise, seed=recipe.train.seed)
        self.eval_collator = FeatureNoiseCollator(**noise, seed=self.eval_seed)

    @staticmethod
    def load_vectors(recipe: Recipe):
        """(train, validation or None, description), float32 arrays; data errors become recipe errors that
        name the key."""
        from ...data.features import FeatureDataError, load_digits_features, load_feature_files
        from ...data.sources import resolve_files

        section = recipe.features
        if section.source == "digits":
            try:
                data = load_digits_features()
            except FeatureDataError as error:
                raise RecipeError(f"features.source='digits': {error}") from None
            return data.features, None, data.description
        loaded = []
        for key in ("train_files", "validation_files"):
            patterns = getattr(section, key)
            if not patterns:
                loaded.append(None)
                continue
            try:
                files = resolve_files(patterns)
                data = load_feature_files(files, section.format, section.columns)
            except ValueError as error:  # FeatureDataError, or a pattern that matches no file
                raise RecipeError(f"features.{key}={patterns!r}: {error}") from None
            loaded.append(data)
        train, validation = loaded
        return train.features, validation.features if validation else None, train.description

    def build_model(self):
        from ...models import PretrainDAEForFeatureReconstruction

        recipe, tokens = self.recipe, self.recipe.features.feature_tokens
        if recipe.model.init_from:
            model = PretrainDAEForFeatureReconstruction.from_pretrained(recipe.model.init_from)
            if model.config.feature_size != self.feature_size:
                raise RecipeError(
                    f"model.init_from={recipe.model.init_from!r} reads feature tokens of {model.config.feature_size} "
                    f"values, but features.feature_tokens={tokens} makes tokens of {self.feature_size}; set "
                    f"features.feature_tokens={self.feature_size * tokens // model.config.feature_size} (if it "
                    "divides the vectors) or start from scratch."
                )
        else:
            # One position per feature token plus the summary token, unless the recipe sets it.
            positions = {"max_position_embeddings": tokens + 1}
            if "max_position_embeddings" in recipe.model.config:
                positions = {}
            model = self.new_model(PretrainDAEForFeatureReconstruction, feature_size=self.feature_size, **positions)
        if tokens + 1 > model.config.max_position_embeddings:
            raise RecipeError(
                f"features.feature_tokens={tokens} needs model.config.max_position_embeddings >= {tokens + 1} (one "
                f"position per feature token plus the summary token); it is {model.config.max_position_embeddings}."
            )
        return model

    def count_items(self, batch: dict) -> torch.Tensor:
        """Values reconstructed (the MSE averages over these)."""
        return torch.tensor(batch["labels"].numel())

    def count_tokens(self, batch: dict) -> int:
        return batch["labels"].numel() // self.feature_size

    def loss(self, model, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        """The model's MSE is a mean over its own batch (it ignores `num_items_in_batch`); weighting it by this
        micro-batch's share of the step's values turns it into their mean."""
        loss = model(**batch).loss
        return loss * (self.count_items(batch).to(loss.device) / items_in_step.to(loss.device))

    def eval_sums(self, model, batch: dict) -> dict[str, torch.Tensor]:
        clean = batch["labels"].float()  # (B, D)
        denoised = model(input_features=batch["input_features"]).reconstruction.float()
        rebuilt = model(input_features=batch["labels"]).reconstruction.float()
        mean = self.train_mean.to(clean.device)
        return {
            "squared_error": ((denoised - clean) ** 2).sum(),
            "clean_squared_error": ((rebuilt - clean) ** 2).sum(),
            "baseline_squared_error": ((clean - mean) ** 2).sum(),
            "values": torch.tensor(clean.numel()),
        }

    def eval_metrics(self, totals: dict) -> dict:
        values = max(totals.get("values", 0), 1)
        mse = totals.get("squared_error", math.nan) / values
        baseline = totals.get("baseline_squared_error", math.nan) / values
        return {
            "loss": mse,
            "mse": mse,
            "clean_mse": totals.get("clean_squared_error", math.nan) / values,
            "baseline_mse": baseline,
            "r2": 1.0 - mse / baseline if baseline > 0 else math.nan,
        }

    def step_flops(self, micro_batches: list[dict]) -> float:
        return sum(
            self.model.training_flops(batch["labels"].shape[0], self.count_tokens(batch) // max(batch["labels"].shape[0], 1))
            for batch in micro_batches
        )

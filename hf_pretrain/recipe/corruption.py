"""The sections that say how an objective corrupts its input: `masking` (masked LM, replaced-token detection),
`rtd` (the replaced-token detection generator), `noise` (denoising autoencoder) and `features` (the float-vector
autoencoder's data and noise). Which objective reads which is in hf_pretrain/objectives.py."""

from __future__ import annotations

from dataclasses import dataclass

from .fields import check_fields, choice, listing, ranged, setting


@dataclass
class MaskingSection:
    """Masked-LM noise: which tokens are selected and what replaces them."""

    mlm_probability: float = ranged(
        0.15, low=0.0, high=1.0, low_open=True, doc="share of tokens selected for prediction")
    mask_replace_prob: float = ranged(
        0.8, low=0.0, high=1.0, doc="share of the selected tokens replaced by [MASK]")
    random_replace_prob: float = ranged(
        0.1, low=0.0, high=1.0, doc="share of the selected tokens replaced by a random token (the rest are kept)")
    whole_word: bool = setting(False, "select whole words (all pieces of a word together)")
    span: bool = setting(False, "select contiguous spans of words (SpanBERT-style) instead of single tokens")


@dataclass
class ReplacedTokenDetectionSection:
    """Replaced-token detection (objective: rtd, ELECTRA, Clark et al. 2020): a small masked-LM generator fills the
    masked positions (`masking.*` selects them) with samples from its predictions, and the discriminator (the model
    of `model.config`, the one exported) predicts at every position whether its token was replaced."""

    generator_width: float = ranged(
        0.25, low=0.0, high=1.0, low_open=True,
        doc="the generator's width as a share of the discriminator's: hidden size, heads and MLP width scale "
            "together, the head dimension is kept. ELECTRA found 1/4 to 1/2 best; a generator as strong as the "
            "discriminator makes the detection task too hard.",
    )
    generator_layers: int | None = ranged(None, low=1, doc="generator blocks; null: as many as the discriminator")
    detection_weight: float = ranged(
        50.0, low=0.0, low_open=True,
        doc="lambda in loss = generator MLM loss + lambda * detection loss (50 in the paper: the per-token binary "
            "loss is much smaller than the MLM loss)",
    )
    sampling_temperature: float = ranged(
        1.0, low=0.0, low_open=True, doc="the generator's softmax temperature when it samples replacements",
    )


@dataclass
class NoiseSection:
    """Denoising-autoencoder noise (objective: dae): the one noise dataclass, read by the recipe and handed as it
    is to `hf_pretrain.data.noising.DenoisingCollator` (which documents each rate). The defaults are TSDAE's
    (word_delete_rate 0.6), what objective dae trains when a recipe names no noise; `noising.BART_NOISE` and
    recipes/dae-bart.yaml turn word deletion off: infill_rate 0.3, poisson_lambda 3, permute_sentences 1.0."""

    mask_rate: float = ranged(0.0, low=0.0, high=1.0, doc="share of tokens replaced by [MASK]")
    delete_rate: float = ranged(0.0, low=0.0, high=0.99, doc="share of tokens deleted")
    word_delete_rate: float = ranged(0.6, low=0.0, high=0.99, doc="share of whole words deleted (TSDAE: 0.6)")
    infill_rate: float = ranged(
        0.0, low=0.0, high=0.99, doc="share of tokens in spans replaced by one [MASK] each (BART text infilling)")
    poisson_lambda: float = ranged(3.0, low=0.0, low_open=True, doc="mean span length of text infilling (Poisson)")
    permute_sentences: float = ranged(
        0.0, low=0.0, high=1.0, doc="probability that a document's sentences are shuffled (BART: 1.0)")
    rotate_rate: float = ranged(
        0.0, low=0.0, high=1.0, doc="probability that a document is rotated to start at a random token")
    insert_rate: float = ranged(0.0, low=0.0, high=1.0, doc="random tokens inserted, as a share of the tokens")
    decoder_mask_rate: float = ranged(
        0.0, low=0.0, high=0.99,
        doc="decoder-side word dropout during training: keeps a pooled bottleneck from being ignored")

    def __post_init__(self):
        check_fields(self, "noise")  # built in Python (tests, notebooks, the BART/TSDAE presets): checked too


@dataclass
class FeaturesSection:
    """Float feature vectors (objective: dae-features) and their noise, as in `hf_pretrain.data.features` and
    `hf_pretrain.data.noising.FeatureNoiseCollator`. Each vector of D values is read as `feature_tokens` tokens of
    D / feature_tokens values (an 8x8 digit: 8 rows of 8 pixels)."""

    source: str = choice(
        "digits", "digits", "files",
        doc="digits (scikit-learn's load_digits, scaled to [0, 1]) or files (train_files)")
    train_files: list = listing("source=files: paths or globs: .npy (N, D), or csv/parquet/jsonl rows")
    validation_files: list = listing("held-out vectors (empty: validation_fraction of the training rows)")
    format: str = choice(
        "auto", "auto", "npy", "csv", "parquet", "jsonl", doc="file format (auto: by extension)")
    columns: list = listing("csv/parquet/jsonl feature columns (empty: every numeric column)")
    validation_fraction: float = ranged(
        0.1, low=0.0, high=0.5, doc="share of the training vectors held out for eval")
    feature_tokens: int = ranged(8, low=1, doc="tokens each vector is read as (they must divide its values)")
    gaussian_std: float = ranged(0.1, low=0.0, doc="standard deviation of the Gaussian noise added to every value")
    mask_rate: float = ranged(0.25, low=0.0, high=0.99, doc="share of values set to 0")

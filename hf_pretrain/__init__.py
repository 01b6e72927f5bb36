"""hf_pretrain: pretrain your own transformer on your own text, in Hugging Face format.

Importing the package registers its model families with the transformers Auto classes.
"""

from .models import (
    PretrainDAEConfig,
    PretrainDAEFeatureConfig,
    PretrainDAEForDenoising,
    PretrainDAEForFeatureReconstruction,
    PretrainDAEModel,
    PretrainEncoderConfig,
    PretrainEncoderForMaskedLM,
    PretrainEncoderForSequenceClassification,
    PretrainEncoderForTokenClassification,
    PretrainEncoderModel,
)

__version__ = "0.1.0"

__all__ = [
    "PretrainEncoderConfig",
    "PretrainEncoderModel",
    "PretrainEncoderForMaskedLM",
    "PretrainEncoderForSequenceClassification",
    "PretrainEncoderForTokenClassification",
    "PretrainDAEConfig",
    "PretrainDAEFeatureConfig",
    "PretrainDAEModel",
    "PretrainDAEForDenoising",
    "PretrainDAEForFeatureReconstruction",
    "__version__",
]

"""Model families of hf_pretrain, registered with the transformers Auto classes on import.

The files in this folder are exported as is into saved model folders (trust_remote_code), so they import
only torch, transformers and each other; the registration below is the one piece that lives only here.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_pretrain_encoder import PretrainEncoderConfig
from .modeling_pretrain_encoder import (
    PretrainEncoderForMaskedLM,
    PretrainEncoderForSequenceClassification,
    PretrainEncoderForTokenClassification,
    PretrainEncoderModel,
    PretrainEncoderPreTrainedModel,
)


def register_encoder_family() -> None:
    """Make AutoConfig / AutoModel* resolve `model_type="hf_pretrain_encoder"` to our classes (idempotent)."""
    AutoConfig.register(PretrainEncoderConfig.model_type, PretrainEncoderConfig, exist_ok=True)
    AutoModel.register(PretrainEncoderConfig, PretrainEncoderModel, exist_ok=True)
    AutoModelForMaskedLM.register(PretrainEncoderConfig, PretrainEncoderForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(
        PretrainEncoderConfig, PretrainEncoderForSequenceClassification, exist_ok=True
    )
    AutoModelForTokenClassification.register(PretrainEncoderConfig, PretrainEncoderForTokenClassification, exist_ok=True)


register_encoder_family()

__all__ = [
    "PretrainEncoderConfig",
    "PretrainEncoderPreTrainedModel",
    "PretrainEncoderModel",
    "PretrainEncoderForMaskedLM",
    "PretrainEncoderForSequenceClassification",
    "PretrainEncoderForTokenClassification",
    "register_encoder_family",
]

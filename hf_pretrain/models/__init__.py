"""Model families of hf_pretrain, registered with the transformers Auto classes on import.

The files in this folder are exported as is into saved model folders (trust_remote_code), so they import
only torch, transformers and each other; the registration below is the one piece that lives only here.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_pretrain_dae import PretrainDAEConfig, PretrainDAEFeatureConfig
from .configuration_pretrain_decoder import PretrainDecoderConfig
from .configuration_pretrain_encoder import PretrainEncoderConfig
from .modeling_pretrain_dae import (
    PretrainDAEForDenoising,
    PretrainDAEForFeatureReconstruction,
    PretrainDAEModel,
    PretrainDAEPreTrainedModel,
)
from .modeling_pretrain_decoder import (
    PretrainDecoderForCausalLM,
    PretrainDecoderForSequenceClassification,
    PretrainDecoderModel,
    PretrainDecoderPreTrainedModel,
)
from .modeling_pretrain_encoder import (
    PretrainEncoderForMaskedLM,
    PretrainEncoderForReplacedTokenDetection,
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
    AutoModelForPreTraining.register(PretrainEncoderConfig, PretrainEncoderForReplacedTokenDetection, exist_ok=True)


def register_dae_family() -> None:
    """Make the Auto classes resolve `hf_pretrain_dae` (text) and `hf_pretrain_dae_features` (idempotent)."""
    AutoConfig.register(PretrainDAEConfig.model_type, PretrainDAEConfig, exist_ok=True)
    AutoModel.register(PretrainDAEConfig, PretrainDAEModel, exist_ok=True)
    AutoModelForSeq2SeqLM.register(PretrainDAEConfig, PretrainDAEForDenoising, exist_ok=True)
    AutoConfig.register(PretrainDAEFeatureConfig.model_type, PretrainDAEFeatureConfig, exist_ok=True)
    AutoModel.register(PretrainDAEFeatureConfig, PretrainDAEForFeatureReconstruction, exist_ok=True)


def register_decoder_family() -> None:
    """Make AutoConfig / AutoModel* resolve `model_type="hf_pretrain_decoder"` (the causal LM) (idempotent)."""
    AutoConfig.register(PretrainDecoderConfig.model_type, PretrainDecoderConfig, exist_ok=True)
    AutoModel.register(PretrainDecoderConfig, PretrainDecoderModel, exist_ok=True)
    AutoModelForCausalLM.register(PretrainDecoderConfig, PretrainDecoderForCausalLM, exist_ok=True)
    AutoModelForSequenceClassification.register(
        PretrainDecoderConfig, PretrainDecoderForSequenceClassification, exist_ok=True
    )


register_encoder_family()
register_dae_family()
register_decoder_family()

__all__ = [
    "PretrainEncoderConfig",
    "PretrainEncoderPreTrainedModel",
    "PretrainEncoderModel",
    "PretrainEncoderForMaskedLM",
    "PretrainEncoderForSequenceClassification",
    "PretrainEncoderForTokenClassification",
    "PretrainEncoderForReplacedTokenDetection",
    "register_encoder_family",
    "PretrainDAEConfig",
    "PretrainDAEFeatureConfig",
    "PretrainDAEPreTrainedModel",
    "PretrainDAEModel",
    "PretrainDAEForDenoising",
    "PretrainDAEForFeatureReconstruction",
    "register_dae_family",
    "PretrainDecoderConfig",
    "PretrainDecoderPreTrainedModel",
    "PretrainDecoderModel",
    "PretrainDecoderForCausalLM",
    "PretrainDecoderForSequenceClassification",
    "register_decoder_family",
]

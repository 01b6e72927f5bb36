"""Whether this process may reach the Hugging Face Hub: the one reading of HF_HUB_OFFLINE that reading data,
loading a tokenizer, pushing a model and fine-tuning share."""

from __future__ import annotations

import os

# huggingface_hub's own truthy spellings of its boolean environment variables.
TRUE_VALUES = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set now (read at call time: huggingface_hub's constant is read once at import,
    and a test or a notebook may set the variable later) or was set when huggingface_hub was imported."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES:
        return True
    from huggingface_hub import constants

    return bool(getattr(constants, "HF_HUB_OFFLINE", False))

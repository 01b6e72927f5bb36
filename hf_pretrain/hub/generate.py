"""Text from a causal LM: `hf-pretrain generate MODEL "prompt" [--max-new-tokens N] [--temperature T]`.

MODEL is a run folder (its final/), a model folder or a Hub id of any `AutoModelForCausalLM`. Temperature 0 is
greedy decoding (the same text every time); above 0, sampling with top-p, seeded. Our own families load through
the classes hf_pretrain installs; another model's own code runs only with `--trust-remote-code`.
"""

from __future__ import annotations

from ..folders import model_location, remote_code_allowed


def check_generation_settings(max_new_tokens: int, temperature: float, top_p: float) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens={max_new_tokens!r} is not allowed; use an integer >= 1.")
    if not temperature >= 0:  # also refuses nan
        raise ValueError(f"--temperature={temperature!r} is not allowed; use 0 (greedy) or a positive number.")
    if not 0 < top_p <= 1:
        raise ValueError(f"--top-p={top_p!r} is not allowed; use a number in (0, 1].")


def load_causal_lm(model: str, trust_remote_code: bool = False):
    """(model in eval mode, tokenizer); a run folder means its final/."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = model_location(model, error=ValueError)
    trust = remote_code_allowed(path, trust_remote_code, "--trust-remote-code")
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=trust).eval()
    except ValueError as error:
        if "Unrecognized configuration class" not in str(error):
            raise
        raise ValueError(
            f"model={model!r} is a {config.model_type!r} model, not a causal LM; generate needs a model trained "
            "with objective clm (or any AutoModelForCausalLM checkpoint)."
        ) from None
    return loaded, AutoTokenizer.from_pretrained(path, trust_remote_code=trust)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 50, temperature: float = 0.0,
                  top_p: float = 0.95, seed: int = 0) -> str:
    """The prompt's continuation (the new text only)."""
    import torch

    check_generation_settings(max_new_tokens, temperature, top_p)
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=pad, **sampling)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

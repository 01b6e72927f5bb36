"""Building the model to fine-tune (hf_pretrain.finetune.model): the warm start's shrink and perturb."""

from __future__ import annotations

import torch

from hf_pretrain.finetune import LabelScheme, build_model, shrink_and_perturb


def test_shrink_and_perturb_changes_only_the_encoder_matrices(encoder_dir):
    scheme = LabelScheme("single_label_classification", ["neg", "pos"])
    model = build_model(str(encoder_dir), "classification", scheme)
    torch.manual_seed(5)
    fresh = build_model(str(encoder_dir), "classification", scheme, from_scratch=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    changed = shrink_and_perturb(model, fresh, shrink=0.4, perturb=0.3)
    fresh_parameters = dict(fresh.named_parameters())
    matrices = [n for n, p in model.named_parameters() if n.startswith("model.") and p.dim() >= 2]
    assert changed == len(matrices) > 0
    for name, parameter in model.named_parameters():
        if name in matrices:
            assert torch.allclose(parameter, 0.4 * before[name] + 0.3 * fresh_parameters[name], atol=1e-7)
        else:  # norms, biases and the new head stay as loaded
            assert torch.equal(parameter, before[name]), name

"""Checkpoints: atomic, pickle-free, verified on resume, loadable with from_pretrained."""

from __future__ import annotations

import json

import pytest
import torch

from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM
from hf_pretrain.training.checkpoint import (
    TrainerState,
    find_resumable_checkpoint,
    list_checkpoints,
    load_model_weights,
    load_trainer_state,
    optimizer_from_files,
    save_checkpoint,
)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = PretrainEncoderConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32)
    return PretrainEncoderForMaskedLM(config)


def trained_optimizer(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(5, 64, (2, 8))
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    return optimizer


def test_save_then_load_restores_weights_optimizer_and_state(tmp_path):
    model = tiny_model()
    optimizer = trained_optimizer(model)
    state = TrainerState(step=3, epoch=1, batches_in_epoch=5, tokens_seen=123)
    folder = save_checkpoint(tmp_path, model, None, optimizer, state, keep_last=2)
    assert folder.name == "step-00000003" and (folder / "COMPLETE").exists()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt")) and not list(folder.rglob("*.pkl"))

    other = tiny_model(seed=1)
    other_optimizer = torch.optim.AdamW(other.parameters(), lr=1.0)
    load_model_weights(other, folder)
    optimizer_from_files(other_optimizer, folder)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert other.decoder.weight is other.get_input_embeddings().weight
    saved, loaded = optimizer.state_dict(), other_optimizer.state_dict()
    assert loaded["param_groups"] == saved["param_groups"]
    for key, values in saved["state"].items():
        for name, value in values.items():
            assert torch.equal(torch.as_tensor(loaded["state"][key][name]), torch.as_tensor(value))
    assert load_trainer_state(folder) == state
    # The model folder inside a checkpoint is an ordinary save_pretrained folder.
    reloaded = PretrainEncoderForMaskedLM.from_pretrained(folder / "model")
    assert torch.equal(reloaded.decoder.weight, model.decoder.weight)


def test_keeps_only_the_last_k(tmp_path):
    model = tiny_model()
    optimizer = trained_optimizer(model)
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=step), keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000003"]


@pytest.mark.parametrize("damage", ["truncate_weights", "remove_marker", "flip_byte", "half_written"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    model = tiny_model()
    optimizer = trained_optimizer(model)
    save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=1), keep_last=3)
    newest = save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=2), keep_last=3)
    weights = newest / "model" / "model.safetensors"
    if damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "remove_marker":
        (newest / "COMPLETE").unlink()
    elif damage == "flip_byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:  # a kill during the write leaves a temporary folder that must never be picked
        (newest.parent / ".tmp-step-00000003").mkdir()
        (newest.parent / ".tmp-step-00000003" / "trainer_state.json").write_text(json.dumps({"step": 3}))
    messages = []
    found = find_resumable_checkpoint(tmp_path, report=messages.append)
    if damage == "half_written":
        assert found == newest and not messages
    else:
        assert found.name == "step-00000001"
        assert "step-00000002 is unusable" in messages[0] and "falling back" in messages[0]

"""Checkpoints: atomic, pickle-free, verified on resume, loadable with from_pretrained."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM
from hf_pretrain.folders import verify_complete
from hf_pretrain.training.checkpoint import (
    RunFolderBusy,
    TrainerState,
    acquire_run_lock,
    find_resumable_checkpoint,
    list_checkpoints,
    load_model_weights,
    load_trainer_state,
    optimizer_from_files,
    recover_interrupted_swaps,
    release_run_lock,
    save_checkpoint,
)

RECIPE = "objective: mlm\n"  # stored with each checkpoint


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
    folder = save_checkpoint(tmp_path, model, None, optimizer, state, keep_last=2, recipe_yaml=RECIPE)
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
        save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=step), keep_last=2, recipe_yaml=RECIPE)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000003"]


@pytest.mark.parametrize("damage", ["truncate_weights", "remove_marker", "flip_byte", "half_written"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
    model = tiny_model()
    optimizer = trained_optimizer(model)
    save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=1), keep_last=3, recipe_yaml=RECIPE)
    newest = save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=2), keep_last=3, recipe_yaml=RECIPE)
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
    caplog.set_level(logging.WARNING, logger="hf_pretrain")
    found = find_resumable_checkpoint(tmp_path)
    messages = [record.getMessage() for record in caplog.records]
    if damage == "half_written":
        assert found == newest and not messages
    else:
        assert found.name == "step-00000001"
        assert "step-00000002 is unusable" in messages[0] and "falling back" in messages[0]


def test_resaving_a_step_always_leaves_a_complete_copy(tmp_path, monkeypatch):
    """The final save of a step that was just saved periodically: the old copy is renamed aside, not deleted, until
    the new one is in place. A kill between the two renames leaves the set-aside copy, which is put back."""
    import os

    from hf_pretrain.training import checkpoint as module

    model = tiny_model()
    optimizer = trained_optimizer(model)
    first = save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=4), keep_last=1, recipe_yaml=RECIPE)
    assert (first / "recipe.yaml").read_text() == RECIPE and verify_complete(first) is None

    renames = []
    real_replace = os.replace

    def killed_after_first_rename(source, target):
        renames.append((Path(source).name, Path(target).name))
        real_replace(source, target)
        if len(renames) == 1:
            raise KeyboardInterrupt("killed between the two renames")

    monkeypatch.setattr(module.os, "replace", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=4, tokens_seen=99), keep_last=1,
                        recipe_yaml=RECIPE)
    monkeypatch.undo()
    assert renames == [("step-00000004", ".replaced-step-00000004")]
    assert list_checkpoints(tmp_path) == []  # only the set-aside copy is left...
    recover_interrupted_swaps(tmp_path)  # ...and the next start puts it back
    found = find_resumable_checkpoint(tmp_path)
    assert found == first and load_trainer_state(found).tokens_seen == 0

    # Uninterrupted, the new copy replaces the old one and nothing is left aside.
    save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=4, tokens_seen=99), keep_last=1,
                    recipe_yaml=RECIPE)
    assert load_trainer_state(find_resumable_checkpoint(tmp_path)).tokens_seen == 99
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000004"]


def test_keep_last_one_always_keeps_the_newest(tmp_path):
    model = tiny_model()
    optimizer = trained_optimizer(model)
    for step in (2, 4, 4, 6):
        save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=step), keep_last=1, recipe_yaml=RECIPE)
        assert [p.name for p in list_checkpoints(tmp_path)] == [f"step-{step:08d}"]
        assert find_resumable_checkpoint(tmp_path) is not None


def test_pruning_goes_by_step_not_by_name(tmp_path):
    """step-00000010 must outrank step-00000009 and step-00000100 outrank both, whatever the zero padding."""
    model = tiny_model()
    optimizer = trained_optimizer(model)
    for step in (9, 10, 100):
        save_checkpoint(tmp_path, model, None, optimizer, TrainerState(step=step), keep_last=2, recipe_yaml=RECIPE)
    (tmp_path / "checkpoints" / "step-00000100").rename(tmp_path / "checkpoints" / "step-100")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-100", "step-00000010"]


def test_the_run_lock_refuses_a_live_process_and_takes_over_a_dead_ones(tmp_path, caplog):
    import json
    import socket
    import subprocess
    import sys

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunFolderBusy, match=f"in use by process {sleeper.pid}"):
            acquire_run_lock(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    caplog.set_level(logging.INFO, logger="hf_pretrain")
    lock = acquire_run_lock(tmp_path)  # the holder is gone: a stale lock
    assert "no longer running" in caplog.records[-1].getMessage()
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    release_run_lock(lock)
    assert not lock.exists()

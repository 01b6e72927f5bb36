"""FSDP2 checkpoints through checkpoint.py's code, on 2 CPU processes (gloo) and a `fully_shard`-ed encoder.

Launch 1 (2 processes) trains 4 steps on fixed batches, saving checkpoints at steps 2 and 4 (every rank takes
part, rank 0 writes), and writes the final model folder from the gathered weights. Beside them it dumps reference
tensors gathered independently (`DTensor.full_tensor()` of each parameter and optimizer state). This process then
loads the step-2 checkpoint into an unsharded model (identical weights and optimizer state), saves it again from
one process (the same files, byte for byte), and writes the final folder from the step-4 reference weights (the
same files as the sharded run's). Launch 2 (2 processes) resumes fresh sharded models from both step-2 checkpoints
and continues with the uninterrupted run's losses, ending with its final weights bit for bit.

This file is also the script the launches run (`python -m torch.distributed.run ... this_file.py PHASE WORKDIR`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

RECIPE = "objective: mlm\n"
VOCAB, BLOCK, GLOBAL_BATCH, WORLD = 128, 16, 4, 2


def tiny_model(seed: int):
    from hf_pretrain import PretrainEncoderConfig, PretrainEncoderForMaskedLM

    torch.manual_seed(seed)
    config = PretrainEncoderConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=32)
    return PretrainEncoderForMaskedLM(config)


def make_optimizer(model) -> torch.optim.AdamW:
    """Two groups, as the loop's build_optimizer makes: matrices decayed, the rest (embeddings too) not."""
    decayed, other = [], []
    for name, parameter in model.named_parameters():
        (decayed if parameter.ndim >= 2 and "embeddings" not in name else other).append(parameter)
    return torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1, "lr_scale": 1.0},
                              {"params": other, "weight_decay": 0.0, "lr_scale": 1.0}], lr=1e-2)


def global_batch(step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randint(5, VOCAB, (GLOBAL_BATCH, BLOCK), generator=generator)


def train_step(model, optimizer, step: int, rank: int | None) -> float:
    """One step on the global batch (rank r of 2 takes its half; every position is predicted, so each half holds
    the same number of targets and the mean of the halves' mean losses is the global mean)."""
    ids = global_batch(step)
    if rank is not None:
        ids = ids.chunk(WORLD)[rank]
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss = loss.detach()
    if rank is not None:
        torch.distributed.all_reduce(loss)
        loss = loss / WORLD
    return loss.item()


def full_tensors(model, optimizer, with_optimizer: bool = True) -> dict[str, torch.Tensor]:
    """Weights and optimizer state as full tensors, each DTensor gathered on its own (not through checkpoint.py);
    the optimizer's by position over its param groups. Collective on a sharded model."""
    from torch.distributed.tensor import DTensor

    def whole(tensor):
        return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().cpu().clone()

    tensors = {f"weights/{name}": whole(p) for name, p in model.named_parameters()}
    if with_optimizer:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        for index, parameter in enumerate(parameters):
            for key, value in optimizer.state[parameter].items():
                tensors[f"optimizer/{index}/{key}"] = whole(value)
    return tensors


# --------------------------------------------------------------------------------------- the 2-process script
def sharded(seed: int):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = tiny_model(seed)
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, make_optimizer(model)


def launched(phase: str, work: Path) -> None:
    from hf_pretrain.training.checkpoint import (
        TrainerState,
        full_model_state,
        is_sharded,
        load_model_weights,
        optimizer_from_files,
        save_checkpoint,
        write_model_folder,
    )

    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    is_main = rank == 0
    torch.set_num_threads(1)
    if phase == "train":  # 4 steps uninterrupted, checkpoints at 2 and 4, then the final folder
        model, optimizer = sharded(seed=0)
        assert is_sharded(model)
        assert model.decoder.weight is model.get_input_embeddings().weight  # still tied under fully_shard
        losses = {}
        for step in range(1, 5):
            losses[step] = train_step(model, optimizer, step, rank)
            if step in (2, 4):
                save_checkpoint(work / "sharded", model, None, optimizer, TrainerState(step=step), keep_last=5,
                                recipe_yaml=RECIPE, is_main=is_main)
                reference = full_tensors(model, optimizer)
                if is_main:
                    save_file(reference, str(work / f"reference-step{step}.safetensors"))
                torch.distributed.barrier()
        weights = full_model_state(model)
        assert (weights == {}) != is_main  # gathered on rank 0 only
        if is_main:
            write_model_folder(work / "final-sharded", model, None, weights)
            (work / "losses-uninterrupted.json").write_text(json.dumps(losses))
    elif phase == "resume":  # fresh models (another seed) from the step-2 checkpoints, then steps 3-4
        reference = load_file(str(work / "reference-step2.safetensors"))
        for written_by in ("one", "sharded"):
            model, optimizer = sharded(seed=1)
            folder = work / written_by / "checkpoints" / "step-00000002"
            load_model_weights(model, folder)
            optimizer_from_files(optimizer, folder, model=model)
            loaded = full_tensors(model, optimizer)
            assert loaded.keys() == reference.keys(), sorted(set(loaded) ^ set(reference))
            for name, tensor in reference.items():
                assert torch.equal(loaded[name], tensor), (written_by, name)
            assert model.decoder.weight is model.get_input_embeddings().weight
        groups = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        assert groups == [{k: v for k, v in group.items() if k != "params"}
                          for group in make_optimizer(tiny_model(0)).param_groups], groups
        losses = {step: train_step(model, optimizer, step, rank) for step in (3, 4)}
        weights = full_model_state(model)
        if is_main:
            write_model_folder(work / "final-resumed", model, None, weights)
            (work / "losses-resumed.json").write_text(json.dumps(losses))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    # Every file is written and both ranks passed the barrier: leave without interpreter finalization. FSDP2's
    # device mesh still holds the gloo group, so its C++ threads would otherwise be torn down during finalization,
    # which once aborted rank 1 ("terminate called without an active exception", SIGABRT) under a loaded CI
    # machine after all the work was done (pytorch/pytorch#179291 describes that teardown race).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# --------------------------------------------------------------------------------------------------- the test
def launch(phase: str, work: Path) -> None:
    import socket

    with socket.socket() as probe:  # a free port: a fixed one collides with another run on this machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_port", str(port),
         str(Path(__file__).resolve()), phase, str(work)],
        env=env, cwd=work, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"{phase}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


def assert_same_files(a: Path, b: Path) -> None:
    """The same files in both folders (the model's code included), byte for byte."""
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or not torch.distributed.is_available(),
                    reason="gloo multi-process test written for Linux")
def test_fsdp2_checkpoints_gather_resume_and_match_one_process(tmp_path):
    from hf_pretrain.training.checkpoint import (
        TrainerState,
        load_model_weights,
        optimizer_from_files,
        save_checkpoint,
        write_model_folder,
    )

    launch("train", tmp_path)
    step2 = tmp_path / "sharded" / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in (tmp_path / "sharded" / "checkpoints").iterdir()) == ["step-00000002",
                                                                                        "step-00000004"]

    # (b) One process, unsharded: the checkpoint the 2 sharded processes wrote loads into it in full.
    model = tiny_model(seed=2)
    optimizer = make_optimizer(model)
    load_model_weights(model, step2)
    optimizer_from_files(optimizer, step2)
    reference = load_file(str(tmp_path / "reference-step2.safetensors"))
    loaded = full_tensors(model, optimizer)
    assert loaded.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(loaded[name], tensor), name
    assert model.decoder.weight is model.get_input_embeddings().weight
    assert optimizer.state_dict()["param_groups"] == make_optimizer(tiny_model(0)).state_dict()["param_groups"]
    # Written again by one process: the same files, byte for byte (either writer's checkpoint resumes the other).
    one = save_checkpoint(tmp_path / "one", model, None, optimizer, TrainerState(step=2), keep_last=5,
                          recipe_yaml=RECIPE)
    assert_same_files(one, step2)
    assert (step2 / "model" / "modeling_pretrain_encoder.py").is_file()  # our code, not torch's FSDP files

    # The sharded run trained what one process trains on the same global batches (up to summation order).
    uninterrupted = {int(k): v for k, v in json.loads((tmp_path / "losses-uninterrupted.json").read_text()).items()}
    single = tiny_model(seed=0)
    single_optimizer = make_optimizer(single)
    single_losses = {step: train_step(single, single_optimizer, step, None) for step in (1, 2)}
    for step in (1, 2):
        assert single_losses[step] == pytest.approx(uninterrupted[step], abs=1e-5)
    for name, tensor in full_tensors(single, single_optimizer).items():
        assert torch.allclose(tensor, reference[name], atol=1e-5), name

    # (c) The final folder written from the gathered state equals the one one process writes from those weights.
    weights = load_file(str(tmp_path / "reference-step4.safetensors"))
    plain = tiny_model(seed=3)
    result = plain.load_state_dict({k.split("/", 1)[1]: v for k, v in weights.items() if k.startswith("weights/")},
                                   strict=False)
    assert result.missing_keys == ["decoder.weight"] and not result.unexpected_keys
    plain.tie_weights()
    write_model_folder(tmp_path / "final-one", plain, None)
    final_sharded = load_file(str(tmp_path / "final-sharded" / "model.safetensors"))
    final_one = load_file(str(tmp_path / "final-one" / "model.safetensors"))
    assert final_sharded.keys() == final_one.keys()
    for name in final_one:
        assert torch.equal(final_sharded[name], final_one[name]), name
    assert_same_files(tmp_path / "final-one", tmp_path / "final-sharded")

    # (a) Fresh sharded processes resume from either step-2 checkpoint and continue like the uninterrupted run.
    launch("resume", tmp_path)
    resumed = {int(k): v for k, v in json.loads((tmp_path / "losses-resumed.json").read_text()).items()}
    assert resumed == {3: uninterrupted[3], 4: uninterrupted[4]}
    assert_same_files(tmp_path / "final-resumed", tmp_path / "final-sharded")


if __name__ == "__main__":
    launched(sys.argv[1], Path(sys.argv[2]))

"""train.optimizer=muon: Muon for the hidden matrices, AdamW (torch's own arithmetic) for the rest, in one optimizer
that resumes from its state dict; which parameters take which rule; a run through the loop."""

from __future__ import annotations

import io
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from hf_pretrain.models import PretrainDecoderConfig, PretrainDecoderForCausalLM
from hf_pretrain.training.optimizers import MuonWithAdamW, orthogonalize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (32, 32)])
def test_orthogonalize_gives_a_near_orthogonal_matrix_of_the_same_shape(shape):
    torch.manual_seed(0)
    matrix = torch.randn(*shape) @ torch.diag(torch.logspace(-1, 0, shape[1]))  # singular values over a decade
    result = orthogonalize(matrix)
    assert result.shape == matrix.shape and result.dtype == matrix.dtype
    singular = torch.linalg.svdvals(result)
    # Jordan's quintic iteration lands the singular values in roughly [0.7, 1.2], not exactly at 1 (and leaves
    # directions far below the matrix's norm small: five steps are not enough to raise them).
    assert singular.min() > 0.5 and singular.max() < 1.3, singular
    # Same singular vectors: the result is U f(S) V^T, so it aligns with U V^T.
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    assert torch.nn.functional.cosine_similarity((u @ vh).flatten(), result.flatten(), dim=0) > 0.97


@pytest.mark.parametrize("shape", [(48, 16), (16, 48)])
def test_orthogonalize_treats_each_matrix_of_a_stack_on_its_own(shape):
    """A (k, m, n) stack (what the Muon step hands it: the same-shaped matrices of a model) gives each matrix the
    result it gets alone, however different their scales."""
    torch.manual_seed(0)
    stack = torch.randn(3, *shape) * torch.tensor([1e-3, 1.0, 50.0]).view(3, 1, 1)
    batched = orthogonalize(stack)
    assert batched.shape == stack.shape
    for matrix, result in zip(stack, batched):
        torch.testing.assert_close(result, orthogonalize(matrix), rtol=1e-5, atol=1e-6)


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))


def steps(optimizer, model, count: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        inputs = torch.randn(5, 8, generator=generator)
        model(inputs).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()


def test_the_adamw_groups_step_exactly_like_torch_adamw():
    ours, reference = tiny_model(), tiny_model()
    settings = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    hybrid = MuonWithAdamW([{"params": ours.parameters(), "weight_decay": 0.1}], **settings)
    adamw = torch.optim.AdamW([{"params": reference.parameters(), "weight_decay": 0.1}], fused=True, **settings)
    steps(hybrid, ours, 3)
    steps(adamw, reference, 3)
    for a, b in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert hybrid.state_dict()["state"][0].keys() == adamw.state_dict()["state"][0].keys()
    for ours_state, reference_state in zip(hybrid.state_dict()["state"].values(), adamw.state_dict()["state"].values()):
        for key, value in reference_state.items():  # same values, dtypes and devices (the step count included)
            assert torch.equal(ours_state[key], value) and ours_state[key].dtype == value.dtype, key
            assert ours_state[key].device == value.device, key


def test_a_muon_step_is_the_scaled_orthogonalized_nesterov_momentum_with_decoupled_decay():
    model = tiny_model()
    weight = model[0].weight
    before = weight.detach().clone()
    optimizer = MuonWithAdamW([{"params": [weight], "muon": True, "weight_decay": 0.1}], lr=0.02, momentum=0.95)
    model(torch.randn(5, 8)).sum().backward()
    grad = weight.grad.clone()
    optimizer.step()
    momentum = 0.05 * grad  # buffer.lerp_(grad, 1 - 0.95) from zeros
    update = orthogonalize(grad.lerp(momentum, 0.95))
    expected = before * (1 - 0.02 * 0.1) - 0.02 * 0.2 * math.sqrt(16) * update
    torch.testing.assert_close(weight.detach(), expected)


def test_muon_refuses_a_parameter_that_is_not_a_matrix():
    with pytest.raises(ValueError, match=r"shape \(16,\) was put in a muon group"):
        MuonWithAdamW([{"params": [tiny_model()[0].bias], "muon": True}], lr=1e-3)


def test_a_reloaded_state_dict_continues_exactly():
    def build(model):
        return MuonWithAdamW([{"params": [model[0].weight, model[2].weight], "muon": True, "weight_decay": 0.1},
                              {"params": [model[0].bias, model[1].weight, model[1].bias, model[2].bias],
                               "weight_decay": 0.0}], lr=1e-2)

    straight, resumed = tiny_model(), tiny_model()
    first = build(straight)
    steps(first, straight, 2, seed=1)
    resumed.load_state_dict(straight.state_dict())
    second = build(resumed)
    saved = io.BytesIO()  # through bytes, as a checkpoint is: state_dict() returns the live buffers
    torch.save(first.state_dict(), saved)
    second.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    steps(first, straight, 2, seed=2)
    steps(second, resumed, 2, seed=2)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_build_optimizer_gives_muon_the_hidden_matrices_only(tmp_path):
    from hf_pretrain.recipe import recipe_from_dict
    from hf_pretrain.training.optimizers import build_optimizer

    recipe = recipe_from_dict({"objective": "clm", "train": {"optimizer": "muon", "weight_decay": 0.1, "max_steps": 1},
                               "output": {"dir": str(tmp_path)}})
    for tied in (True, False):
        config = PretrainDecoderConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=16, tie_word_embeddings=tied)
        model = PretrainDecoderForCausalLM(config)
        optimizer = build_optimizer(model, recipe.train, fused=False)
        assert isinstance(optimizer, MuonWithAdamW)
        muon = {id(p) for group in optimizer.param_groups if group["muon"] for p in group["params"]}
        names = {name for name, p in model.named_parameters() if id(p) in muon}
        matrices = {name for name, p in model.named_parameters() if p.ndim == 2}
        outputs = {name for name, p in model.named_parameters()
                   if any(p is q for q in model.get_output_embeddings().parameters())}
        inputs = {name for name, p in model.named_parameters() if p is model.get_input_embeddings().weight}
        assert names == matrices - outputs - inputs and names, (names, matrices)
        decayed = [group for group in optimizer.param_groups if group["muon"]]
        assert all(group["weight_decay"] == 0.1 for group in decayed)
        assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_a_flagged_step_leaves_weights_and_state_as_they_were_without_a_host_read():
    """found_inf (a device tensor, as the loop sets it for a non-finite step): NaN gradients leak into neither the
    Muon nor the AdamW half, and the next unflagged step is the one an unskipped run takes."""
    def build(model):
        return MuonWithAdamW([{"params": [model[0].weight, model[2].weight], "muon": True, "weight_decay": 0.1},
                              {"params": [model[0].bias, model[1].weight, model[1].bias, model[2].bias],
                               "weight_decay": 0.0}], lr=1e-2)

    skipping, straight = tiny_model(), tiny_model()
    flagged, plain = build(skipping), build(straight)
    steps(flagged, skipping, 2)
    steps(plain, straight, 2)
    before = [p.detach().clone() for p in skipping.parameters()]
    state = {i: {k: v.clone() for k, v in flagged.state[p].items()} for i, p in enumerate(skipping.parameters())}
    for parameter in skipping.parameters():
        parameter.grad = torch.full_like(parameter, float("nan"))
    flagged.found_inf = torch.tensor(1.0)
    flagged.step()
    flagged.zero_grad()
    for i, parameter in enumerate(skipping.parameters()):
        assert torch.equal(parameter, before[i])
        for key, value in state[i].items():
            assert torch.equal(flagged.state[parameter][key], value), key
    flagged.found_inf = torch.tensor(0.0)
    steps(flagged, skipping, 1, seed=5)
    steps(plain, straight, 1, seed=5)
    for a, b in zip(skipping.parameters(), straight.parameters()):
        assert torch.equal(a, b)


# Run folders of 4-step recipes whose step-2 checkpoint was written by the optimizer grouping of commit 3df91c2, before the groups
# had names (tests/training/fixtures/checkpoints-3df91c2: the model folders without their .py copies). Their
# recipes read `corpus.txt` from the working directory; `write_fixture_corpus` makes the same file.
BEFORE_NAMED_GROUPS = Path(__file__).parent / "fixtures" / "checkpoints-3df91c2"


def write_fixture_corpus(path: Path) -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(60)] + ["alpha", "beta", "gamma", "delta"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(300)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("run", ["mlm-muon", "dae-adamw"])
def test_a_checkpoint_written_before_the_groups_had_names_resumes_exactly(tmp_path, monkeypatch, run):
    """Muon, token-embedding and encoder groups: the old checkpoint's optimizer state lands on the same parameters,
    so resuming it ends with the weights of a run that never stopped."""
    from hf_pretrain.recipe import load_recipe
    from hf_pretrain.training.loop import Pretraining

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_PRETRAIN_CACHE", str(tmp_path / "cache"))
    write_fixture_corpus(tmp_path / "corpus.txt")
    shutil.copytree(BEFORE_NAMED_GROUPS / run, tmp_path / run)

    def train(output_dir: str):
        recipe = load_recipe(str(tmp_path / run / "recipe.yaml"), [f"output.dir={output_dir}"])
        pretraining = Pretraining(recipe)
        pretraining.run()
        return pretraining

    resumed = train(run)
    assert resumed.state.step == 4 and resumed.resume_from.name == "step-00000002"
    uninterrupted = train("fresh")
    for (name, weight), (_, expected) in zip(resumed.model.state_dict().items(), uninterrupted.model.state_dict().items()):
        assert torch.equal(weight, expected), name

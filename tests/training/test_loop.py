"""The loop in process: the NaN/Inf guard skips a step without touching weights or optimizer state, and stops
the run with a clear message after several in a row, leaving the last good checkpoint on disk; corpus statistics
set before step 1 (spectral embeddings, sentence-pooling weights) and after the last step (the sentence-vector
centre); the encoder's own lr."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from hf_pretrain.recipe import recipe_from_dict
from hf_pretrain.training.checkpoint import find_resumable_checkpoint
from hf_pretrain.training.loop import Pretraining, TrainingDiverged


def tiny_recipe(run_dir, **train):
    return recipe_from_dict(
        {
            "model": {"config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "intermediate_size": 64, "max_position_embeddings": 32}},
            "tokenizer": {"vocab_size": 256},
            "data": {"source": "builtin", "block_size": 32, "max_documents": 120, "validation_fraction": 0.1},
            "train": {"batch_size": 4, "max_steps": 8, "eval_every": 100, "eval_batches": 1, "save_every": 2,
                      "max_bad_steps": 3, **train},
            "output": {"dir": str(run_dir), "log_with": [], "progress_bar": False},
        }
    )


class PoisonedSteps(Pretraining):
    """Returns a non-finite loss on the chosen (1-based) optimizer steps and records the weights around them."""

    poisoned: set[int] = set()

    def forward_loss(self, batch, items_in_step):
        loss = super().forward_loss(batch, items_in_step)
        if self.state.step + 1 in self.poisoned:
            return loss * float("nan")
        return loss


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_PRETRAIN_CACHE", str(tmp_path / "cache"))


def snapshot(run):
    model = run.accelerator.unwrap_model(run.model)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = {k: {n: t.clone() for n, t in v.items() if torch.is_tensor(t)} for k, v in run.optimizer.state.items()}
    return weights, optimizer


@pytest.mark.parametrize("optimizer, log_every", [("adamw", 1), ("adamw", 3), ("muon", 3)])
def test_a_non_finite_step_is_skipped_without_touching_weights_or_optimizer(tmp_path, optimizer, log_every):
    """Fused AdamW and MuonWithAdamW skip on a device flag: with log_every=3 the step is counted when the record at
    step 6 reads the flags, and the record says so."""
    class Recorder(PoisonedSteps):
        poisoned = {4}
        before_step = {}  # 1-based step -> (weights, optimizer state) just before it runs

        def forward_loss(self, batch, items_in_step):
            Recorder.before_step.setdefault(self.state.step + 1, snapshot(self))
            return super().forward_loss(batch, items_in_step)

    run = Recorder(tiny_recipe(tmp_path / "run", optimizer=optimizer, log_every=log_every, save_every=100))
    assert run.skips_on_device
    run.run()
    weights_4, optimizer_4 = Recorder.before_step[4]
    weights_5, optimizer_5 = Recorder.before_step[5]  # = after the poisoned step 4
    for name in weights_4:
        assert torch.equal(weights_4[name], weights_5[name]), name
    assert optimizer_4.keys() == optimizer_5.keys() and optimizer_4
    for key in optimizer_4:
        for name in optimizer_4[key]:
            assert torch.equal(optimizer_4[key][name], optimizer_5[key][name])
    weights_6, _ = Recorder.before_step[6]
    assert any(not torch.equal(weights_5[n], weights_6[n]) for n in weights_5)  # training went on
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["skipped"]) for r in records if "skipped" in r] == [(4 if log_every == 1 else 6, 1)]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["skipped_steps"] == 1


@pytest.mark.parametrize("log_every", [1, 3])
def test_several_non_finite_steps_in_a_row_stop_the_run_with_the_last_good_checkpoint(tmp_path, log_every):
    """With log_every=3 the streak 5-7 is read at step 8's record (a checkpoint step), after step 8 itself was
    taken: the run still stops, and step 8 is not saved over the good step-4 checkpoint."""
    class Diverging(PoisonedSteps):
        poisoned = {5, 6, 7}

    run = Diverging(tiny_recipe(tmp_path / "run", log_every=log_every, max_steps=10))
    with pytest.raises(TrainingDiverged) as error:
        run.run()
    message = str(error.value)
    assert "3 steps in a row had a non-finite loss" in message and "train.max_bad_steps=3" in message
    assert "step-00000004" in message and "lower train.lr" in message
    good = find_resumable_checkpoint(tmp_path / "run")
    assert good is not None and good.name == "step-00000004"
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("objective", ["mlm", "mlm-streaming", "dae"])
def test_spectral_embedding_init_sets_the_rows_of_corpus_tokens_before_step_one(tmp_path, objective, caplog):
    caplog.set_level(logging.INFO, logger="hf_pretrain")

    def embeddings(embedding_init):
        recipe = tiny_recipe(tmp_path / f"{objective}-{embedding_init}")
        recipe.objective = objective.removesuffix("-streaming")
        recipe.data.streaming = objective.endswith("-streaming")
        recipe.model.embedding_init = embedding_init
        caplog.clear()
        run = Pretraining(recipe)
        weight = run.accelerator.unwrap_model(run.model).get_input_embeddings().weight.detach().clone()
        return weight, run.objective.tokenizer, [record.getMessage() for record in caplog.records]

    random_rows, tokenizer, _ = embeddings("random")
    spectral_rows, _, messages = embeddings("spectral")
    assert any(m.startswith("spectral token embeddings: TF-IDF SVD of") for m in messages)
    changed = (spectral_rows != random_rows).any(dim=1)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    assert not changed[special].any()  # [CLS], [SEP], [PAD], [MASK] keep their random rows
    assert changed.sum() > 0.5 * len(tokenizer)  # most of the vocabulary occurs in 120 docstrings of a 256-token BPE
    assert float(spectral_rows[changed].std()) == pytest.approx(float(random_rows[changed].std()), rel=1e-3)


def test_dae_sentence_pooling_statistics_come_from_the_training_documents(tmp_path):
    recipe = tiny_recipe(tmp_path / "run", max_steps=2)
    recipe.objective = "dae"
    recipe.model.config.update(pooling="mean", sentence_pooling="weighted_mean")
    run = Pretraining(recipe)
    run.run()
    base = run.accelerator.unwrap_model(run.model).base_model
    rows = run.objective.train_dataset["input_ids"]

    counts = torch.zeros(base.config.vocab_size)
    for ids in rows:
        counts += torch.bincount(torch.as_tensor(np.asarray(ids)), minlength=base.config.vocab_size)
    expected = 1e-3 / (1e-3 + counts / counts.sum())  # a / (a + p(token)); never-seen ids: 1
    torch.testing.assert_close(base.token_pooling_weights, expected)
    assert base.token_pooling_weights[run.objective.tokenizer.cls_token_id] < 0.2  # in every document

    # The centre is the mean raw sentence vector of the training documents: centred, they average to zero.
    assert float(base.pooled_center.norm()) > 0
    with torch.no_grad():
        vectors = torch.cat([base(torch.as_tensor(np.asarray(ids))[None]).pooler_output for ids in rows])
    assert float(vectors.mean(dim=0).abs().max()) < 1e-4 * float(base.pooled_center.abs().max()) + 1e-6

    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert saved["sentence_pooling"] == "weighted_mean"


def test_encoder_lr_scale_gives_the_encoder_its_own_learning_rate(tmp_path):
    recipe = tiny_recipe(tmp_path / "run", max_steps=3, schedule="constant", warmup=0)
    recipe.objective = "dae"
    recipe.train.encoder_lr_scale = 0.25
    run = Pretraining(recipe)
    run.run()
    model = run.accelerator.unwrap_model(run.model)
    encoder = {id(p) for p in model.get_encoder().parameters()}
    seen = set()
    for group in run.optimizer.param_groups:
        in_encoder = {id(p) in encoder for p in group["params"]}
        assert len(in_encoder) == 1  # a group is all encoder or all decoder
        scale = 0.25 if in_encoder.pop() else 1.0
        assert group["lr"] == pytest.approx(recipe.train.lr * scale)
        seen |= {id(p) for p in group["params"]}
    assert encoder <= seen and len(seen) == len({id(p) for p in model.parameters()})


def test_the_default_tracker_writes_tensorboard_events(tmp_path):
    """output.log_with's default is tensorboard (the `tensorboard` extra, installed with the tests): a run writes
    event files whose per-step losses are the ones in metrics.jsonl."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = tiny_recipe(tmp_path / "run", max_steps=3, save_every=100)
    recipe.output.log_with = ["tensorboard"]
    Pretraining(recipe).run()
    folders = {path.parent for path in (tmp_path / "run").rglob("events.out.tfevents.*")}
    accumulators = [EventAccumulator(str(folder)).Reload() for folder in folders]
    with_loss = [a for a in accumulators if "loss" in a.Tags()["scalars"]]
    assert len(with_loss) == 1, f"expected one event folder with the loss, got {sorted(map(str, folders))}"
    logged = [(event.step, event.value) for event in with_loss[0].Scalars("loss")]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    expected = [(r["step"], r["loss"]) for r in records if "loss" in r and "skipped" not in r]
    assert [step for step, _ in logged] == [step for step, _ in expected] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-6)
    # Every record reaches the trackers: the eval before the first step too, at step 0.
    evals = [(event.step, event.value) for event in with_loss[0].Scalars("eval/loss")]
    expected_evals = [(r["step"], r["eval/loss"]) for r in records if "eval/loss" in r]
    assert [step for step, _ in evals] == [step for step, _ in expected_evals] == [0, 3]
    np.testing.assert_allclose([v for _, v in evals], [v for _, v in expected_evals], rtol=1e-6)


def test_token_embeddings_are_not_weight_decayed_whatever_their_name(tmp_path):
    """Our encoder names its matrix tok_embeddings, the decoder embed_tokens (tied to its output matrix)."""
    from hf_pretrain.models import PretrainDecoderConfig, PretrainDecoderForCausalLM
    from hf_pretrain.training.optimizers import build_optimizer

    config = PretrainDecoderConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=16)
    model = PretrainDecoderForCausalLM(config)
    optimizer = build_optimizer(model, tiny_recipe(tmp_path, weight_decay=0.1).train, fused=False)
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert id(model.get_input_embeddings().weight) not in decayed
    assert id(model.model.layers[0].mlp.up_proj.weight) in decayed


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_embedding_lr_scale_gives_the_token_embedding_its_own_lr(tmp_path, optimizer):
    """train.embedding_lr_scale: the token embedding matrix (and it alone) forms a group whose lr the loop scales;
    trained for 3 steps at a scale of 1e-6 it stays where it started, to within lr x 1e-6 per step, while the
    layers move; at the default of 1 the groups are those of before the setting existed."""
    from hf_pretrain.models import PretrainDecoderConfig, PretrainDecoderForCausalLM
    from hf_pretrain.training.optimizers import build_optimizer

    config = PretrainDecoderConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=16)
    model = PretrainDecoderForCausalLM(config)
    embedding = model.get_input_embeddings().weight
    default = build_optimizer(model, tiny_recipe(tmp_path, optimizer=optimizer).train, fused=False)
    assert all(group["lr_scale"] == 1.0 for group in default.param_groups)
    scaled = build_optimizer(model, tiny_recipe(tmp_path, optimizer=optimizer, embedding_lr_scale=0.25).train,
                             fused=False)
    own = [group for group in scaled.param_groups if any(p is embedding for p in group["params"])]
    assert len(own) == 1 and own[0]["params"] == [embedding] and own[0]["lr_scale"] == 0.25
    assert own[0]["weight_decay"] == 0.0 and not own[0].get("muon", False)
    assert [len(g["params"]) for g in scaled.param_groups if g is not own[0]] == [
        len(g["params"]) - sum(p is embedding for p in g["params"]) for g in default.param_groups]

    run = Pretraining(tiny_recipe(tmp_path / "run", optimizer=optimizer, embedding_lr_scale=1e-6, max_steps=3,
                                  lr=1e-2, warmup=0))
    trained = run.model  # the objective's model, as the loop trains it
    start_embedding = trained.get_input_embeddings().weight.detach().clone()
    start_layers = [p.detach().clone() for n, p in trained.named_parameters() if "layers.0" in n and p.ndim == 2]
    run.run()
    moved = (trained.get_input_embeddings().weight.detach() - start_embedding).abs().max().item()
    assert moved <= 3 * 1e-2 * 1e-6 * 1.01
    layers = [p.detach() for n, p in trained.named_parameters() if "layers.0" in n and p.ndim == 2]
    assert all((after - before).abs().max() > 1e-4 for before, after in zip(start_layers, layers))


def test_a_deepspeed_launch_is_refused_before_any_work(tmp_path, monkeypatch):
    """DeepSpeed has not run with this loop: `accelerate launch` with a DeepSpeed config (it sets
    ACCELERATE_USE_DEEPSPEED) stops at setup with one line pointing to FSDP2 or DDP; nothing is written."""
    from hf_pretrain.recipe import RecipeError
    from hf_pretrain.training.devices import refuse_unverified_engine

    refuse_unverified_engine(False)
    with pytest.raises(RecipeError, match="distributed_type=DEEPSPEED is not supported") as error:
        refuse_unverified_engine(True)
    assert "fsdp.yaml" in str(error.value) and "ddp.yaml" in str(error.value) and "\n" not in str(error.value)

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(RecipeError, match="DEEPSPEED is not supported"):
        Pretraining(tiny_recipe(tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_records_every_log_every_steps_average_the_steps_since_the_last(tmp_path):
    """train.log_every=3 with a checkpoint every 4 steps: records at steps 3, 6 and 8 (the last step) and before each
    save (4); a record's loss and grad norm are the means over its steps of a run that records every step (the
    training itself is the same)."""
    from hf_pretrain.recipe import RecipeError

    def train_records(name, **train):
        recipe = tiny_recipe(tmp_path / name, **{"max_steps": 8, "save_every": 4, **train})
        recipe.tokenizer.kind = "bpe"  # trained the same every time (WordPiece breaks ties in hash-map order)
        Pretraining(recipe).run()
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in records if "loss" in r}

    every_step = train_records("every-step")
    every_third = train_records("every-third", log_every=3)
    assert sorted(every_step) == list(range(1, 9)) and sorted(every_third) == [3, 4, 6, 8]
    for step, first in ((3, 1), (4, 4), (6, 5), (8, 7)):
        window = [every_step[s] for s in range(first, step + 1)]
        assert every_third[step]["loss"] == pytest.approx(np.mean([r["loss"] for r in window]), rel=1e-6)
        assert every_third[step]["grad_norm"] == pytest.approx(np.mean([r["grad_norm"] for r in window]), rel=1e-6)
        assert every_third[step]["lr"] == every_step[step]["lr"] and every_third[step]["tokens"] == every_step[step]["tokens"]

    with pytest.raises(RecipeError, match=r"train.log_every=0 is not allowed; it must be >= 1"):
        tiny_recipe(tmp_path / "bad", log_every=0)


def test_fp16_skips_keep_the_grad_scaler_usable_and_leave_adamw_untouched():
    """Unverified on a GPU (fp16 autocast needs one); here a CPU GradScaler in Accelerate's optimizer wrapper. A
    skipped step must close the scaler's step (else the next unscale_ raises "unscale_() has already been called"),
    lower its scale on an overflow, and leave weights and AdamW's state as they were."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from hf_pretrain.training.step_outcomes import FP16_OVERFLOW, NON_FINITE, next_bad_streak, step_or_skip

    Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = AcceleratedOptimizer(torch.optim.AdamW(model.parameters()),
                                     scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))
    scaler = optimizer.scaler

    def one_step(loss_factor: float):
        loss = model(torch.ones(1, 4)).sum() * loss_factor
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer.optimizer)  # what clipping does under fp16
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        skipped = step_or_skip(optimizer, bool(torch.isfinite(loss)), bool(torch.isfinite(norm)))
        optimizer.zero_grad(set_to_none=True)
        return skipped

    assert one_step(1.0) is None
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.optimizer.state.items()}
    scale = scaler.get_scale()
    # A finite loss whose scaled gradients overflow, then a non-finite loss, twice in a row each.
    outcomes = [one_step(1e38), one_step(1e38), one_step(float("nan")), one_step(float("inf"))]
    assert outcomes == [FP16_OVERFLOW, FP16_OVERFLOW, NON_FINITE, NON_FINITE]
    assert scaler.get_scale() == scale / 16  # every skipped step had overflowing gradients: halved each time
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    for parameter, state in optimizer.optimizer.state.items():
        for key, value in state.items():
            assert torch.equal(value, moments[id(parameter)][key]), key  # moments and the step count
    assert one_step(1.0) is None  # no "unscale_() has already been called"
    assert not torch.equal(model.weight, weights["weight"])

    streak = 0
    for skipped in [NON_FINITE, FP16_OVERFLOW, NON_FINITE]:
        streak = next_bad_streak(streak, skipped)
    assert streak == 2 and next_bad_streak(streak, None) == 0


def test_resume_position_moves_to_the_same_example_or_refuses(tmp_path):
    """A checkpoint of N processes x B rows, b batches into its epoch, sits at row b x N x B; another launch skips
    to that row, or is refused (naming the numbers) where its batches cannot land on it."""
    from pathlib import Path

    from hf_pretrain.recipe import RecipeError
    from hf_pretrain.training.checkpoint import TrainerState
    from hf_pretrain.training.resume import resume_position

    step = Path("step-00000005")
    saved = TrainerState(step=5, epoch=1, batches_in_epoch=5, num_processes=2, batch_size=4)  # row 40
    assert resume_position(saved, 4, 2, False, step) == 5
    assert resume_position(saved, 8, 1, False, step) == 5
    assert resume_position(saved, 4, 1, False, step) == 10
    assert resume_position(saved, 2, 4, False, step) == 5
    assert resume_position(TrainerState(batches_in_epoch=7), 4, 2, False, step) == 7  # written before counts were kept
    with pytest.raises(RecipeError) as error:
        resume_position(saved, 4, 4, False, step)  # 16 rows at a time do not land on row 40
    assert "step-00000005 stopped 40 examples into epoch 1" in str(error.value) and "does not divide 40" in str(error.value)
    assert resume_position(saved, 4, 1, True, step) == 10  # the objective's own batches: counted in its batches
    with pytest.raises(RecipeError, match=r"train.batch_size=8 differs from the 4 .* resume with train.batch_size=4"):
        resume_position(saved, 8, 1, True, step)


def test_one_process_counts_tokens_and_flops_when_a_record_is_written(tmp_path):
    """Without a token budget, one process needs a step's tokens and FLOPs only for the metrics: they are counted
    (a device-to-host read on a GPU) when the record is written, not at every step, and add up to the same totals."""
    counted_at = []

    def run(name, log_every, **train):
        pretraining = Pretraining(tiny_recipe(tmp_path / name, log_every=log_every, save_every=100, **train))
        count_tokens = pretraining.objective.count_tokens

        def counting(batch):
            counted_at.append((name, pretraining.state.step))
            return count_tokens(batch)

        pretraining.objective.count_tokens = counting
        return pretraining, pretraining.run()

    lazy, lazy_summary = run("lazy", 4)
    assert lazy.counts_at_record
    # (step_flops counts a step's tokens too: two calls per step.) Every call at a record, none in between.
    assert sorted(set(step for name, step in counted_at if name == "lazy")) == [4, 8]
    eager, eager_summary = run("eager", 1, max_tokens=10**9)  # a token budget: counted at every step
    assert not eager.counts_at_record
    assert sorted(set(step for name, step in counted_at if name == "eager")) == list(range(9))  # every step
    assert lazy_summary["tokens"] == eager_summary["tokens"] > 0

    def records(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in line and '"tokens"' in line]

    assert records("lazy")[-1]["tokens"] == records("eager")[-1]["tokens"] == lazy_summary["tokens"]
    assert all(record["mfu"] > 0 for record in records("lazy"))

"""The pretraining loop: one loop, read top to bottom — data, counts, lr, forward-backward, clip and step, record,
eval and save.

Everything objective-specific (model, data, noise, eval metrics) comes from an `Objective`
(`hf_pretrain.training.objectives`); multi-GPU, multi-node and FSDP come from `accelerate launch`. The pieces the
loop calls live beside it: the machine (devices.py), the batches (batches.py), the optimizer and its groups
(optimizers.py), the lr schedule (schedules.py), skipped steps and the log window (step_outcomes.py), metrics and
the progress bar (metrics.py), checkpoints (checkpoint.py) and the resume policy (resume.py).

Exact resume: the data order is Accelerate's seedable sampler (seed + epoch), or for a streamed corpus the saved
state of every process's readers (streamed.py); the noise is a pure function of (seed, epoch, example index),
dropout is reseeded from (seed, step, rank) every step, and checkpoints hold weights, optimizer state and the
position in the data. A resumed run repeats the uninterrupted run's steps bit for bit
on CPU (budgets in steps or tokens; a wall-clock budget is by nature not repeatable).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch

from ..folders import swap_into_place, write_complete_marker
from ..objectives import objective_spec
from ..recipe import Recipe
from .batches import held_out_metrics, is_streamed, prepare_batches, source_eval_loaders
from .checkpoint import (
    TrainerState,
    acquire_run_lock,
    find_resumable_checkpoint,
    full_model_state,
    load_model_weights,
    load_trainer_state,
    optimizer_from_files,
    recover_interrupted_swaps,
    release_run_lock,
    save_checkpoint,
    set_aside_newer_checkpoints,
    step_of,
    write_model_folder,
)
from .devices import build_accelerator, describe_hardware, fused_optimizer_fits, resolved_precision_name
from .metrics import MetricsLog, ProgressBar, peak_tflops, tracker_config, truncate_metrics
from .objectives import build_objective
from .optimizers import build_optimizer
from .probe import LinearProbe, load_probe_set
from .resume import check_resume_recipe, move_run_aside, resume_position
from .schedules import lr_multiplier
from .step_outcomes import (
    LogWindow,
    divergence_message,
    next_bad_streak,
    plain_tensor,
    skips_on_device,
    step_or_skip,
    step_unless_flagged,
    total_grad_norm,
)

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM or SIGINT arrived: a checkpoint of the current step was saved and the run stopped."""

    def __init__(self, signal_number: int, checkpoint: Path):
        self.signal_number = signal_number
        self.checkpoint = checkpoint
        super().__init__(
            f"stopped by signal {signal_number}; saved {checkpoint}. Run the same command again to resume."
        )


class Pretraining:
    """Holds what the loop needs; `run()` is the loop. Subclass and override `forward_loss` in tests."""

    def __init__(self, recipe: Recipe, objective_factory=None, restart: bool = False):
        """`restart`: an earlier run in output.dir is moved aside into RUN/replaced-<time>/ (nothing is deleted)
        and training starts over; without it a rerun resumes, and is refused if the recipe changed."""
        self.recipe = recipe
        self.run_dir = Path(recipe.output.dir)
        self.lock = None
        try:
            self.setup(objective_factory or build_objective, restart)
        except BaseException:
            release_run_lock(self.lock)
            raise

    # ------------------------------------------------------------------------------------------- setup
    def setup(self, objective_factory, restart: bool) -> None:
        """Everything before the first step, each of it checked before any training compute: the machine, the run
        folder and the checkpoint to resume (its recipe against this one), the objective (tokenizer, data, model,
        noise), the optimizer and the loaders."""
        recipe, train = self.recipe, self.recipe.train
        # The probe's labeled set is read and checked first (a bad file is refused before the run folder, the
        # tokenizer or the data are touched); it is tokenized once the tokenizer exists.
        probe_set = load_probe_set(recipe) if objective_spec(recipe.objective).reads_text else None
        self.accelerator = build_accelerator(recipe, self.run_dir)
        self.is_main = self.accelerator.is_main_process
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.lock = acquire_run_lock(self.run_dir)
            recover_interrupted_swaps(self.run_dir)
            if restart:
                move_run_aside(self.run_dir)
        self.accelerator.wait_for_everyone()
        self.resume_from = find_resumable_checkpoint(self.run_dir, report=self.is_main)
        # Its trainer state, read once: the recipe check, the data position and `resume` all use it.
        self.resumed_state = load_trainer_state(self.resume_from) if self.resume_from is not None else None
        if self.resume_from is not None:
            check_resume_recipe(self.resume_from, self.run_dir, recipe, self.resumed_state,
                                self.accelerator.num_processes)
        if self.is_main:
            (self.run_dir / "recipe.yaml").write_text(recipe.to_yaml())
        self.accelerator.wait_for_everyone()

        self.objective = objective_factory(recipe, self.accelerator, self.run_dir)
        self.probe = None if probe_set is None else LinearProbe(
            probe_set, self.objective.tokenizer, recipe.data.block_size, recipe.probe.l2, recipe.probe.pooling)
        model = self.objective.model
        if train.activation_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        optimizer = build_optimizer(model, train, fused=fused_optimizer_fits(self.accelerator))
        # A streamed corpus's batches come from this process's own readers, resumed from the checkpoint's stream
        # state (a resume on another reading layout is refused here, before any step).
        self.model, self.optimizer, self.batches, self.eval_loader = prepare_batches(
            self.accelerator, self.objective, model, optimizer, train, self.resume_from)
        # A mixture's held-out text per source (eval/<source>/<metric>), beside the mixed eval.
        self.eval_loaders_by_source = source_eval_loaders(self.accelerator, self.objective, train)
        if train.compile:
            self.model = torch.compile(self.model)
        self.skips_on_device = skips_on_device(self.optimizer)
        # One process without a token budget needs a step's tokens and FLOPs only for the metrics: they are
        # counted when the next record is written, so the step reads nothing back from the device.
        self.counts_at_record = self.accelerator.num_processes == 1 and not train.max_tokens
        self.peak, self.peak_source = peak_tflops(self.accelerator.device, train.precision, train.peak_tflops)
        self.metrics = MetricsLog(self.run_dir, self.accelerator)
        self.state = TrainerState(num_processes=self.accelerator.num_processes, batch_size=train.batch_size)
        self.resume_skip = None  # micro-batches of the resumed epoch to skip, per process
        if self.resume_from is not None and is_streamed(self.objective.train_dataset):  # the readers hold it
            self.resume_skip = self.resumed_state.batches_in_epoch
        elif self.resume_from is not None:  # a position this launch cannot reach exactly is refused before any step
            self.resume_skip = resume_position(self.resumed_state, train.batch_size, self.accelerator.num_processes,
                                               self.objective.train_batch_sampler is not None, self.resume_from)

    # ------------------------------------------------------------------------------------------- the loop
    def run(self) -> dict:
        """Train to the budget (or to a SIGTERM/SIGINT: checkpoint, then TrainingInterrupted); always release
        the run folder's lock."""
        import signal
        import threading

        self.stop_signal, self.interrupted = None, False
        handled = (signal.SIGTERM, signal.SIGINT)
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = {number: signal.signal(number, self.request_stop) for number in handled} if in_main_thread else {}
        try:
            return self.train_to_budget()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            release_run_lock(self.lock)

    def train_to_budget(self) -> dict:
        self.resume()
        self.accelerator.init_trackers("hf_pretrain", config=tracker_config(self.recipe.to_dict()))
        if not self.state.initial_eval:  # step 0, before any update (a resumed run has it already)
            self.state.initial_eval = self.evaluate()
            self.metrics.log({f"eval/{k}": v for k, v in self.state.initial_eval.items()}, step=0)
        self.bar = bar = ProgressBar(self.recipe.output.progress_bar and self.is_main)
        bar.show_eval(self.state.last_eval or self.state.initial_eval)
        window = LogWindow(self.accelerator.device)
        self.batches.start(self.state)
        # The budget's clock: elapsed = now - clock. The probe's seconds move it forward (kept out of the budget).
        self.clock = time.perf_counter() - self.state.elapsed_seconds
        self.elapsed_at_eval = self.state.elapsed_seconds
        self.longest_bad_streak = self.state.bad_steps_in_a_row
        self.model.train()

        while not self.should_stop():
            micro_batches, data_wait = self.batches.next_step(self.state)
            items, tokens = self.count_step(micro_batches)
            lr = self.set_lr(tokens)
            step_loss = self.forward_backward(micro_batches, items)
            grad_norm, skipped = self.clip_and_step(step_loss)
            step_seconds = self.advance(tokens)
            self.record(window, bar, micro_batches, tokens, step_loss, grad_norm, skipped, lr, step_seconds,
                        data_wait)
            self.eval_and_save()

        self.write_record(window, bar)  # steps since the last record (a stop signal, a wall-clock budget)
        bar.close()
        return self.finish()

    # ------------------------------------------------------------------------------------------- one step
    def count_step(self, micro_batches: list[dict]) -> tuple[torch.Tensor, int | None]:
        """The step's predicted items (the loss's denominator) and tokens (the budget), summed over ranks in one
        collective: a rank's tokens differ from another's when documents have different lengths. `items` has
        count_items' shape: a scalar, or one count per loss term (replaced-token detection). Tokens are None when
        they are counted at the next record instead (`counts_at_record`)."""
        local_items = sum(self.objective.count_items(b) for b in micro_batches).to(torch.int64)
        if self.counts_at_record:
            return local_items.to(self.accelerator.device), None
        local_tokens = sum(self.objective.count_tokens(b) for b in micro_batches)
        counts = torch.cat([local_items.reshape(-1), torch.tensor([local_tokens], device=local_items.device)])
        counts = self.accelerator.reduce(counts.to(self.accelerator.device), reduction="sum")
        return counts[:-1].reshape(local_items.shape), int(counts[-1])

    def set_lr(self, tokens: int | None) -> float:
        """The lr of the step about to run, scheduled for the budget's progress once it is done."""
        train = self.recipe.train
        lr = train.lr * lr_multiplier(train.schedule, self.state.step,
                                      self.progress(upcoming_step=True, upcoming_tokens=tokens or 0),
                                      train.warmup, train.decay_fraction, train.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def forward_backward(self, micro_batches: list[dict], items: torch.Tensor) -> torch.Tensor:
        """Forward and backward over the micro-batches (gradients synchronized on the last only); the step's loss,
        summed over ranks."""
        accelerator, train = self.accelerator, self.recipe.train
        step_loss = torch.zeros((), device=accelerator.device)
        for index, batch in enumerate(micro_batches):
            self.reseed_dropout(self.state.step * train.grad_accum + index)
            last = index == len(micro_batches) - 1
            with accelerator.no_sync(self.model) if not last else nullcontext():
                with accelerator.autocast():
                    loss = self.forward_loss(batch, items)
                accelerator.backward(loss)
            step_loss += loss.detach() / accelerator.num_processes
        return accelerator.reduce(step_loss, reduction="sum")

    def forward_loss(self, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        """Loss of one micro-batch, normalized by the predicted items of the whole step on all ranks, so that
        gradient accumulation and data parallelism give the gradient of one big batch."""
        loss = self.objective.loss(self.model, batch, items_in_step)
        # DDP averages gradients over ranks; undo that so the gradient is the global token mean.
        return loss * self.accelerator.num_processes

    def clip_and_step(self, step_loss: torch.Tensor) -> tuple[torch.Tensor, str | torch.Tensor | None]:
        """Clip, then step unless the loss or the gradient norm is not finite (weights and optimizer state are then
        left as they were). Returns the grad norm and the step's outcome (step_outcomes.py): None (taken), why it
        was skipped, or a device flag read with the next record."""
        accelerator, clip = self.accelerator, self.recipe.train.clip_grad_norm
        if clip:  # unscales fp16 gradients first
            grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), clip)
        else:
            accelerator.unscale_gradients()  # fp16: the norm (and the scaler's overflow check) of true gradients
            grad_norm = total_grad_norm(self.model)
        grad_norm = plain_tensor(grad_norm, step_loss.device)
        finite = torch.stack([torch.isfinite(step_loss), torch.isfinite(grad_norm)])  # (2,): loss, grad norm
        if self.skips_on_device:
            skipped = step_unless_flagged(self.optimizer, ~finite.all())
        else:
            skipped = step_or_skip(self.optimizer, *finite.tolist())
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, skipped

    def advance(self, tokens: int | None) -> float:
        """Count the step done; returns its seconds."""
        state = self.state
        state.step += 1
        if tokens is not None:  # else counted with the next record
            state.tokens_seen += tokens
        now = time.perf_counter()
        step_seconds = now - self.clock - state.elapsed_seconds
        state.elapsed_seconds = now - self.clock
        return step_seconds

    def record(self, window: LogWindow, bar: ProgressBar, micro_batches: list[dict], tokens: int | None,
               step_loss: torch.Tensor, grad_norm: torch.Tensor, skipped, lr: float, step_seconds: float,
               data_wait: float) -> None:
        """Add the step to the log window; write a record every train.log_every steps and before a checkpoint (so
        records do not depend on resumes); stop a run whose non-finite steps in a row reach train.max_bad_steps."""
        train, state = self.recipe.train, self.state
        if tokens is None:  # counted when the record is written (the batches are kept until then)
            counts = partial(self.step_counts, micro_batches)
        else:
            counts = (tokens, self.objective.step_flops(micro_batches) * self.accelerator.num_processes)
        window.add(step_loss, grad_norm, skipped, lr, counts, step_seconds, data_wait)
        # A step skipped on the host is counted at once; one skipped on the device when the record reads it.
        if (state.step % train.log_every == 0 or state.step % train.save_every == 0 or self.progress() >= 1.0
                or isinstance(skipped, str)):
            self.write_record(window, bar)  # brings state.skipped_steps and state.bad_steps_in_a_row up to date
            if self.longest_bad_streak >= train.max_bad_steps:  # also a streak the window's last step ended
                raise TrainingDiverged(divergence_message(self.run_dir, self.longest_bad_streak, train.max_bad_steps))

    def eval_and_save(self) -> None:
        """Eval every train.eval_every steps; a checkpoint every train.save_every, but not inside a streak of
        non-finite steps: the last checkpoint stays a good one."""
        train, state = self.recipe.train, self.state
        saving = state.step % train.save_every == 0 and state.bad_steps_in_a_row == 0
        if state.step % train.eval_every == 0:
            self.evaluate_and_log()
            if not saving:  # a save logs them too
                self.batches.log_reports()  # a streamed corpus: what its readers read so far
        if saving:
            self.save()

    # ------------------------------------------------------------------------------------------- budget and counts
    def progress(self, upcoming_step: bool = False, upcoming_tokens: int = 0) -> float:
        """Fraction of the budget spent; the largest of the budgets the recipe sets. With `upcoming_step` (and that
        step's tokens), the fraction once the step about to run is done (what that step's lr is scheduled for)."""
        train, state = self.recipe.train, self.state
        upcoming_steps = 1 if upcoming_step else 0
        fractions = [0.0]
        if train.max_steps:
            fractions.append((state.step + upcoming_steps) / train.max_steps)
        if train.max_tokens:
            fractions.append((state.tokens_seen + upcoming_tokens) / train.max_tokens)
        if train.max_minutes:
            fractions.append(state.elapsed_seconds / (60 * train.max_minutes))
        return max(fractions)

    def should_stop(self) -> bool:
        """Budget spent or a stop signal on any rank: all ranks stop together, after the same step.

        The ranks also agree here on one clock, the slowest rank's elapsed time: with the step count and the tokens
        (summed over ranks), the budget's progress, and so the next step's learning rate, is then the same on
        every rank, as data parallelism needs (replicas with different learning rates drift apart)."""
        stop = self.stop_signal is not None
        if self.accelerator.num_processes > 1:  # a collective, read back: what the ranks agree on
            flags = torch.tensor([self.state.elapsed_seconds, float(stop)], device=self.accelerator.device)
            self.state.elapsed_seconds, stop = self.accelerator.reduce(flags, reduction="max").tolist()
        self.interrupted = bool(stop)
        return self.progress() >= 1.0 or self.interrupted

    def step_counts(self, micro_batches: list[dict]) -> tuple[int, float]:
        """A step's tokens and FLOPs (one process: the step's own)."""
        return (sum(self.objective.count_tokens(b) for b in micro_batches), self.objective.step_flops(micro_batches))

    def request_stop(self, signal_number: int, _frame=None) -> None:
        """SIGTERM/SIGINT: finish the current step, save, stop. A second one stops at once."""
        if self.stop_signal is not None:
            raise KeyboardInterrupt
        self.stop_signal = signal_number
        logger.warning(f"signal {signal_number}: saving a checkpoint after this step, then stopping")

    @property
    def raw_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer inside Accelerate's wrapper (its state is what checkpoints hold)."""
        return getattr(self.optimizer, "optimizer", self.optimizer)

    def reseed_dropout(self, micro_step: int) -> None:
        seed = (self.recipe.train.seed * 1_000_003 + micro_step) * 64 + self.accelerator.process_index
        torch.manual_seed(seed % (2**63))

    def write_record(self, window: LogWindow, bar: ProgressBar) -> None:
        """One metrics record for the steps since the last one (nothing when there are none)."""
        if not window.steps:
            return
        record, outcomes = window.record(self.state, self.peak)
        for outcome in outcomes:  # in step order: a taken step ends a streak of non-finite ones
            self.state.bad_steps_in_a_row = next_bad_streak(self.state.bad_steps_in_a_row, outcome)
            self.state.skipped_steps += outcome is not None
            self.longest_bad_streak = max(self.longest_bad_streak, self.state.bad_steps_in_a_row)
        if "skipped" in record:
            logger.warning(f"step {self.state.step}: {record['skipped']} step(s) skipped ({record['skipped_why']}); "
                           "weights and optimizer state left as they were")
        self.metrics.log(record, step=self.state.step)
        bar.update(record, self.progress())

    # ------------------------------------------------------------------------------------------- resume, eval, save
    def resume(self) -> None:
        found = self.resume_from
        if found is None:
            # Starting from step 0: records an earlier, checkpoint-less attempt left would be logged twice.
            if self.is_main:
                truncate_metrics(self.run_dir / "metrics.jsonl", -1)
            return
        self.state = self.resumed_state
        processes, batch_size = self.accelerator.num_processes, self.recipe.train.batch_size
        if (self.state.num_processes or processes) != processes:
            logger.info(
                f"resuming with {processes} process(es) instead of {self.state.num_processes}: step "
                f"{self.state.step}, epoch {self.state.epoch}, the same examples seen; a step now reads "
                f"{processes * batch_size * self.recipe.train.grad_accum} examples (was "
                f"{self.state.num_processes * (self.state.batch_size or batch_size) * self.recipe.train.grad_accum})"
            )
        self.state.batches_in_epoch = self.resume_skip
        self.state.num_processes, self.state.batch_size = processes, batch_size
        model = self.accelerator.unwrap_model(self.model)
        load_model_weights(model, found)  # every rank: a sharded (FSDP2) model keeps each rank's slice
        optimizer_from_files(self.raw_optimizer, found, model=model)
        if self.is_main:
            set_aside_newer_checkpoints(self.run_dir, step_of(found))
            truncate_metrics(self.run_dir / "metrics.jsonl", self.state.step)
        logger.info(f"resumed from {found} (step {self.state.step}, epoch {self.state.epoch})")

    def evaluate(self) -> dict:
        """The objective's eval metrics on the held-out batches (and per source of a mixture, as
        `<source>/<metric>`), then the linear probe's (every rank fits the same probe: no collective)."""
        measure = partial(held_out_metrics, self.model, self.objective, self.accelerator,
                          self.recipe.train.eval_batches)
        metrics = measure(self.eval_loader)
        for name, loader in self.eval_loaders_by_source.items():
            metrics.update({f"{name}/{key}": value for key, value in measure(loader).items()})
        if self.probe is not None:
            metrics.update(self.probe.run(self.accelerator.unwrap_model(self.model), self.accelerator.device))
        return metrics

    def evaluate_and_log(self) -> None:
        """An eval inside the loop. The probe's seconds are kept out of the wall-clock budget (the clock moves
        forward by them) and logged as `probe_share`, their share of the training seconds since the last eval."""
        metrics = self.evaluate()
        if "probe_seconds" in metrics:
            self.clock += metrics["probe_seconds"]
            trained = self.state.elapsed_seconds - self.elapsed_at_eval
            metrics["probe_share"] = metrics["probe_seconds"] / trained if trained > 0 else 0.0
            self.elapsed_at_eval = self.state.elapsed_seconds
        self.bar.show_eval(metrics)
        self.state.last_eval = {**metrics, "step": self.state.step}
        self.metrics.log({f"eval/{k}": v for k, v in self.state.last_eval.items() if k != "step"}, step=self.state.step)

    def save(self) -> None:
        """Every rank takes part (a sharded model's full state, a streamed corpus's reader states are gathered
        from all of them); rank 0 writes."""
        self.accelerator.wait_for_everyone()
        stream_files = self.batches.checkpoint_files()
        save_checkpoint(
            self.run_dir,
            self.accelerator.unwrap_model(self.model),
            self.objective.tokenizer,
            self.raw_optimizer,
            self.state,
            keep_last=self.recipe.train.keep_last,
            recipe_yaml=self.recipe.to_yaml(),
            is_main=self.is_main,
            extra_files=stream_files,
        )
        self.accelerator.wait_for_everyone()

    def finish(self) -> dict:
        """After the last step: a stop signal saves and raises TrainingInterrupted; a finished budget evaluates, lets
        the objective finish (e.g. corpus statistics saved with the model), saves, writes final/ and the summary."""
        state = self.state
        if self.interrupted:
            if state.bad_steps_in_a_row == 0:  # inside a streak of non-finite steps the last checkpoint stays
                self.save()
            raise TrainingInterrupted(self.stop_signal or 0, find_resumable_checkpoint(self.run_dir, report=False))
        if state.last_eval.get("step") != state.step:
            self.evaluate_and_log()
        self.objective.finish_training(self.accelerator.unwrap_model(self.model))
        self.save()
        final_dir = self.write_final()
        self.accelerator.end_training()
        return self.summary(final_dir)

    def write_final(self) -> Path:
        """RUN/final: the Hub-ready model folder (weights, config, code, tokenizer) of the last step."""
        final_dir = self.run_dir / "final"
        self.accelerator.wait_for_everyone()
        model = self.accelerator.unwrap_model(self.model)
        weights = full_model_state(model)  # every rank: a sharded (FSDP2) model is gathered onto rank 0
        if self.is_main:
            # `final` and, for some objectives, more folders (replaced-token detection: `generator`).
            for name, folder_model, folder_weights in self.objective.final_folders(model, weights):
                temporary = self.run_dir / f".tmp-{name}"
                shutil.rmtree(temporary, ignore_errors=True)
                # No tokenizer for the feature autoencoder (it reads vectors).
                write_model_folder(temporary, folder_model, self.objective.tokenizer, folder_weights)
                write_complete_marker(temporary)  # export checks it
                swap_into_place(temporary, self.run_dir / name)
        self.accelerator.wait_for_everyone()
        return final_dir

    def summary(self, final_dir: Path) -> dict:
        state = self.state
        result = {
            "objective": self.recipe.objective,
            "steps": state.step,
            "tokens": state.tokens_seen,
            "skipped_steps": state.skipped_steps,
            "minutes": state.elapsed_seconds / 60,
            "initial_eval": state.initial_eval,
            "final_eval": state.last_eval,
            "final_dir": str(final_dir),
            "run_dir": str(self.run_dir),
            "mfu_peak": f"{self.peak:.3f} TFLOP/s ({self.peak_source})",
            "hardware": describe_hardware(self.accelerator),
            "precision": resolved_precision_name(self.accelerator),
        }
        if self.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(result, indent=2))
        return result


__all__ = ["Pretraining", "TrainingDiverged", "TrainingInterrupted"]

"""The pretraining loop: one loop, read top to bottom — lr, forward, backward, clip, step, log, eval, save.

Everything objective-specific (model, data, noise, eval metrics) comes from an `Objective`
(`hf_pretrain.training.objectives`); multi-GPU, multi-node and FSDP come from `accelerate launch`. DeepSpeed is
refused at setup (`refuse_unverified_engine`): no GPU has run it with this loop.

Exact resume: the data order is Accelerate's seedable sampler (seed + epoch), the noise is a pure function of
(seed, epoch, example index), dropout is reseeded from (seed, step, rank) every step, and checkpoints hold weights,
optimizer state and the position in the epoch. A resumed run repeats the uninterrupted run's steps bit for bit
on CPU (budgets in steps or tokens; a wall-clock budget is by nature not repeatable).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import DataLoaderConfiguration, DistributedType
from torch.utils.data import DataLoader

from ..folders import swap_into_place, write_complete_marker
from ..recipe import Recipe, RecipeError, flat_items, resolve_precision, resume_changes
from .checkpoint import (
    LOCK,
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
from .metrics import MetricsLog, peak_tflops, truncate_metrics
from .optimizers import MuonWithAdamW
from .schedules import lr_multiplier


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


def build_optimizer(model: torch.nn.Module, recipe: Recipe, fused: bool) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (norm gains, biases and embeddings are not decayed). With
    `train.encoder_lr_scale` != 1 the encoder's parameters (`model.get_encoder()`; with tied embeddings that
    includes the shared matrix) form their own groups, whose `lr_scale` the loop multiplies the lr by; with
    `train.embedding_lr_scale` != 1 so does the token embedding matrix.

    With `train.optimizer: muon` the decayed matrices take Muon steps (MuonWithAdamW), except the output layer:
    Muon's authors keep the first and last layers on AdamW. A tied output layer is the token embedding (AdamW
    already); an untied one is `get_output_embeddings()`, and a matrix with a side of 1 (a one-logit head) is one too."""
    train = recipe.train
    encoder_ids = set()
    if train.encoder_lr_scale != 1.0:
        encoder_ids = {id(parameter) for parameter in model.get_encoder().parameters()}
    # The token embedding by identity (the decoder names it embed_tokens; tied, it is also the output matrix), and
    # anything under an "embeddings" module (our encoder's positions, BERT-style embedding blocks).
    try:
        token_embedding_ids = {id(parameter) for parameter in model.get_input_embeddings().parameters()}
    except NotImplementedError:  # a model that reads float vectors has no token embedding
        token_embedding_ids = set()
    output_ids = set()
    if train.optimizer == "muon" and hasattr(model, "get_output_embeddings") and model.get_output_embeddings():
        output_ids = {id(parameter) for parameter in model.get_output_embeddings().parameters()}
    own_embedding_lr = train.embedding_lr_scale != 1.0
    groups: dict[tuple[bool, bool, bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decayed = parameter.ndim >= 2 and "embeddings" not in name and id(parameter) not in token_embedding_ids
        muon = (train.optimizer == "muon" and decayed and parameter.ndim == 2 and min(parameter.shape) > 1
                and id(parameter) not in output_ids)
        embedding = own_embedding_lr and id(parameter) in token_embedding_ids
        groups.setdefault((decayed, id(parameter) in encoder_ids, muon, embedding), []).append(parameter)
    # Decayed groups first, as before encoder groups existed: a checkpoint's optimizer state is matched by order.
    # Muon groups, then token-embedding groups, last.
    order = [(True, False, False, False), (True, True, False, False), (False, False, False, False),
             (False, True, False, False), (True, False, True, False), (True, True, True, False),
             (False, False, False, True), (False, True, False, True)]
    groups = [
        {
            "params": groups[key],
            "weight_decay": train.weight_decay if key[0] else 0.0,
            "lr_scale": (train.encoder_lr_scale if key[1] else 1.0) * (train.embedding_lr_scale if key[3] else 1.0),
            **({"muon": True} if key[2] else {}),
        }
        for key in order
        if key in groups
    ]
    if train.optimizer == "muon":
        return MuonWithAdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.eps)
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.eps, **extra)


class Pretraining:
    """Holds what the loop needs; `run()` is the loop. Subclass and override `forward_loss` in tests."""

    def __init__(self, recipe: Recipe, objective_factory=None, announce=print, restart: bool = False):
        """`restart`: an earlier run in output.dir is moved aside into RUN/replaced-<time>/ (nothing is deleted)
        and training starts over; without it a rerun resumes, and is refused if the recipe changed."""
        self.recipe = recipe
        self.announce = announce
        self.run_dir = Path(recipe.output.dir)
        self.lock = None
        try:
            self.setup(objective_factory, restart)
        except BaseException:
            release_run_lock(self.lock)
            raise

    def setup(self, objective_factory, restart: bool) -> None:
        from .objectives import build_objective

        recipe, announce = self.recipe, self.announce
        train = recipe.train
        log_with = [t for t in recipe.output.log_with if tracker_available(t, announce)]
        precision = resolve_precision(train.precision)  # "fp32", "bf16" or "fp16"
        refuse_unverified_engine(os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true")
        self.accelerator = Accelerator(
            mixed_precision="no" if precision == "fp32" else precision,
            cpu=not torch.cuda.is_available(),
            log_with=log_with or None,
            project_dir=str(self.run_dir),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train.seed),
            step_scheduler_with_optimizer=False,
        )
        refuse_unverified_engine(self.accelerator.distributed_type == DistributedType.DEEPSPEED)
        if train.optimizer == "muon" and self.accelerator.distributed_type == DistributedType.FSDP:
            raise RecipeError(
                "train.optimizer='muon' is not available with FSDP: its Newton-Schulz step works on whole matrices, "
                "and on FSDP's sharded ones it has not been run; use train.optimizer=adamw, or DDP."
            )
        self.is_main = self.accelerator.is_main_process
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.lock = acquire_run_lock(self.run_dir, announce)
            recover_interrupted_swaps(self.run_dir)
            if restart:
                move_run_aside(self.run_dir, announce)
        self.accelerator.wait_for_everyone()
        # The checkpoint to resume from, and its recipe checked against this one, before any work.
        self.resume_from = find_resumable_checkpoint(self.run_dir, report=announce if self.is_main else silent)
        # Its trainer state, read once: the recipe check, the data position and `resume` all use it.
        self.resumed_state = load_trainer_state(self.resume_from) if self.resume_from is not None else None
        if self.resume_from is not None:
            check_resume_recipe(self.resume_from, self.run_dir, recipe, announce if self.is_main else silent,
                                self.resumed_state, self.accelerator.num_processes)
        if self.is_main:
            (self.run_dir / "recipe.yaml").write_text(recipe.to_yaml())
        self.accelerator.wait_for_everyone()

        # Objective: tokenizer, data, model and noise, all built (and validated) before any training compute.
        self.objective = (objective_factory or build_objective)(recipe, self.accelerator, self.run_dir, announce)
        model = self.objective.model
        if train.activation_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        # Fused AdamW (CPU and CUDA kernels) is the fastest, and skips a non-finite step on a device flag. FSDP2's
        # sharded parameters take the unfused one.
        fused = self.accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_GPU,
                                                      DistributedType.MULTI_CPU)
        optimizer = build_optimizer(model, recipe, fused=fused)
        batch_sampler = self.objective.train_batch_sampler
        streamed = isinstance(self.objective.train_dataset, torch.utils.data.IterableDataset)  # no length, no shuffle
        if batch_sampler is not None:
            batching = {"batch_sampler": batch_sampler}
        elif streamed:
            batching = {"batch_size": train.batch_size, "drop_last": True}  # a stream is read in order
        else:
            batching = {"batch_size": train.batch_size, "shuffle": True, "drop_last": True}
        train_loader = DataLoader(
            self.objective.train_dataset,
            collate_fn=self.objective.train_collator,
            num_workers=train.num_workers,
            **batching,
        )
        eval_loader = DataLoader(
            self.objective.eval_dataset,
            batch_size=train.batch_size,
            shuffle=False,
            collate_fn=self.objective.eval_collator,
            num_workers=train.num_workers,
        )
        self.model, self.optimizer, self.train_loader, self.eval_loader = self.accelerator.prepare(
            model, optimizer, train_loader, eval_loader
        )
        self.skips_on_device = skips_on_device(self.optimizer)
        self.counts_at_record = self.accelerator.num_processes == 1 and not train.max_tokens
        if train.compile:
            self.model = torch.compile(self.model)
        if not streamed and len(self.train_loader) == 0:
            raise ValueError(
                f"train.batch_size={train.batch_size} is larger than the training set "
                f"({len(self.objective.train_dataset)} examples per process); lower it or add data."
            )
        self.peak, self.peak_source = peak_tflops(self.accelerator.device, train.precision, train.peak_tflops)
        self.metrics = MetricsLog(self.run_dir, self.accelerator)
        self.state = TrainerState(num_processes=self.accelerator.num_processes, batch_size=train.batch_size)
        self.resume_skip = None  # micro-batches of the resumed epoch to skip, per process
        if self.resume_from is not None:  # a position this launch cannot reach exactly is refused before any step
            self.resume_skip = resume_position(self.resumed_state, train.batch_size,
                                               self.accelerator.num_processes, batch_sampler is not None,
                                               self.resume_from)
        self._iterator = None  # over the train loader, for the epoch in progress (next_batch)

    # ------------------------------------------------------------------------------------------- helpers
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
        self.announce(f"signal {signal_number}: saving a checkpoint after this step, then stopping")

    def forward_loss(self, batch: dict, items_in_step: torch.Tensor) -> torch.Tensor:
        """Loss of one micro-batch, normalized by the predicted items of the whole step on all ranks, so that
        gradient accumulation and data parallelism give the gradient of one big batch."""
        loss = self.objective.loss(self.model, batch, items_in_step)
        # DDP averages gradients over ranks; undo that so the gradient is the global token mean.
        return loss * self.accelerator.num_processes

    @property
    def raw_optimizer(self) -> torch.optim.Optimizer:
        """The torch optimizer inside Accelerate's wrapper (its state is what checkpoints hold)."""
        return getattr(self.optimizer, "optimizer", self.optimizer)

    def reseed_dropout(self, micro_step: int) -> None:
        seed = (self.recipe.train.seed * 1_000_003 + micro_step) * 64 + self.accelerator.process_index
        torch.manual_seed(seed % (2**63))

    def resume(self) -> None:
        found = self.resume_from
        if found is None:
            # Starting from step 0: records an earlier, checkpoint-less attempt left would be logged twice.
            if self.is_main:
                truncate_metrics(self.run_dir / "metrics.jsonl", -1, self.announce)
            return
        self.state = self.resumed_state
        if self.is_main and (self.state.num_processes or self.accelerator.num_processes) != self.accelerator.num_processes:
            self.announce(
                f"resuming with {self.accelerator.num_processes} process(es) instead of {self.state.num_processes}: "
                f"step {self.state.step}, epoch {self.state.epoch}, the same examples seen; a step now reads "
                f"{self.accelerator.num_processes * self.recipe.train.batch_size * self.recipe.train.grad_accum} "
                f"examples (was {self.state.num_processes * (self.state.batch_size or self.recipe.train.batch_size) * self.recipe.train.grad_accum})"
            )
        self.state.batches_in_epoch = self.resume_skip
        self.state.num_processes, self.state.batch_size = self.accelerator.num_processes, self.recipe.train.batch_size
        model = self.accelerator.unwrap_model(self.model)
        load_model_weights(model, found)  # every rank: a sharded (FSDP2) model keeps each rank's slice
        optimizer_from_files(self.raw_optimizer, found, model=model)
        if self.is_main:
            set_aside_newer_checkpoints(self.run_dir, step_of(found), self.announce)
            truncate_metrics(self.run_dir / "metrics.jsonl", self.state.step, self.announce)
        self.announce(f"resumed from {found} (step {self.state.step}, epoch {self.state.epoch})")

    def evaluate(self) -> dict:
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for index, batch in enumerate(self.eval_loader):
                if index >= self.recipe.train.eval_batches:
                    break
                for key, value in self.objective.eval_sums(self.model, batch).items():
                    sums[key] = sums.get(key, 0) + value
        totals = {k: self.accelerator.reduce(v.to(self.accelerator.device), reduction="sum").item() for k, v in sums.items()}
        self.model.train()
        return self.objective.eval_metrics(totals)

    def evaluate_and_log(self) -> None:
        self.state.last_eval = {**self.evaluate(), "step": self.state.step}
        self.metrics.log({f"eval/{k}": v for k, v in self.state.last_eval.items() if k != "step"}, step=self.state.step)

    def save(self) -> None:
        """Every rank takes part (a sharded model's full state is gathered from all of them); rank 0 writes."""
        self.accelerator.wait_for_everyone()
        save_checkpoint(
            self.run_dir,
            self.accelerator.unwrap_model(self.model),
            self.objective.tokenizer,
            self.raw_optimizer,
            self.state,
            keep_last=self.recipe.train.keep_last,
            recipe_yaml=self.recipe.to_yaml(),
            is_main=self.is_main,
        )
        self.accelerator.wait_for_everyone()

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
        train, state, accelerator = self.recipe.train, self.state, self.accelerator
        self.resume()
        state = self.state
        if not state.initial_eval:
            state.initial_eval = self.evaluate()
            self.metrics.log({f"eval/{k}": v for k, v in state.initial_eval.items()}, step=0)
        accelerator.init_trackers("hf_pretrain", config=flatten(self.recipe.to_dict()))
        bar = make_progress_bar(self.recipe, self.is_main, state)
        resumed_at = (state.epoch, state.batches_in_epoch)
        clock = time.perf_counter() - state.elapsed_seconds
        window = LogWindow(accelerator.device)
        self.longest_bad_streak = state.bad_steps_in_a_row
        self.model.train()

        while not self.should_stop():
            # ---- data for one optimizer step: grad_accum micro-batches (the epoch rolls over as needed)
            wait_start = time.perf_counter()
            micro_batches = [self.next_batch(resumed_at) for _ in range(train.grad_accum)]
            data_wait = time.perf_counter() - wait_start
            # The step's predicted items (the loss's denominator) and tokens (the budget), summed over ranks in one
            # collective: a rank's tokens differ from another's when documents have different lengths.
            # `items` has count_items' shape: a scalar, or one count per loss term (replaced-token detection).
            # One process without a token budget needs the tokens (and the step's FLOPs) only for the metrics: they
            # are counted when the next record is written, so the step reads nothing back from the device.
            local_items = sum(self.objective.count_items(b) for b in micro_batches).to(torch.int64)
            if self.counts_at_record:
                items, tokens = local_items.to(accelerator.device), None
            else:
                local_tokens = sum(self.objective.count_tokens(b) for b in micro_batches)
                counts = torch.cat([local_items.reshape(-1), torch.tensor([local_tokens], device=local_items.device)])
                counts = accelerator.reduce(counts.to(accelerator.device), reduction="sum")
                items, tokens = counts[:-1].reshape(local_items.shape), int(counts[-1])

            # ---- lr for this step
            lr = train.lr * lr_multiplier(
                train.schedule,
                state.step,
                self.progress(upcoming_step=True, upcoming_tokens=tokens or 0),
                train.warmup,
                train.decay_fraction,
                train.min_lr_ratio,
            )
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

            # ---- forward + backward over the micro-batches (gradient sync only on the last)
            step_loss = torch.zeros((), device=accelerator.device)
            for index, batch in enumerate(micro_batches):
                self.reseed_dropout(state.step * train.grad_accum + index)
                last = index == len(micro_batches) - 1
                with accelerator.no_sync(self.model) if not last else nullcontext():
                    with accelerator.autocast():
                        loss = self.forward_loss(batch, items)
                    accelerator.backward(loss)
                step_loss += loss.detach() / accelerator.num_processes
            step_loss = accelerator.reduce(step_loss, reduction="sum")

            # ---- clip, guard against non-finite values, step
            if train.clip_grad_norm:  # unscales fp16 gradients first
                grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), train.clip_grad_norm)
            else:
                accelerator.unscale_gradients()  # fp16: the norm (and the scaler's overflow check) of true gradients
                grad_norm = total_grad_norm(self.model)
            grad_norm = plain_tensor(grad_norm, step_loss.device)
            # A non-finite step touches neither weights nor optimizer state. Fused AdamW and MuonWithAdamW skip on a
            # device flag, so nothing is read back here; the window reads the flags with the next record. The
            # others (fp16's GradScaler, FSDP's unfused AdamW) decide on the host: one read per step.
            finite = torch.stack([torch.isfinite(step_loss), torch.isfinite(grad_norm)])  # (2,): loss, grad norm
            if self.skips_on_device:
                skipped = step_unless_flagged(self.optimizer, ~finite.all())
            else:
                skipped = step_or_skip(self.optimizer, *finite.tolist())
            self.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            if tokens is not None:  # else counted with the next record
                state.tokens_seen += tokens
            now = time.perf_counter()
            step_seconds = now - clock - state.elapsed_seconds
            state.elapsed_seconds = now - clock

            # ---- log (every train.log_every steps, and before a checkpoint, so records do not depend on resumes)
            if tokens is None:  # counted when the record is written (the batches are kept until then)
                counts = partial(self.step_counts, micro_batches)
            else:
                counts = (tokens, self.objective.step_flops(micro_batches) * accelerator.num_processes)
            window.add(step_loss, grad_norm, skipped, lr, counts, step_seconds, data_wait)
            saving = state.step % train.save_every == 0
            # A step skipped on the host is counted at once; one skipped on the device when the record reads it.
            if state.step % train.log_every == 0 or saving or self.progress() >= 1.0 or isinstance(skipped, str):
                self.write_record(window, bar)  # brings state.skipped_steps and state.bad_steps_in_a_row up to date
                if self.longest_bad_streak >= train.max_bad_steps:  # also a streak the window's last step ended
                    raise TrainingDiverged(self.divergence_message())
            saving = saving and state.bad_steps_in_a_row == 0

            # ---- eval and checkpoint
            if state.step % train.eval_every == 0:
                self.evaluate_and_log()
            if saving:
                self.save()  # not inside a streak of non-finite steps: the last checkpoint stays a good one

        self.write_record(window, bar)  # steps since the last record (a stop signal, a wall-clock budget)
        if bar is not None:
            bar.close()
        if self.interrupted:
            if state.bad_steps_in_a_row == 0:  # inside a streak of non-finite steps the last checkpoint stays
                self.save()
            raise TrainingInterrupted(self.stop_signal or 0, find_resumable_checkpoint(self.run_dir, silent))
        if state.last_eval.get("step") != state.step:
            self.evaluate_and_log()
        self.objective.finish_training(accelerator.unwrap_model(self.model))  # e.g. corpus statistics saved with it
        self.save()
        final_dir = self.write_final()
        accelerator.end_training()
        return self.summary(final_dir)

    def write_record(self, window: "LogWindow", bar) -> None:
        """One metrics record for the steps since the last one (nothing when there are none)."""
        if not window.steps:
            return
        record, outcomes = window.record(self.state, self.peak)
        for outcome in outcomes:  # in step order: a taken step ends a streak of non-finite ones
            self.state.bad_steps_in_a_row = next_bad_streak(self.state.bad_steps_in_a_row, outcome)
            self.state.skipped_steps += outcome is not None
            self.longest_bad_streak = max(self.longest_bad_streak, self.state.bad_steps_in_a_row)
        self.metrics.log(record, step=self.state.step)
        update_progress_bar(bar, record, self.progress())

    def next_batch(self, resumed_at: tuple[int, int]) -> dict:
        """The next micro-batch; starts a new epoch when one ends. After a resume the first epoch skips the
        batches the interrupted run had already consumed."""
        state = self.state
        if self._iterator is None:
            self.train_loader.set_epoch(state.epoch)
            self.objective.set_epoch(state.epoch)
            loader = self.train_loader
            if (state.epoch, state.batches_in_epoch) == resumed_at and state.batches_in_epoch:
                loader = skip_first_batches(self.train_loader, state.batches_in_epoch)
            self._iterator = iter(loader)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = None
            state.epoch += 1
            state.batches_in_epoch = 0
            return self.next_batch(resumed_at)
        state.batches_in_epoch += 1
        return batch

    def divergence_message(self) -> str:
        checkpoints = sorted((self.run_dir / "checkpoints").glob("step-*"))
        last_good = str(checkpoints[-1]) if checkpoints else "none yet (no checkpoint was written before)"
        return (
            f"training stopped: {self.longest_bad_streak} steps in a row had a non-finite loss or gradient "
            f"norm (train.max_bad_steps={self.recipe.train.max_bad_steps}). The weights were not updated by those "
            f"steps. Last good checkpoint: {last_good}. Try a lower train.lr, a longer train.warmup, or "
            "train.precision=fp32."
        )

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


# ----------------------------------------------------------------------------------------------- small helpers
def refuse_unverified_engine(deepspeed: bool) -> None:
    """DeepSpeed's own clipping, accumulation, fp16 overflow skip and engine checkpoints have never run with this
    loop (that needs a GPU), so a DeepSpeed launch stops before any work instead of training on unchecked paths.
    Checked twice: from `accelerate launch`'s environment before the Accelerator exists (building one for DeepSpeed
    fails on a missing `deepspeed` package with a less useful message), and from the Accelerator itself."""
    if deepspeed:
        raise RecipeError(
            "accelerate launch config: distributed_type=DEEPSPEED is not supported (DeepSpeed has not been run and "
            "verified with this training loop); use FSDP2 (recipes/accelerate/fsdp.yaml) or DDP "
            "(recipes/accelerate/ddp.yaml) instead."
        )


def resolved_precision_name(accelerator) -> str:
    """What the run computed in: "fp32", "bf16" or "fp16" (a recipe's `auto` resolved on this machine)."""
    return {"no": "fp32"}.get(accelerator.mixed_precision, accelerator.mixed_precision)


def describe_hardware(accelerator) -> str:
    """E.g. "1 x NVIDIA H100 80GB HBM3, bf16" or "2 CPU threads x 1 process, fp32"."""
    precision = resolved_precision_name(accelerator)
    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes} x {torch.cuda.get_device_name(accelerator.device)}, {precision}"
    return f"{torch.get_num_threads()} CPU threads x {accelerator.num_processes} process(es), {precision}"


NON_FINITE = "non-finite loss or grad norm"
FP16_OVERFLOW = "fp16 gradient overflow (the GradScaler lowered its scale)"


def step_or_skip(optimizer, loss_finite: bool, grad_norm_finite: bool) -> str | None:
    """Take the optimizer step, or skip it; returns why it was skipped (None: it stepped).

    A skipped step touches neither the weights nor the optimizer state (AdamW's moments and step count). With fp16,
    Accelerate's optimizer wrapper holds a GradScaler (`optimizer.scaler`) whose gradients were unscaled this step
    (by clipping or by the loop): the scaler must close every step with `update()`, or the next `unscale_` raises
    "unscale_() has already been called". On a skipped step it gets that `update()`, which lowers its scale when the
    gradients overflowed, just as its own `step()` would after skipping. A finite loss with non-finite gradients
    under fp16 is the scaler's overflow (its scale was too high), not divergence."""
    scaler = getattr(optimizer, "scaler", None)
    if loss_finite and grad_norm_finite:
        optimizer.step()
        # The scaler's own check is on the unscaled gradients, as ours is; kept in case the two ever disagree.
        return FP16_OVERFLOW if getattr(optimizer, "step_was_skipped", False) else None
    if scaler is not None:
        scaler.update()
        if loss_finite:
            return FP16_OVERFLOW
    return NON_FINITE


def skips_on_device(optimizer) -> bool:
    """Whether `optimizer` (or the one Accelerate wraps) can skip a step on a device flag: torch's fused AdamW reads
    a `found_inf` tensor (the GradScaler's hook), and MuonWithAdamW reads it the same way. Not under fp16, where
    the GradScaler owns that flag."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if getattr(optimizer, "scaler", None) is not None:
        return False
    return isinstance(inner, MuonWithAdamW) or (isinstance(inner, torch.optim.AdamW) and bool(inner.defaults.get("fused")))


def step_unless_flagged(optimizer, skip: torch.Tensor) -> torch.Tensor:
    """Step; where `skip` (a 0-dim bool tensor on the device) is true the optimizer leaves weights, moments and
    step counts as they were. Nothing is read back: returns `skip` itself, for the log window."""
    inner = getattr(optimizer, "optimizer", optimizer)
    inner.found_inf = skip.float()
    try:
        optimizer.step()
    finally:
        del inner.found_inf
    return skip


def next_bad_streak(streak: int, skipped: str | None) -> int:
    """Non-finite steps in a row (train.max_bad_steps of them stop the run). An fp16 overflow neither counts nor
    ends a streak: the GradScaler recovers from it by itself, halving its scale, and a few of them at the start of
    a run are normal."""
    if skipped is None:
        return 0
    return streak + (skipped == NON_FINITE)


class LogWindow:
    """The steps since the last metrics record. Loss and grad norm are summed on the device (no host read per
    step); a record reads them once. A record's `loss` and `grad_norm` are means over the window's steps that were
    taken (skipped steps are left out, as their numbers are not finite; a window of skipped steps only reports the
    last one's), `lr` and `epoch` are the last step's, throughput figures cover the whole window, and `skipped`
    counts the window's skipped steps when there are any. With train.log_every=1 a record is exactly one step's."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.sums = torch.zeros(3, device=self.device)  # loss, grad norm, count of the steps taken
        self.last = self.sums[:2]
        self.outcomes: list = []  # per step: None (taken), a reason (skipped), or a device flag (true: skipped)
        self.seconds = self.data_wait = 0.0
        self.counts: list = []  # per step: (tokens, flops), or a callable that counts them
        self.lr = 0.0

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, skipped: str | torch.Tensor | None, lr: float,
            counts, seconds: float, data_wait: float) -> None:
        """`counts`: the step's (tokens, FLOPs), or a callable returning them, called when the record is written
        (then the tokens were not yet added to the state's tokens_seen)."""
        self.last = torch.stack([loss.float(), grad_norm.float()])
        taken = torch.cat([self.last, self.last.new_ones(1)])
        if isinstance(skipped, torch.Tensor):  # known on the device only; where() keeps a NaN out of the sums
            self.sums = self.sums + torch.where(skipped, torch.zeros_like(taken), taken)
        elif skipped is None:
            self.sums = self.sums + taken
        self.outcomes.append(skipped)
        self.steps += 1
        self.lr, self.seconds, self.data_wait = lr, self.seconds + seconds, self.data_wait + data_wait
        self.counts.append(counts)

    def record(self, state: TrainerState, peak_tflops: float) -> tuple[dict, list[str | None]]:
        """The record, and each step's outcome (None: taken, else why it was skipped)."""
        flags = [o for o in self.outcomes if isinstance(o, torch.Tensor)]
        values = torch.cat([self.sums, self.last, *[f.reshape(1).float() for f in flags]]).tolist()  # the one read
        loss_sum, norm_sum, taken, last_loss, last_norm = values[:5]
        device_skips = iter(values[5:])
        outcomes = [(NON_FINITE if next(device_skips) else None) if isinstance(o, torch.Tensor) else o
                    for o in self.outcomes]
        loss, grad_norm = (loss_sum / taken, norm_sum / taken) if taken else (last_loss, last_norm)
        tokens = flops = 0
        for counts in self.counts:
            if callable(counts):
                counts = counts()
                state.tokens_seen += counts[0]
            tokens, flops = tokens + counts[0], flops + counts[1]
        seconds = max(self.seconds, 1e-9)
        record = {
            "loss": loss,
            "lr": self.lr,
            "grad_norm": grad_norm,
            "tokens": state.tokens_seen,
            "tokens_per_s": tokens / seconds,
            "mfu": flops / seconds / (peak_tflops * 1e12),
            "data_wait": self.data_wait / seconds,
            "epoch": state.epoch,
        }
        skipped = [outcome for outcome in outcomes if outcome is not None]
        if skipped:
            record["skipped"] = len(skipped)
            record["skipped_why"] = "; ".join(sorted(set(skipped)))
        self.reset()
        return record, outcomes


def plain_tensor(value, device: torch.device) -> torch.Tensor:
    """A grad norm as a plain tensor on `device` (an FSDP2 norm is a DTensor; a missing one is 0)."""
    if value is None:
        return torch.zeros((), device=device)
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return torch.as_tensor(value, device=device)


def total_grad_norm(model: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().norm(2) for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def tracker_available(name: str, announce) -> bool:
    """Accelerate only warns when a tracker's package is missing; say it plainly and go on without it."""
    import importlib.util

    package = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml"}.get(name)
    if package and importlib.util.find_spec(package) is None and not (
        name == "tensorboard" and importlib.util.find_spec("tensorboardX")
    ):
        announce(f"output.log_with: {name!r} is not installed; logging to metrics.jsonl only.")
        return False
    return True


def flatten(data: dict) -> dict:
    """A nested recipe dict as dotted keys with scalar values, for the trackers' hyper-parameter tables."""
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value)
            for key, value in flat_items(data).items()}


def make_progress_bar(recipe: Recipe, is_main: bool, state: TrainerState):
    if not (is_main and recipe.output.progress_bar):
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=1000, desc="pretraining", unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
    return bar


def update_progress_bar(bar, record: dict, progress: float) -> None:
    if bar is None:
        return
    target = min(int(progress * 1000), 1000)
    bar.update(target - bar.n)
    bar.set_postfix(
        loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:,.0f}"
    )


def silent(*_args) -> None:
    """Reports of other ranks: the main process says it once."""


def check_resume_recipe(checkpoint: Path, run_dir: Path, recipe: Recipe, announce, saved: TrainerState,
                        num_processes: int) -> None:
    """Refuse to resume with a recipe that changes what a step computes; allow and say the safe changes. A
    changed train.batch_size is allowed when it keeps the global batch (per-process batch x processes) of the run
    that wrote the checkpoint, e.g. train.batch_size doubled on half the processes."""
    import yaml

    stored = checkpoint / "recipe.yaml"
    if not stored.is_file():  # checkpoints written before they carried their recipe
        stored = run_dir / "recipe.yaml"
    if not stored.is_file():
        return
    allowed, refused = resume_changes(yaml.safe_load(stored.read_text()) or {}, recipe)
    saved_processes = saved.num_processes or num_processes
    if saved.batch_size and saved.batch_size * saved_processes == recipe.train.batch_size * num_processes:
        for line in [line for line in refused if line.startswith("train.batch_size:")]:
            refused.remove(line)
            allowed.append(f"{line} (the global batch stays {recipe.train.batch_size * num_processes} on "
                           f"{num_processes} process(es) instead of {saved_processes})")
    if refused:
        raise RecipeError(
            f"output.dir={str(run_dir)!r} holds a run trained with another recipe (checkpoint {checkpoint.name}); "
            f"resuming would mix the two. Changed: {'; '.join(refused)}. Run again with the recipe it was trained "
            "with, choose a new output.dir, or add --restart to move the earlier run aside and start over."
        )
    if allowed:
        announce(f"resuming from {checkpoint.name} with changed settings: {'; '.join(allowed)}")


def resume_position(saved: TrainerState, batch_size: int, num_processes: int, own_batch_sampler: bool,
                    checkpoint: Path) -> int:
    """Micro-batches of the epoch in progress that each process skips on resume, so that the resumed run reads on
    from the same example as a run that never stopped.

    Accelerate deals the batches of one loader (`train.batch_size` rows, or the objective's own batch sampler) to
    the processes in turn, and the order of the epoch (seed + epoch) does not depend on how many there are: a
    checkpoint written after each of N processes took b batches of B rows sits at row b x N x B of the epoch. With
    M processes of B' rows the same row is b' = b x N x B / (M x B') batches in; where that is not a whole number
    the position cannot be reached exactly, and the resume is refused."""
    saved_processes = saved.num_processes or num_processes
    saved_batch_size = saved.batch_size or batch_size
    if (saved_processes, saved_batch_size) == (num_processes, batch_size):
        return saved.batches_in_epoch
    if own_batch_sampler and saved_batch_size != batch_size:
        raise RecipeError(
            f"train.batch_size={batch_size} differs from the {saved_batch_size} that checkpoint {checkpoint.name} was "
            "trained with, and this objective makes its own batches from it (documents of similar length): resume "
            f"with train.batch_size={saved_batch_size}."
        )
    rows_per_batch = (1, 1) if own_batch_sampler else (saved_batch_size, batch_size)  # own sampler: in its batches
    consumed = saved.batches_in_epoch * saved_processes * rows_per_batch[0]
    per_round = num_processes * rows_per_batch[1]
    if consumed % per_round:
        unit = "batches" if own_batch_sampler else "examples"
        raise RecipeError(
            f"checkpoint {checkpoint.name} stopped {consumed} {unit} into epoch {saved.epoch} ({saved_processes} "
            f"process(es) x {saved.batches_in_epoch} batches of train.batch_size={saved_batch_size}); "
            f"{num_processes} process(es) x train.batch_size={batch_size} read {per_round} {unit} at a time, which "
            f"does not divide {consumed}, so this launch cannot continue from the same example. Resume with "
            f"{saved_processes} process(es), or a number of processes x train.batch_size that divides {consumed}."
        )
    return consumed // per_round


def move_run_aside(run_dir: Path, announce) -> Path | None:
    """--restart: move everything an earlier run left in `run_dir` into run_dir/replaced-<UTC time>/ (nothing is
    deleted; earlier replaced-* folders and the lock stay where they are)."""
    entries = [p for p in run_dir.iterdir() if p.name != LOCK and not p.name.startswith("replaced-")]
    if not entries:
        return None
    target = run_dir / time.strftime("replaced-%Y%m%d-%H%M%S", time.gmtime())
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
    target.mkdir()
    for entry in entries:
        entry.rename(target / entry.name)
    announce(f"--restart: moved the earlier run in {run_dir} to {target}")
    return target


__all__ = ["Pretraining", "TrainingDiverged", "TrainingInterrupted"]

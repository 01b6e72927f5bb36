"""The batches a run trains and evaluates on: the DataLoaders an objective's datasets and collators make, and the
training stream of micro-batches, epoch after epoch, that a resumed run picks up at the example where the
interrupted one stopped. A streamed corpus has its own batches (training/streamed.py): its train loader is never
prepared by Accelerate, and its position is the readers' saved state."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate import skip_first_batches
from torch.utils.data import DataLoader

from .checkpoint import TrainerState


def is_streamed(dataset) -> bool:
    """A streamed corpus: its readers make their own micro-batches (training/streamed.py)."""
    return isinstance(dataset, torch.utils.data.IterableDataset)


def build_loaders(objective, train) -> tuple[DataLoader | None, DataLoader]:
    """(train, eval) loaders: the objective's own batch sampler, or `train.batch_size` rows shuffled, the last
    partial batch dropped (None for a streamed corpus: see StreamBatches); eval batches in order."""
    train_loader = None
    if not is_streamed(objective.train_dataset):
        if objective.train_batch_sampler is not None:
            batching = {"batch_sampler": objective.train_batch_sampler}
        else:
            batching = {"batch_size": train.batch_size, "shuffle": True, "drop_last": True}
        train_loader = DataLoader(objective.train_dataset, collate_fn=objective.train_collator,
                                  num_workers=train.num_workers, **batching)
    eval_loader = DataLoader(objective.eval_dataset, batch_size=train.batch_size, shuffle=False,
                             collate_fn=objective.eval_collator, num_workers=train.num_workers)
    return train_loader, eval_loader


def source_eval_loaders(accelerator, objective, train) -> dict[str, DataLoader]:
    """A mixture's held-out text per source (`objective.eval_datasets_by_source`), batched as the eval loader is
    and prepared by Accelerate; {} for one source."""
    return {
        name: accelerator.prepare(DataLoader(dataset, batch_size=train.batch_size, shuffle=False,
                                             collate_fn=objective.eval_collator, num_workers=train.num_workers))
        for name, dataset in objective.eval_datasets_by_source.items()
    }


def held_out_metrics(model, objective, accelerator, max_batches: int, loader) -> dict:
    """The objective's eval metrics over the first `max_batches` batches of `loader`, summed over ranks."""
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if index >= max_batches:
                break
            for key, value in objective.eval_sums(model, batch).items():
                sums[key] = sums.get(key, 0) + value
    totals = {k: accelerator.reduce(v.to(accelerator.device), reduction="sum").item() for k, v in sums.items()}
    model.train()
    return objective.eval_metrics(totals)


def prepare_batches(accelerator, objective, model, optimizer, train, resume_from: Path | None):
    """(model, optimizer, train batches, eval loader), prepared by Accelerate. A streamed corpus's train loader is
    not prepared (training/streamed.py says why): its batches come from this process's own readers, resumed from
    `resume_from`'s stream state."""
    train_loader, eval_loader = build_loaders(objective, train)
    if train_loader is None:
        from .streamed import StreamBatches

        model, optimizer, eval_loader = accelerator.prepare(model, optimizer, eval_loader)
        return model, optimizer, StreamBatches(objective, train, accelerator, resume_from), eval_loader
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    if len(train_loader) == 0:
        raise ValueError(
            f"train.batch_size={train.batch_size} is larger than the training set "
            f"({len(objective.train_dataset)} examples per process); lower it or add data."
        )
    return model, optimizer, TrainBatches(train_loader, objective, train.grad_accum), eval_loader


class TrainBatches:
    """Micro-batches of the (prepared) training loader; a new epoch starts when one ends. The position lives in the
    run's TrainerState (epoch, batches_in_epoch), which checkpoints hold; after a resume the first epoch skips the
    batches the interrupted run had already consumed."""

    def __init__(self, loader, objective, grad_accum: int):
        self.loader = loader
        self.objective = objective
        self.grad_accum = grad_accum
        self.resumed_at: tuple[int, int] | None = None
        self.iterator = None  # over the loader, for the epoch in progress

    def start(self, state: TrainerState) -> None:
        """Remember where this launch starts (a resumed run's epoch and position) before the first batch."""
        self.resumed_at = (state.epoch, state.batches_in_epoch)

    def next_step(self, state: TrainerState) -> tuple[list[dict], float]:
        """The micro-batches of one optimizer step, and the seconds spent waiting for them."""
        started = time.perf_counter()
        micro_batches = [self.next_batch(state) for _ in range(self.grad_accum)]
        return micro_batches, time.perf_counter() - started

    def next_batch(self, state: TrainerState) -> dict:
        if self.iterator is None:
            self.loader.set_epoch(state.epoch)
            self.objective.set_epoch(state.epoch)
            loader = self.loader
            if (state.epoch, state.batches_in_epoch) == self.resumed_at and state.batches_in_epoch:
                loader = skip_first_batches(self.loader, state.batches_in_epoch)
            self.iterator = iter(loader)
        try:
            batch = next(self.iterator)
        except StopIteration:
            self.iterator = None
            state.epoch += 1
            state.batches_in_epoch = 0
            return self.next_batch(state)
        state.batches_in_epoch += 1
        return batch

    def checkpoint_files(self) -> None:
        """Nothing besides the trainer state: the position is (epoch, batches_in_epoch)."""

    def log_reports(self) -> None:
        """Nothing to add: the corpus was cleaned and packed before the first step, and reported then."""

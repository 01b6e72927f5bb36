"""The batches a run trains and evaluates on: the DataLoaders an objective's datasets and collators make, and the
training stream of micro-batches, epoch after epoch, that a resumed run picks up at the example where the
interrupted one stopped."""

from __future__ import annotations

import time

import torch
from accelerate import skip_first_batches
from torch.utils.data import DataLoader

from .checkpoint import TrainerState


def is_streamed(dataset) -> bool:
    """A stream has no length and is read in order."""
    return isinstance(dataset, torch.utils.data.IterableDataset)


def build_loaders(objective, train) -> tuple[DataLoader, DataLoader]:
    """(train, eval) loaders: the objective's own batch sampler, or `train.batch_size` rows (shuffled, unless the
    corpus is streamed), the last partial batch dropped; eval batches in order."""
    if objective.train_batch_sampler is not None:
        batching = {"batch_sampler": objective.train_batch_sampler}
    elif is_streamed(objective.train_dataset):
        batching = {"batch_size": train.batch_size, "drop_last": True}
    else:
        batching = {"batch_size": train.batch_size, "shuffle": True, "drop_last": True}
    train_loader = DataLoader(objective.train_dataset, collate_fn=objective.train_collator,
                              num_workers=train.num_workers, **batching)
    eval_loader = DataLoader(objective.eval_dataset, batch_size=train.batch_size, shuffle=False,
                             collate_fn=objective.eval_collator, num_workers=train.num_workers)
    return train_loader, eval_loader


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

"""``DeepSpeedDataLoader``: the loader ``initialize(training_data=...)`` returns: each
data-parallel rank reads its own shard (``DistributedSampler``) in micro-batches.
``RepeatingLoader`` restarts a loader when it is exhausted (DeepSpeed's, for ``train_batch``
loops that never end an epoch)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler


class DeepSpeedDataLoader:
    def __init__(self, dataset, batch_size, pin_memory=False, collate_fn=None, num_local_io_workers=None,
                 data_sampler=None, data_parallel_world_size=1, data_parallel_rank=0, dataloader_drop_last=False):
        self.dataset = dataset
        self.batch_size = batch_size
        if data_sampler is None:
            data_sampler = DistributedSampler(dataset, num_replicas=data_parallel_world_size, rank=data_parallel_rank,
                                              shuffle=True, drop_last=dataloader_drop_last)
        self.data_sampler = data_sampler
        self.epoch = 0
        self._loader = DataLoader(dataset, batch_size=batch_size, sampler=data_sampler, collate_fn=collate_fn,
                                  num_workers=num_local_io_workers or 0,
                                  pin_memory=pin_memory and torch.accelerator.is_available(),
                                  drop_last=dataloader_drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.data_sampler, "set_epoch"):
            self.data_sampler.set_epoch(epoch)

    def __iter__(self):
        return iter(self._loader)

    def __len__(self) -> int:
        return len(self._loader)


class RepeatingLoader:
    """Iterate over ``loader`` forever: when it is exhausted it is iterated again (a new epoch;
    ``set_epoch`` is called on it first when it has one, so a shuffling sampler reshuffles)."""

    def __init__(self, loader):
        self.loader = loader
        self.epoch = 0
        self.data_iter = iter(self.loader)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self.data_iter)
        except StopIteration:
            self.epoch += 1
            if hasattr(self.loader, "set_epoch"):
                self.loader.set_epoch(self.epoch)
            self.data_iter = iter(self.loader)
            try:
                return next(self.data_iter)
            except StopIteration:
                raise ValueError("RepeatingLoader: the loader yields no batch; give it a non-empty dataset") from None

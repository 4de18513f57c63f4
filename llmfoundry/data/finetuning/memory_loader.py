"""A DataLoader over in-memory rows that shards them across ranks and can resume mid-epoch.

Each epoch orders the rows (shuffled with shuffle_seed + epoch, or in order), pads the order by repeating its
start so every rank gets as many rows (or, with drop_last, cuts it), and gives rank r every world-th row from r.
`state_dict()` holds the epoch and the examples this rank consumed in it; `load_state_dict` skips those.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from streaming.base.world import World
from torch.utils.data import DataLoader, Sampler


class EpochSampler(Sampler[int]):
    """This rank's row indices for the current epoch, from `skip` on."""

    def __init__(self, num_rows: int, shuffle: bool, seed: int, drop_last: bool) -> None:
        world = World.detect()  # torch.distributed, or RANK/WORLD_SIZE from the launcher
        self.rank, self.world = world.rank, world.num_ranks
        self.num_rows, self.shuffle, self.seed, self.drop_last = num_rows, shuffle, seed, drop_last
        self.epoch = 0
        self.skip = 0

    def _per_rank(self) -> int:
        return self.num_rows // self.world if self.drop_last else -(-self.num_rows // self.world)

    def __len__(self) -> int:
        return self._per_rank()

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_rows)
        total = self._per_rank() * self.world
        order = order.repeat(-(-total // self.num_rows))[:total]
        skip, self.skip = self.skip, 0
        return iter(order[self.rank::self.world][skip:].tolist())


class ResumableLoader(DataLoader):
    """DataLoader with state_dict/load_state_dict for the trainer's checkpoints; `examples_per_batch` is how many
    rows one batch consumes (more than the batch size when packing)."""

    def __init__(self, dataset: Any, sampler: EpochSampler, examples_per_batch: int, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=examples_per_batch, sampler=sampler, **kwargs)
        self.epoch_sampler = sampler
        self.examples_per_batch = examples_per_batch
        self.consumed = 0

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            self.consumed += self.examples_per_batch
            yield batch
        self.epoch_sampler.epoch += 1
        self.consumed = 0

    def state_dict(self) -> dict[str, int]:
        return {'epoch': self.epoch_sampler.epoch, 'consumed': self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch_sampler.epoch = int(state['epoch'])
        self.epoch_sampler.skip = self.consumed = int(state['consumed'])

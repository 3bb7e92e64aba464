"""The batch order: a pure function of (seed, epoch, rank, world size), so a resumed run sees the same batches.

Samples are shuffled within their group (bucket or latent shape), cut into batches of the group's batch size, and
the batches of all groups are shuffled together, so image and video batches are interleaved. The batch list is
then dealt round-robin to the data-parallel ranks; every rank gets the same number of batches.
"""
import math
from typing import Sequence

import numpy as np


class BucketBatchSampler:
    """Deterministic bucketed batches for one data-parallel rank.

    Args:
        group_ids: the group of each sample; negative ids mark samples left out (e.g. no bucket fits).
        batch_sizes: batch size of each group id.
        seed: base seed of the shuffle.
        rank: data-parallel rank of this process.
        world_size: number of data-parallel ranks.
        drop_last: drop incomplete batches (and the batches that do not divide evenly among ranks) instead of
            completing them with samples from the start of the same shuffled group / list.
    """

    def __init__(self, group_ids: Sequence[int], batch_sizes: Sequence[int], seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_sizes = list(batch_sizes)
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self._num_batches = self._count_batches()
        if self._num_batches == 0:
            raise ValueError(f"no batches: {int((self.group_ids >= 0).sum())} usable samples, batch sizes "
                             f"{self.batch_sizes}, world size {world_size}, drop_last={drop_last}")

    def _count_batches(self) -> int:
        total = 0
        for group, batch_size in enumerate(self.batch_sizes):
            members = int((self.group_ids == group).sum())
            total += members // batch_size if self.drop_last else math.ceil(members / batch_size)
        return total // self.world_size if self.drop_last else math.ceil(total / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self._num_batches

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of sample indices) for `epoch`."""
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for group, batch_size in enumerate(self.batch_sizes):
            members = rng.permutation(np.flatnonzero(self.group_ids == group))
            if len(members) == 0:
                continue
            count = len(members) // batch_size if self.drop_last else math.ceil(len(members) / batch_size)
            members = np.resize(members, count * batch_size)  # np.resize repeats from the start to fill
            batches.extend(members.reshape(count, batch_size))
        batches = [batches[i] for i in rng.permutation(len(batches))]
        total = self._num_batches * self.world_size
        batches = [batches[i % len(batches)] for i in range(total)]
        return batches[self.rank::self.world_size]

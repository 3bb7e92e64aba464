"""The batch order: a pure function of (seed, epoch, rank, world size), so a resumed run sees the same batches.

Samples are shuffled within their group (bucket or latent shape), cut into batches of the group's batch size, and
the batches of all groups are shuffled together, so image and video batches are interleaved. The batch list is
then dealt round-robin to the data-parallel ranks; every rank gets the same number of batches.

By default an epoch holds every sample once. With `image_video_ratio` r an epoch holds every video sample once and
r images per video sample, drawn afresh each epoch (a different share of a large image set, or images repeated from
a small one), whatever the CSV's proportion of images and videos; each image group gets its share of the images.
"""
import logging
import math
from typing import Optional, Sequence

import numpy as np

_logger = logging.getLogger(__name__)


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
        image_groups: the group ids that hold images (for `image_video_ratio`).
        image_video_ratio: image samples per video sample in an epoch (None: every sample once).
    """

    def __init__(self, group_ids: Sequence[int], batch_sizes: Sequence[int], seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, image_groups: Sequence[int] = (),
                 image_video_ratio: Optional[float] = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_sizes = list(batch_sizes)
        self.seed, self.rank, self.world_size, self.drop_last = seed, rank, world_size, drop_last
        self._samples_per_group = self._epoch_samples(set(image_groups), image_video_ratio)
        self._num_batches = self._count_batches()
        if self._num_batches == 0:
            raise ValueError(f"no batches: {int((self.group_ids >= 0).sum())} usable samples, batch sizes "
                             f"{self.batch_sizes}, world size {world_size}, drop_last={drop_last}")

    def _epoch_samples(self, image_groups, ratio) -> list[int]:
        """How many samples of each group an epoch takes."""
        sizes = [int((self.group_ids == group).sum()) for group in range(len(self.batch_sizes))]
        if ratio is None:
            return sizes
        if ratio < 0:
            raise ValueError(f"image_video_ratio must be >= 0, got {ratio}")
        videos = sum(n for g, n in enumerate(sizes) if g not in image_groups)
        images = sum(n for g, n in enumerate(sizes) if g in image_groups)
        if videos == 0:
            _logger.warning("image_video_ratio is set but the data holds no video sample: every image once per epoch")
            return sizes
        if images == 0 and ratio > 0:
            raise ValueError(f"image_video_ratio = {ratio} but the data holds no image sample")
        wanted = ratio * videos
        return [round(wanted * n / images) if g in image_groups else n for g, n in enumerate(sizes)]

    def _count_batches(self) -> int:
        total = 0
        for members, batch_size in zip(self._samples_per_group, self.batch_sizes):
            total += members // batch_size if self.drop_last else math.ceil(members / batch_size)
        return total // self.world_size if self.drop_last else math.ceil(total / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self._num_batches

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches (arrays of sample indices) for `epoch`."""
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for group, (wanted, batch_size) in enumerate(zip(self._samples_per_group, self.batch_sizes)):
            members = rng.permutation(np.flatnonzero(self.group_ids == group))
            if len(members) == 0 or wanted == 0:
                continue
            count = wanted // batch_size if self.drop_last else math.ceil(wanted / batch_size)
            members = np.resize(members, count * batch_size)  # np.resize repeats from the start to fill
            batches.extend(members.reshape(count, batch_size))
        batches = [batches[i] for i in rng.permutation(len(batches))]
        total = self._num_batches * self.world_size
        batches = [batches[i % len(batches)] for i in range(total)]
        return batches[self.rank::self.world_size]

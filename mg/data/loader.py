"""The data loader: the deterministic batch plan fed through a mindspore.dataset pipeline whose worker processes
decode, so the training step does not wait on decoding.

Iterating the loader yields one epoch of batches (dicts of NumPy arrays) from where it stands; `state_dict()` /
`load_state_dict()` carry {"epoch", "batch_index"} so a resumed run continues with the batch that came next.
Samples that failed to load in a worker travel with their batch (a JSON column) to the main process, which reports
each once and hands the list of bad samples to the next epoch's workers, so they are not tried again.
"""
import json
from dataclasses import dataclass
from typing import Optional, Union

import mindspore.dataset as msd

from mg.data.dataset import VideoDataset
from mg.data.sampler import BucketBatchSampler

_FAILED = "failed_samples"  # the pipeline's extra column: JSON [[sample index, reason], ...]


class _EpochBatches:
    """Random-access source for GeneratorDataset: item i is batch `start + i` of one epoch's plan on one rank."""

    def __init__(self, dataset: VideoDataset, batches: list, start: int, seed: int, epoch: int, rank: int):
        self.dataset, self.batches, self.start = dataset, batches, start
        self.seed, self.epoch, self.rank = seed, epoch, rank

    def __len__(self):
        return len(self.batches) - self.start

    def __getitem__(self, i):
        position = self.start + i
        indices = self.batches[position]
        # Every random draw (clip start, eps, text dropout) is keyed by where it happens in the plan.
        seeds = [[self.seed, self.epoch, self.rank, position, slot] for slot in range(len(indices))]
        batch, failed = self.dataset.load_batch(indices, seeds)
        return (*(batch[name] for name in self.dataset.column_names), json.dumps(failed))


@dataclass
class KindBatchSizes:
    """Batch sizes by kind of bucket; None keeps the bucket's own."""
    image_batch_size: Optional[int] = None
    video_batch_size: Optional[int] = None


def bucket_batch_sizes(buckets, batch_size) -> list:
    """The batch size of each bucket: its own, or `batch_size` (one int for all, or KindBatchSizes / its dict)."""
    if batch_size is None:
        return [b.batch_size for b in buckets]
    if isinstance(batch_size, int):
        by_kind = KindBatchSizes(batch_size, batch_size)
    else:
        by_kind = batch_size if isinstance(batch_size, KindBatchSizes) else KindBatchSizes(**dict(batch_size))
    sizes = []
    for bucket in buckets:
        size = by_kind.image_batch_size if bucket.is_image else by_kind.video_batch_size
        size = bucket.batch_size if size is None else size
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"dataloader.batch_size must be positive integers, got {batch_size}")
        sizes.append(size)
    return sizes


class VideoDataLoader:
    """Bucketed, sharded, resumable batches of a VideoDataset.

    Args:
        dataset: the dataset to batch.
        seed: seed of the batch order and of every per-sample random draw.
        rank: data-parallel rank of this process.
        world_size: number of data-parallel ranks.
        num_workers: decoding worker processes (0 or 1: decode in the main process).
        drop_last: drop incomplete batches instead of completing them with repeated samples.
        batch_size: overrides the buckets' batch sizes: one for all, or `{image_batch_size, video_batch_size}`.
        image_video_ratio: image samples per video sample in an epoch, whatever the data's proportion (the paper
            mixes about 1:10 in its joint stages: 0.1); None takes every sample once per epoch.
    """

    def __init__(self, dataset: VideoDataset, seed: int = 42, rank: int = 0, world_size: int = 1,
                 num_workers: int = 2, drop_last: bool = False,
                 batch_size: Optional[Union[int, KindBatchSizes]] = None, image_video_ratio: Optional[float] = None):
        self.dataset = dataset
        image_groups = [i for i, bucket in enumerate(dataset.buckets) if bucket.is_image]
        self.sampler = BucketBatchSampler(dataset.group_ids, bucket_batch_sizes(dataset.buckets, batch_size), seed,
                                          rank, world_size, drop_last, image_groups, image_video_ratio)
        self.seed, self.rank = seed, rank
        self.num_workers = num_workers
        self.epoch, self.batch_index = 0, 0

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return len(self.sampler)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_index": self.batch_index}

    def load_state_dict(self, state: dict):
        if not 0 <= state["batch_index"] <= len(self) or state["epoch"] < 0:
            raise ValueError(f"loader state {state} is out of range ({len(self)} batches per epoch)")
        self.epoch, self.batch_index = int(state["epoch"]), int(state["batch_index"])

    def _pipeline(self) -> msd.GeneratorDataset:
        source = _EpochBatches(self.dataset, self.sampler.batches(self.epoch), self.batch_index, self.seed,
                               self.epoch, self.rank)
        parallel = self.num_workers > 1
        return msd.GeneratorDataset(source, column_names=[*self.dataset.column_names, _FAILED], shuffle=False,
                                    num_parallel_workers=max(1, self.num_workers), python_multiprocessing=parallel)

    def __iter__(self):
        """The rest of the current epoch; afterwards the loader stands at the start of the next epoch."""
        if self.batch_index >= len(self):
            self.epoch, self.batch_index = self.epoch + 1, 0
        for batch in self._pipeline().create_dict_iterator(num_epochs=1, output_numpy=True):
            self.batch_index += 1
            self.dataset.note_skipped([tuple(item) for item in json.loads(str(batch.pop(_FAILED)))])
            yield batch
        self.dataset.end_epoch(self.epoch)
        self.epoch, self.batch_index = self.epoch + 1, 0

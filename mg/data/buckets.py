"""Buckets by aspect ratio and length: every sample in a bucket is cropped/sampled to the same (frames, height, width),
so every latent in it has the same shape and batches need no padding.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from mg.data.transforms import span


@dataclass(frozen=True)
class Bucket:
    """A target shape and the batch size used for it.

    Args:
        height: pixel height (a multiple of `SPATIAL_MULTIPLE`).
        width: pixel width (a multiple of `SPATIAL_MULTIPLE`).
        frames: number of frames; 1 for image buckets.
        batch_size: samples per batch for this bucket.
    """

    height: int
    width: int
    frames: int
    batch_size: int

    @property
    def is_image(self) -> bool:
        return self.frames == 1


SPATIAL_MULTIPLE = 8  # the TAE compresses H and W by 8


def parse_buckets(buckets: Sequence[Union[Bucket, dict]]) -> list[Bucket]:
    """Check a bucket list (Bucket objects or dicts with the same keys); raise ValueError naming the bad entry."""
    if not buckets:
        raise ValueError("buckets: at least one bucket is required")
    parsed = []
    for i, spec in enumerate(buckets):
        if isinstance(spec, dict):
            unknown = set(spec) - {"height", "width", "frames", "batch_size"}
            missing = {"height", "width", "frames", "batch_size"} - set(spec)
            if unknown or missing:
                raise ValueError(f"buckets[{i}] = {spec}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
            spec = Bucket(**spec)
        for name in ("height", "width", "frames", "batch_size"):
            value = getattr(spec, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"buckets[{i}].{name} must be a positive integer, got {value!r}")
        if spec.height % SPATIAL_MULTIPLE or spec.width % SPATIAL_MULTIPLE:
            raise ValueError(f"buckets[{i}]: height and width must be multiples of {SPATIAL_MULTIPLE}, "
                             f"got {spec.height}x{spec.width}")
        shape = (spec.frames, spec.height, spec.width)
        if any((b.frames, b.height, b.width) == shape for b in parsed):
            raise ValueError(f"buckets[{i}]: shape frames={spec.frames} {spec.height}x{spec.width} appears twice")
        parsed.append(spec)
    return parsed


def assign_bucket(height: int, width: int, available_frames: Optional[int], buckets: Sequence[Bucket],
                  step: float = 1.0) -> Optional[int]:
    """Index of the bucket for a sample, or None when none fits.

    Images (`available_frames` None) go to frame-1 buckets, videos to the others. Among the buckets whose frame
    count the video can fill when sampling every `step` source frames, the nearest aspect ratio (in log scale)
    wins, then the longest clip.
    """
    aspect = math.log(height / width)
    best, best_key = None, None
    for index, bucket in enumerate(buckets):
        if available_frames is None:
            if not bucket.is_image:
                continue
        elif bucket.is_image or span(bucket.frames, step) > available_frames:
            continue
        key = (abs(aspect - math.log(bucket.height / bucket.width)), -bucket.frames)
        if best_key is None or key < best_key:
            best, best_key = index, key
    return best

"""What each rank feeds the model: its data-parallel share of a batch and the random draws (t, noise) it shares with
the other ranks of its sample (TP / CP / SP ranks of one data-parallel rank must draw identically)."""
import numpy as np

from mg.parallel.groups import get_parallel_groups


def sample_rng(seed: int, step: int, dp_rank: int = None) -> np.random.Generator:
    """The NumPy Generator for t and noise at `step`: equal on the ranks that share a sample, different across
    data-parallel ranks (default: this process's data-parallel rank)."""
    if dp_rank is None:
        dp_rank = get_parallel_groups().dp_rank
    return np.random.default_rng([seed, step, dp_rank])


def shard_batch(array, dp_rank: int = None, dp: int = None):
    """This data-parallel rank's rows of a global batch (axis 0 must split evenly)."""
    if dp_rank is None or dp is None:
        groups = get_parallel_groups()
        dp_rank, dp = groups.dp_rank, groups.dp
    if len(array) % dp:
        raise ValueError(f"a global batch of {len(array)} cannot be split evenly over {dp} data-parallel ranks")
    per_rank = len(array) // dp
    return array[dp_rank * per_rank:(dp_rank + 1) * per_rank]

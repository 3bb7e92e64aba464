"""Rank and world size for tools that shard their work over msrun processes."""
import os
from typing import Optional


def rank_and_world_size(rank: Optional[int] = None, world_size: Optional[int] = None) -> tuple[int, int]:
    """Explicit values win; under msrun (MS_WORKER_NUM set) the communication group is initialised and asked."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None or not 0 <= rank < world_size:
            raise ValueError(f"give both rank and world_size with 0 <= rank < world_size, got {rank}, {world_size}")
        return rank, world_size
    if "MS_WORKER_NUM" not in os.environ:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init

    init()
    return get_rank(), get_group_size()

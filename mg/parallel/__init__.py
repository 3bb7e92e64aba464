"""Distributed training and sampling: process groups (dp x cp x tp), tensor / sequence / context parallel layers
swapped in by `parallelize`, data-parallel AdamW with ZeRO stages 0-3, layout-independent checkpoints.
See docs/parallel.md."""
from mg.parallel.checkpoint import (gather_arrays, gather_optimizer_state, gather_state_dict,
                                    load_gathered_optimizer_state, load_gathered_state_dict, local_arrays)
from mg.parallel.collectives import METER
from mg.parallel.config import ParallelConfig
from mg.parallel.groups import ParallelGroups, get_parallel_groups, init_parallel
from mg.parallel.parallelize import ParallelPlan, parallelize
from mg.parallel.sharded_checkpoint import Piece, ShardedCheckpoint, TensorLayout, consolidate, is_sharded_checkpoint
from mg.parallel.zero import ParallelAdamW

__all__ = ["METER", "ParallelAdamW", "ParallelConfig", "ParallelGroups", "ParallelPlan", "Piece", "ShardedCheckpoint",
           "TensorLayout", "consolidate", "gather_arrays", "gather_optimizer_state", "gather_state_dict",
           "get_parallel_groups", "init_parallel", "is_sharded_checkpoint", "load_gathered_optimizer_state",
           "load_gathered_state_dict", "local_arrays", "parallelize"]

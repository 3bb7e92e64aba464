"""Process groups of a dp x cp x tp layout, created once and queried anywhere.

Ranks are laid out with tensor parallelism innermost (neighbouring ranks share the fastest links):

    rank = (dp_rank * cp + cp_rank) * tp + tp_rank

Sequence parallelism rides on the TP group. The token sequence of one sample is sharded over the "seq" group
(cp x tp ranks with the same dp_rank) when SP is on, over the CP group otherwise. Besides dp, cp and tp the layout
holds the unions that gradient reductions need: "dp_cp" (ranks with the same tp_rank), "seq" (same dp_rank) and
"world". Each group is a `GroupComm` (mg.parallel.collectives); a group of one rank communicates nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from mg.parallel.collectives import GroupComm

GROUP_KINDS = ("dp", "cp", "tp", "dp_cp", "seq", "world")


@dataclass
class ParallelGroups:
    dp: int
    cp: int
    tp: int
    rank: int
    comms: dict = field(repr=False)

    @property
    def world_size(self) -> int:
        return self.dp * self.cp * self.tp

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def cp_rank(self) -> int:
        return (self.rank // self.tp) % self.cp

    @property
    def dp_rank(self) -> int:
        return self.rank // (self.tp * self.cp)

    def comm(self, kind: str) -> GroupComm:
        if kind not in self.comms:
            raise KeyError(f"unknown process group {kind!r}; choose one of {GROUP_KINDS}")
        return self.comms[kind]


def layout_ranks(dp: int, cp: int, tp: int, rank: int) -> dict[str, list[int]]:
    """The ranks of every group that `rank` belongs to (pure arithmetic, no communication)."""
    tp_rank, cp_rank, dp_rank = rank % tp, (rank // tp) % cp, rank // (tp * cp)

    def rank_of(d, c, t):
        return (d * cp + c) * tp + t

    return {
        "dp": [rank_of(d, cp_rank, tp_rank) for d in range(dp)],
        "cp": [rank_of(dp_rank, c, tp_rank) for c in range(cp)],
        "tp": [rank_of(dp_rank, cp_rank, t) for t in range(tp)],
        "dp_cp": [rank_of(d, c, tp_rank) for d in range(dp) for c in range(cp)],
        "seq": [rank_of(dp_rank, c, t) for c in range(cp) for t in range(tp)],
        "world": list(range(dp * cp * tp)),
    }


_CURRENT: ParallelGroups | None = None
_CREATED: dict = {}  # (dp, cp, tp) -> ParallelGroups: each layout's groups are created once per process


def launched_processes() -> int:
    """How many processes msrun launched (1 without msrun), from its environment: nothing is initialised."""
    return int(os.environ.get("MS_WORKER_NUM", "1"))


def init_parallel(dp: int | None = None, tp: int = 1, cp: int = 1) -> ParallelGroups:
    """Initialise communication (under msrun) and create the groups of the dp x cp x tp layout.

    dp * cp * tp must equal the number of launched processes; `dp` None takes the processes that tp x cp leave.
    Without msrun only the 1 x 1 x 1 layout is possible. Calling it again with another layout creates that layout's
    groups (names are unique per layout) and makes it the current one (tests try several layouts in one launch); a
    layout seen before is reused.
    """
    global _CURRENT
    for name, value in (("tp", tp), ("cp", cp)) + ((("dp", dp),) if dp is not None else ()):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"parallel.{name} must be a positive integer, got {value!r}")
    if "MS_WORKER_NUM" in os.environ:
        from mindspore.communication import get_group_size, get_rank, init
        init()
        rank, world = get_rank(), get_group_size()
    else:
        rank, world = 0, 1
    if dp is None:
        if world % (tp * cp):
            raise ValueError(f"parallel.tp={tp} x parallel.cp={cp} does not divide the {world} processes launched "
                             "(msrun --worker_num)")
        dp = world // (tp * cp)
    if dp * cp * tp != world:
        raise ValueError(f"parallel layout dp={dp} x cp={cp} x tp={tp} = {dp * cp * tp} processes, but {world} "
                         "were launched (msrun --worker_num); make the product equal the number of processes")
    if (dp, cp, tp) not in _CREATED:
        comms = {kind: GroupComm.create(f"mg_{kind}_d{dp}c{cp}t{tp}", ranks, rank, world)
                 for kind, ranks in layout_ranks(dp, cp, tp, rank).items()}
        _CREATED[(dp, cp, tp)] = ParallelGroups(dp, cp, tp, rank, comms)
    _CURRENT = _CREATED[(dp, cp, tp)]
    return _CURRENT


def get_parallel_groups() -> ParallelGroups:
    """The layout made by the last `init_parallel` (a single-process layout if it was never called)."""
    return _CURRENT if _CURRENT is not None else init_parallel(1, 1, 1)

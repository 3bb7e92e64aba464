"""The `parallel` section of a training or inference config (bound to YAML by the entry points)."""
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ParallelConfig:
    """dp x cp x tp must equal the number of processes msrun launches.

    dp: data-parallel ranks (the ZeRO stage is train.settings.zero_stage); null: the processes that tp x cp leave.
    tp: tensor-parallel ranks (divides the heads, model width and FFN width; keep it inside a node); cp:
    context-parallel ranks (shards the tokens; K and V are all-gathered); sp: sequence parallelism on the TP group
    (norms and residuals on token shards; recommended whenever tp > 1).
    """
    dp: Optional[int] = None
    tp: int = 1
    cp: int = 1
    sp: bool = False

    def __post_init__(self):
        for name in ("dp", "tp", "cp"):
            value = getattr(self, name)
            if name == "dp" and value is None:
                continue
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"parallel.{name} must be a positive integer, got {value!r}")

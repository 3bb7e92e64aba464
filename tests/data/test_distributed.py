"""Shard selection of the caching tools outside msrun."""
import pytest

from mg.data.distributed import rank_and_world_size


def test_explicit_shard_and_single_process_default(monkeypatch):
    monkeypatch.delenv("MS_WORKER_NUM", raising=False)
    assert rank_and_world_size() == (0, 1)
    assert rank_and_world_size(1, 3) == (1, 3)
    for bad in ((3, 3), (1, None), (None, 2), (-1, 2)):
        with pytest.raises(ValueError, match="rank"):
            rank_and_world_size(*bad)

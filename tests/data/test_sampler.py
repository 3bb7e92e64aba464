"""The batch plan: deterministic, homogeneous per group, complete, and evenly sharded."""
import numpy as np
import pytest

from mg.data.sampler import BucketBatchSampler

GROUPS = np.array([0] * 10 + [1] * 7 + [-1] * 3 + [2] * 2)  # three groups plus three left-out samples
SIZES = [4, 3, 1]


def test_batches_are_homogeneous_and_cover_every_usable_sample():
    batches = BucketBatchSampler(GROUPS, SIZES, seed=1).batches(0)
    # ceil(10/4) + ceil(7/3) + 2 = 3 + 3 + 2 batches
    assert len(batches) == 8
    for batch in batches:
        group = GROUPS[batch[0]]
        assert group >= 0 and (GROUPS[batch] == group).all() and len(batch) == SIZES[group]
    seen = np.concatenate(batches)
    assert set(seen) == set(np.flatnonzero(GROUPS >= 0))


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = BucketBatchSampler(GROUPS, SIZES, seed=3)
    b = BucketBatchSampler(GROUPS, SIZES, seed=3)
    for epoch in (0, 5):
        assert [x.tolist() for x in a.batches(epoch)] == [x.tolist() for x in b.batches(epoch)]
    assert [x.tolist() for x in a.batches(0)] != [x.tolist() for x in a.batches(1)]
    other_seed = BucketBatchSampler(GROUPS, SIZES, seed=4)
    assert [x.tolist() for x in a.batches(0)] != [x.tolist() for x in other_seed.batches(0)]


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_get_equal_shares_of_the_single_process_plan(world_size):
    full = [x.tolist() for x in BucketBatchSampler(GROUPS, SIZES, seed=1).batches(2)]
    shards = [BucketBatchSampler(GROUPS, SIZES, seed=1, rank=r, world_size=world_size) for r in range(world_size)]
    lengths = {len(s) for s in shards}
    assert lengths == {-(-len(full) // world_size)}  # every rank runs the same number of steps
    for rank, shard in enumerate(shards):
        batches = [x.tolist() for x in shard.batches(2)]
        assert len(batches) == len(shard)
        expected = [full[i % len(full)] for i in range(rank, len(shard) * world_size, world_size)]
        assert batches == expected


def test_drop_last_keeps_only_full_batches():
    sampler = BucketBatchSampler(GROUPS, SIZES, seed=0, drop_last=True)
    batches = sampler.batches(0)
    assert len(batches) == len(sampler) == 2 + 2 + 2
    assert len(np.unique(np.concatenate(batches))) == sum(len(b) for b in batches)  # no repeats


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler(GROUPS, SIZES, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no batches"):
        BucketBatchSampler([0, 0], [4], drop_last=True)


def test_image_video_ratio_sets_the_share_of_images_whatever_the_data_holds():
    groups = np.array([0] * 30 + [1] * 10 + [2] * 20)  # images in groups 0 and 1 (40 in all), 20 videos in group 2
    sampler = BucketBatchSampler(groups, [2, 2, 1], seed=3, image_groups=[0, 1], image_video_ratio=0.1)
    for epoch in range(3):
        samples = np.concatenate(sampler.batches(epoch))
        kinds = groups[samples]
        assert (kinds == 2).sum() == 20 and set(samples[kinds == 2]) == set(range(40, 60))  # every video once
        assert ((kinds == 0).sum(), (kinds == 1).sum()) == (2, 0)  # 2 images: their groups' shares rounded (1.5, 0.5)
        assert len(sampler.batches(epoch)) == len(sampler)
    drawn = [set(np.concatenate(sampler.batches(e))[groups[np.concatenate(sampler.batches(e))] == 0]) for e in range(4)]
    assert len(set().union(*drawn)) > 2  # each epoch draws other images
    many = BucketBatchSampler(groups, [2, 2, 1], seed=3, image_groups=[0, 1], image_video_ratio=4.0)
    kinds = groups[np.concatenate(many.batches(0))]
    assert ((kinds == 0).sum(), (kinds == 1).sum(), (kinds == 2).sum()) == (60, 20, 20)  # 80 images: repeated


def test_image_video_ratio_needs_both_kinds(caplog):
    with caplog.at_level("WARNING", logger="mg.data"):
        only_images = BucketBatchSampler(np.array([0, 0]), [1], image_groups=[0], image_video_ratio=0.1)
    assert len(only_images) == 2 and "no video sample: every image once per epoch" in caplog.text
    with pytest.raises(ValueError, match="no image sample"):
        BucketBatchSampler(np.array([1, 1]), [1, 1], image_groups=[0], image_video_ratio=0.1)

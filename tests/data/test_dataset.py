"""The pixel-mode dataset and the loader on real files: decode, sample, resize, bucket, batch, skip, resume."""
import logging

import numpy as np
import pytest

from mg.data import Bucket, VideoDataLoader, VideoDataset

BUCKETS = [
    Bucket(32, 32, 1, 2),  # image, square
    Bucket(24, 48, 1, 2),  # image, wide
    Bucket(32, 40, 8, 2),  # video, landscape (48x64 sources)
    Bucket(40, 32, 8, 1),  # video, portrait (64x48 sources)
]


@pytest.fixture
def csv_path(media, write_csv):
    rows = [[media.landscape, "a wide clip", 20, 40, 48, 64],
            [media.portrait, "a tall clip", "", "", "", ""],
            [media.image_png, "a square picture", "", "", "", ""],
            [media.image_jpg, "a wide picture", "", "", "", ""],
            # with metadata in the CSV the file is not probed, so it fails only when decoded
            [media.corrupt, "broken but announced", 20, 40, 48, 64],
            [media.truncated, "cut short", "", "", "", ""],
            [media.missing, "never written", "", "", "", ""]]
    return write_csv(rows, columns=("video", "caption", "fps", "frames", "height", "width"))


def make(csv_path, media, **kwargs):
    kwargs.setdefault("target_fps", 10)
    return VideoDataset(csv_path, BUCKETS, video_folder=media.folder, **kwargs)


def test_missing_required_column_fails_at_construction(media, write_csv):
    path = write_csv([[media.landscape, "x"]], columns=("video", "text"))
    with pytest.raises(ValueError, match=r"data.csv: missing required column\(s\) \['caption'\]"):
        VideoDataset(path, BUCKETS)


def test_bad_bucket_spec_fails_at_construction(csv_path):
    with pytest.raises(ValueError, match="multiples of 8"):
        VideoDataset(csv_path, [{"height": 30, "width": 32, "frames": 1, "batch_size": 1}])


def test_buckets_and_skipped_files(csv_path, media, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = make(csv_path, media)
    by_video = {s.row.video: s.group for s in dataset.samples}
    assert by_video == {media.landscape: 2, media.portrait: 3, media.image_png: 0, media.image_jpg: 1,
                        media.corrupt: 2}
    for bad in (media.truncated, media.missing):
        assert media.path(bad) in caplog.text


def test_video_is_sampled_at_target_fps_resized_and_in_range(csv_path, media, grey_level):
    dataset = make(csv_path, media, random_clip_start=False)
    index = [s.row.video for s in dataset.samples].index(media.landscape)
    sample = dataset.load_sample(index, np.random.default_rng(0))
    video = sample["video"]
    assert video.shape == (3, 8, 32, 40) and video.dtype == np.float32
    assert video.min() >= -1.0 and video.max() <= 1.0
    assert sample["fps"] == 10.0 and sample["caption"] == "a wide clip"
    # 20 -> 10 FPS is every 2nd frame; 8 frames span 15 of 40, the middle clip starts at round(25 / 2) = 12
    levels = [grey_level((frame + 1.0) * 127.5) for frame in video.transpose(1, 0, 2, 3)]
    assert levels == [12, 14, 16, 18, 20, 22, 24, 26]


def test_image_sample_is_a_one_frame_video(csv_path, media, png_pattern):
    dataset = make(csv_path, media)
    index = [s.row.video for s in dataset.samples].index(media.image_png)
    sample = dataset.load_sample(index, np.random.default_rng(0))
    assert sample["video"].shape == (3, 1, 32, 32) and sample["fps"] == 0.0
    assert sample["video"].min() >= -1.0 and sample["video"].max() <= 1.0


def test_undecodable_sample_is_replaced_from_its_bucket_and_not_tried_again(csv_path, media, monkeypatch):
    dataset = make(csv_path, media)
    corrupt = [s.row.video for s in dataset.samples].index(media.corrupt)
    tried = []
    load_sample = dataset.load_sample
    monkeypatch.setattr(dataset, "load_sample", lambda i, rng: tried.append(i) or load_sample(i, rng))
    batch, failed = dataset.load_batch([corrupt, corrupt], [[0, 1], [0, 2]])
    assert batch["video"].shape == (2, 3, 8, 32, 40)
    assert list(batch["caption"]) == ["a wide clip", "a wide clip"]
    assert [index for index, _ in failed] == [corrupt] and tried.count(corrupt) == 1  # the second draw passes it over


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_file_is_reported_once_per_run_with_an_epoch_summary(csv_path, media, caplog, workers):
    dataset = make(csv_path, media)
    loader = VideoDataLoader(dataset, seed=5, num_workers=workers)
    with caplog.at_level(logging.WARNING, logger="mg.data"):
        for _ in range(3):
            list(loader)
    reports = [r.getMessage() for r in caplog.records if media.path(media.corrupt) in r.getMessage()]
    assert len(reports) == 1 and "for the rest of this run" in reports[0]
    summaries = [r.getMessage() for r in caplog.records if "sample loads failed" in r.getMessage()]
    assert summaries == ["epoch 0: 1 sample loads failed and were replaced from the same bucket; 1 of 5 samples are "
                         "unusable"]  # later epochs pass the bad file over without trying it


def test_rows_with_non_utf8_or_empty_captions_are_skipped_naming_the_line(media, tmp_path, caplog):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"video,caption\n" + f"{media.image_png},a square picture\n".encode()
                     + f"{media.image_jpg},caf\xe9 in latin-1\n".encode("latin-1")
                     + f"{media.landscape},\n".encode())
    with caplog.at_level(logging.WARNING, logger="mg.data"):
        dataset = VideoDataset(str(path), BUCKETS, video_folder=media.folder, target_fps=10)
    assert [s.row.video for s in dataset.samples] == [media.image_png]
    assert f"{path}, line 3: skipping {media.image_jpg!r}: its path or caption is not UTF-8 text" in caplog.text
    assert f"{path}, line 4: skipping {media.landscape!r}: empty caption" in caplog.text
    kept = VideoDataset(str(path), BUCKETS, video_folder=media.folder, target_fps=10, require_captions=False)
    assert [s.row.video for s in kept.samples] == [media.image_png, media.landscape]


def test_text_dropout_rate(csv_path, media):
    dataset = make(csv_path, media, text_drop_prob=0.3)
    index = [s.row.video for s in dataset.samples].index(media.image_jpg)
    captions = [dataset.load_sample(index, np.random.default_rng([7, i]))["caption"] for i in range(400)]
    assert set(captions) == {"", "a wide picture"}
    assert abs(captions.count("") / 400 - 0.3) < 0.07  # binomial sd ~0.023


def _as_lists(batches):
    return [{k: v.tolist() for k, v in b.items()} for b in batches]


def test_loader_batches_workers_and_resume(csv_path, media):
    dataset = make(csv_path, media)
    loader = VideoDataLoader(dataset, seed=5, num_workers=0)
    epoch0 = list(loader)
    assert len(epoch0) == len(loader) == 4  # one batch per bucket: 1 png, 1 jpg, 2 landscape, 1 portrait
    for batch in epoch0:
        assert set(batch) == {"video", "fps", "caption"}
        shape = batch["video"].shape
        assert any(shape == (b.batch_size, 3, b.frames, b.height, b.width) for b in BUCKETS)
    assert loader.state_dict() == {"epoch": 1, "batch_index": 0}

    # Worker processes give exactly the same batches as decoding in the main process.
    parallel = VideoDataLoader(dataset, seed=5, num_workers=2)
    assert _as_lists(list(parallel)) == _as_lists(epoch0)

    # Stop after two batches of epoch 1, resume in a new loader: the rest is what the first loader would give.
    first = VideoDataLoader(dataset, seed=5, num_workers=0)
    first.load_state_dict({"epoch": 1, "batch_index": 0})
    iterator = iter(first)
    head = [next(iterator), next(iterator)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batch_index": 2}
    tail = list(iterator)
    resumed = VideoDataLoader(dataset, seed=5, num_workers=0)
    resumed.load_state_dict(state)
    assert _as_lists(list(resumed)) == _as_lists(tail)
    assert _as_lists(head + tail) != _as_lists(epoch0)  # a new epoch is reshuffled


def test_sharded_loaders_split_the_epoch(csv_path, media):
    dataset = make(csv_path, media)
    ranks = [VideoDataLoader(dataset, seed=5, rank=r, world_size=2, num_workers=0) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    single = VideoDataLoader(dataset, seed=5, num_workers=0)
    by_rank = [[c for b in loader for c in b["caption"].tolist()] for loader in ranks]
    assert sorted(by_rank[0] + by_rank[1]) == sorted(c for b in single for c in b["caption"].tolist())
    assert not set(by_rank[0]) & set(by_rank[1])


def test_batch_sizes_by_kind_override_the_buckets(csv_path, media):
    dataset = make(csv_path, media)
    by_kind = VideoDataLoader(dataset, num_workers=0, batch_size={"image_batch_size": 1, "video_batch_size": 2})
    assert by_kind.sampler.batch_sizes == [1, 1, 2, 2]
    assert VideoDataLoader(dataset, num_workers=0, batch_size=3).sampler.batch_sizes == [3, 3, 3, 3]
    assert VideoDataLoader(dataset, num_workers=0).sampler.batch_sizes == [b.batch_size for b in BUCKETS]
    with pytest.raises(ValueError, match="dataloader.batch_size must be positive"):
        VideoDataLoader(dataset, num_workers=0, batch_size={"image_batch_size": 0})


def test_reference_images_are_read_at_the_tower_size_dropped_and_skipped_when_not_asked(media, write_csv, png_pattern):
    csv_path = write_csv([[media.landscape, "a wide clip", media.image_png], [media.portrait, "a tall clip", ""]],
                         columns=("video", "caption", "reference_image"))
    dataset = make(csv_path, media, reference_size=20)
    assert dataset.has_references and {"reference", "reference_mask"} <= set(dataset.column_names)
    given, none = (dataset.load_sample(i, np.random.default_rng(0)) for i in range(2))
    assert given["reference"].shape == (3, 20, 20) and given["reference_mask"] == 1.0
    expected = png_pattern.reshape(20, 2, 20, 2, 3).mean(axis=(1, 3)) / 127.5 - 1  # 40 -> 20 px, area averaging
    np.testing.assert_allclose(given["reference"].transpose(1, 2, 0), expected, atol=0.01)
    assert none["reference_mask"] == 0.0 and not none["reference"].any()
    dropped = make(csv_path, media, reference_size=20, reference_drop_prob=1.0).load_sample(0, np.random.default_rng(0))
    assert dropped["reference_mask"] == 0.0 and not dropped["reference"].any()
    plain = make(csv_path, media)  # no reference size: a cache tool, a model without a tower
    assert plain.has_references and "reference" not in plain.column_names
    assert "reference" not in plain.load_sample(0, np.random.default_rng(0))

"""The dataset's constructor binds to YAML with jsonargparse, as the training entry point does."""
import pytest
from jsonargparse import ArgumentParser

from mg.data import Bucket, VideoDataLoader, VideoDataset


def test_yaml_binds_to_the_dataset_and_loader(media, write_csv, tmp_path):
    csv_path = write_csv([[media.image_png, "a picture"], [media.landscape, "a clip"]])
    config = tmp_path / "data.yaml"
    config.write_text(f"""
dataset:
  csv_path: {csv_path}
  video_folder: {media.folder}
  target_fps: 10
  text_drop_prob: 0.1
  buckets:
    - {{height: 16, width: 16, frames: 1, batch_size: 2}}
    - {{height: 16, width: 24, frames: 8, batch_size: 1}}
loader:
  seed: 3
  num_workers: 0
""")
    parser = ArgumentParser()
    parser.add_argument("--config", action="config")
    parser.add_class_arguments(VideoDataset, "dataset")
    parser.add_class_arguments(VideoDataLoader, "loader", skip={"dataset"}, instantiate=False)
    cfg = parser.parse_args(["--config", str(config), "--dataset.text_drop_prob", "0.2"])
    init = parser.instantiate(cfg)
    dataset = init.dataset
    assert dataset.buckets == [Bucket(16, 16, 1, 2), Bucket(16, 24, 8, 1)]
    assert dataset.text_drop_prob == 0.2 and len(dataset) == 2
    loader = VideoDataLoader(dataset, **cfg.loader)
    assert len(loader) == 2


def test_bad_bucket_in_yaml_fails_at_parse(tmp_path):
    parser = ArgumentParser()
    parser.add_class_arguments(VideoDataset, "dataset")
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset.csv_path", "x.csv", "--dataset.buckets", '[{"height": 16, "frames": 1}]'])

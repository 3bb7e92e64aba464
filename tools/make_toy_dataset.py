"""Write the toy world: coloured shapes (4 colours x 3 shapes) moving in 4 directions over a grey background,
captioned with colour, shape, direction and FPS, plus still images; some combinations held out for evaluation.

    python tools/make_toy_dataset.py --output_folder data/toy --seed 0 \
        [--holdout '["red circle left", "green triangle right"]'] [--height 64 --width 64 --num_frames 17 --fps 8]

Writes <output_folder>/{videos/*.mp4, images/*.png, train.csv, heldout.csv, toy_world.json}; the CSVs are in the
training dataset format (docs/data.md) with extra label columns colour, shape, direction.
"""
import logging
from typing import List, Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
from jsonargparse import auto_cli

from mg.data.toy_world import DEFAULT_HOLDOUT, DEFAULT_JITTER, write_toy_dataset


def main(output_folder: str, seed: int = 0, height: int = 64, width: int = 64, num_frames: int = 17, fps: int = 8,
         videos_per_combo: int = 6, images_per_pair: int = 4, holdout: List[str] = list(DEFAULT_HOLDOUT),
         position_jitter: Optional[int] = DEFAULT_JITTER, shape_size: Optional[int] = None):
    """Make the toy dataset (deterministic from the arguments).

    Args:
        output_folder: new or empty folder to write into.
        seed: random seed of positions and sizes.
        height: frame height in pixels (64 keeps 8x8 latents; at 32 the mp4 codec blurs small shapes).
        width: frame width in pixels.
        num_frames: frames per video (17 -> 3 latent frames).
        fps: frame rate written into the files, the CSV and the captions.
        videos_per_combo: videos per (colour, shape, direction).
        images_per_pair: still images per (colour, shape).
        holdout: "colour shape direction" combinations kept out of train.csv and written to heldout.csv.
        position_jitter: pixels a shape's start may lie from the place that centres its path (null: anywhere).
        shape_size: shape width in pixels (+-1/16 per clip; null: a quarter of the shorter side).
    """
    counts = write_toy_dataset(output_folder, seed, height, width, num_frames, fps, videos_per_combo,
                               images_per_pair, holdout, position_jitter, shape_size)
    logging.getLogger("make_toy_dataset").info("wrote %s in %s", counts, output_folder)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    auto_cli(main, as_positional=False)

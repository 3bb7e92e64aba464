"""Write the toy world for personalization: 48 subjects (squares with a pattern and a palette of their own, which
captions never describe) moving in 4 directions, with reference images of the subject; some subjects held out.

    python tools/make_toy_subject_data.py --output_folder data/toy_subjects --seed 0 \
        [--unseen '["ring-red-yellow", "checks-green-blue"]'] [--videos_per_subject 4 --images_per_subject 2]

Writes <output_folder>/{videos/*.mp4, images/*.png, references/*.png, train_paired.csv, train_cross.csv,
heldout.csv, subjects.json}; the CSVs are in the training dataset format (docs/data.md) with a `reference_image`
column and labels subject, direction, pairing (mg.data.toy_subjects.write_subject_dataset).
"""
import logging
from typing import List

import mg  # noqa: F401  (quiet logging before mindspore loads)
from jsonargparse import auto_cli

from mg.data.toy_subjects import DEFAULT_UNSEEN, write_subject_dataset


def main(output_folder: str, seed: int = 0, height: int = 64, width: int = 64, num_frames: int = 17, fps: int = 8,
         videos_per_subject: int = 4, images_per_subject: int = 2, unseen: List[str] = list(DEFAULT_UNSEEN)):
    """Make the toy subject dataset (deterministic from the arguments) and print its row counts.

    Args:
        output_folder: new or empty folder to write into.
        seed: random seed of sizes, positions and references.
        height: frame height in pixels.
        width: frame width in pixels.
        num_frames: frames per video (17 -> 3 latent frames).
        fps: frame rate written into the files, the CSVs and the captions.
        videos_per_subject: videos per (subject, direction).
        images_per_subject: still images per seen subject.
        unseen: "pattern-first-second" subjects kept out of training and written to heldout.csv; training must
            keep every pattern and every colour in each palette slot.
    """
    counts = write_subject_dataset(output_folder, seed, height, width, num_frames, fps, videos_per_subject,
                                   images_per_subject, unseen)
    logging.getLogger("make_toy_subject_data").info("wrote %s in %s", counts, output_folder)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    auto_cli(main, as_positional=False)

"""The README's main command on the committed toy checkpoints (checkpoints/toy, written by scripts/train_toy.sh):
it writes a 17-frame 64x64 video whose shape has the colour the prompt names and moves the way it names."""
from pathlib import Path

import numpy as np
import pytest

from mg.data.toy_world import classify
from mg.data.video_io import probe, read_frames

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("prompt, colour, direction", [("a yellow triangle moving down, 8 fps", "yellow", "down"),
                                                       ("a blue circle moving left, 8 fps", "blue", "left")])
def test_readme_command_follows_the_prompt(inference, tmp_path, monkeypatch, prompt, colour, direction):
    monkeypatch.chdir(ROOT)  # configs/inference/toy.yaml names the checkpoints relative to the repository
    paths = inference.main(["--config", "configs/inference/toy.yaml", "--prompts", prompt,
                            "--output_path", str(tmp_path)])
    info = probe(str(paths[0]))
    assert (info.num_frames, info.height, info.width) == (17, 64, 64)
    read = classify(read_frames(str(paths[0]), np.arange(17)))
    assert (read["colour"], read["direction"]) == (colour, direction)

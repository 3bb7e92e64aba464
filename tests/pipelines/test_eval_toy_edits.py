"""tools/eval_toy_edits.py: the perfect edits pass its judge and an editor that changes nothing fails every edit,
whether it edits whole videos or frame by frame; the table has a row per model."""
from types import SimpleNamespace

import numpy as np
import pytest

from mg.data import toy_world as tw
from mg.data.transforms import to_model_range
from mg.data.video_io import probe, read_frames


@pytest.fixture(scope="module")
def eval_edits(load_script):
    return load_script("tools/eval_toy_edits.py")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    tw.write_toy_dataset(folder, videos_per_combo=1, images_per_pair=0, shape_size=24,
                         holdout=["red circle left", "blue square up"])
    return folder / "heldout.csv"


class Unchanged:
    """An 'editor' that returns its input video: every edit fails; what must not change does not."""
    tae = SimpleNamespace(encode=lambda x: (x,), decode=lambda z, frames: z)  # a lossless TAE

    def __call__(self, prompts, edit=None, num_frames=17, **_):
        video = read_frames(edit.video, np.arange(min(num_frames, probe(edit.video).num_frames)))
        return SimpleNamespace(videos=[to_model_range(video)] * len(prompts))


def test_perfect_edits_pass_and_an_editor_that_changes_nothing_fails(eval_edits, heldout, tmp_path):
    videos = eval_edits.held_out_videos(heldout, 1)
    assert len(videos) == 2
    sample = {"num_frames": 17, "fps": 8, "seed": 0}
    records = eval_edits.evaluate(Unchanged(), eval_edits.CEILING, videos, sample)
    records += eval_edits.evaluate(Unchanged(), "unchanged", videos, sample)
    records += eval_edits.evaluate(Unchanged(), eval_edits.PER_FRAME, videos, sample, per_frame=True,
                                   scratch=tmp_path)
    table, rates = eval_edits.report(records)
    assert rates[eval_edits.CEILING]["all"] == 1.0 and rates[eval_edits.CEILING]["path_error_px_median"] <= 0.5
    for name in ("unchanged", eval_edits.PER_FRAME):
        assert rates[name]["all"] == 0.0 and rates[name]["direction_kept"] == 1.0
        assert rates[name]["background_change_mean"] < 1.0
    assert len(table.splitlines()) == 2 + 3 and all(line.count("|") == 12 for line in table.splitlines())

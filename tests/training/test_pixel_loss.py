"""The pixel-space loss of post-training: the clean-latent estimate, the term's weighting and masking checked
against NumPy, the decoder left frozen while the transformer learns, and its settings' errors."""
import mindspore as ms
import numpy as np
import pandas as pd
import pytest
import yaml
from mindspore import Parameter, nn

import train
from mg.data import Bucket
from mg.data import toy_world as tw
from mg.data.caching import cache_tae_latents
from mg.data.text_cache import EMPTY_PROMPT, prepared_prompt
from mg.models.dit import MovieGenDiT
from mg.models.tae import TemporalAutoencoder, tae_config
from mg.models.tae.io import save_tae
from mg.optim import build_adamw
from mg.schedulers import FlowMatching
from mg.training.pixel_loss import PixelLossSettings, PixelSupervisedStep, pixel_window

from dit.helpers import text_inputs, tiny_config
from training.cached_dataset import ENCODERS, train_args, write_cached_dataset, write_embedding


def test_the_clean_estimate_inverts_the_path_for_the_true_velocity():
    rng = np.random.default_rng(0)
    x1, x0 = (ms.Tensor(rng.standard_normal((3, 4, 2, 2, 2)).astype(np.float32)) for _ in range(2))
    t = ms.Tensor(np.array([0.05, 0.5, 0.95], np.float32))
    for sigma_min in (0.0, 1e-5, 0.2):
        flow = FlowMatching(sigma_min=sigma_min)
        estimate = flow.clean_estimate(flow.interpolate(x0, x1, t), flow.velocity(x0, x1), t)
        np.testing.assert_allclose(estimate.asnumpy(), x1.asnumpy(), atol=2e-6)


class ConstantVelocity(nn.Cell):
    """A 'transformer' predicting one learned value everywhere."""

    def __init__(self):
        super().__init__()
        self.value = Parameter(ms.Tensor(np.float32(0.3)), name="value")

    def construct(self, x, t, *_):
        return x * 0 + self.value


class ChannelDecoder(nn.Cell):
    """A 'TAE' without weights or compression whose decoder shows the first three latent channels as the frames."""
    config = tae_config("tiny", channel_multipliers=(1,), latent_channels=4, scaling_factor=2.0, shift_factor=0.5)

    def decode(self, z, num_frames):
        return z[:, :3, :num_frames]


def test_the_pixel_term_is_the_decoded_estimates_error_on_samples_past_min_t():
    rng = np.random.default_rng(1)
    x1 = rng.standard_normal((3, 4, 1, 2, 2)).astype(np.float32)
    x0 = rng.standard_normal(x1.shape).astype(np.float32)
    frames = rng.uniform(-1, 1, (3, 3, 1, 2, 2)).astype(np.float32)
    t = np.array([0.2, 0.6, 0.9], np.float32)
    model, tae = ConstantVelocity(), ChannelDecoder()
    step = PixelSupervisedStep(model, build_adamw(model.trainable_params(), lr=0.0, weight_decay=0.0), FlowMatching(sigma_min=0.0),
                               tae, PixelLossSettings(weight=3.0, min_t=0.5), jit=False)
    extra = step.targets({"video": frames}, rng)
    assert extra[2] == ()  # the whole latent: nothing to select
    loss = step.loss(*(ms.Tensor(a) for a in (x1, x0, t)), (), (), *extra)

    x_t = t[:, None, None, None, None] * x1 + (1 - t[:, None, None, None, None]) * x0
    latent = np.mean((0.3 - (x1 - x0)) ** 2)
    estimate = x_t + (1 - t[:, None, None, None, None]) * 0.3
    decoded = (estimate / 2.0 + 0.5)[:, :3]
    per_sample = ((decoded - frames) ** 2).reshape(3, -1).mean(axis=1)
    expected = latent + 3.0 * per_sample[1:].mean()  # t = 0.2 is nearer noise than min_t
    assert float(loss.asnumpy()) == pytest.approx(expected, rel=1e-5)


def tiny_run(weight, seed=0):
    ms.set_seed(seed)
    model = MovieGenDiT(tiny_config(in_channels=4, max_t=1, max_h=2, max_w=2))
    tae = TemporalAutoencoder(tae_config("tiny", latent_channels=4))
    step = PixelSupervisedStep(model, build_adamw(model.trainable_params(), lr=1e-3, weight_decay=0.0),
                               FlowMatching(), tae, PixelLossSettings(weight=weight, min_t=0.0), jit=False)
    return model, tae, step


def test_the_transformer_learns_through_the_frozen_decoder():
    rng = np.random.default_rng(2)
    x1 = ms.Tensor(rng.standard_normal((2, 4, 1, 4, 4)).astype(np.float32))
    x0 = ms.Tensor(rng.standard_normal((2, 4, 1, 4, 4)).astype(np.float32))
    t = ms.Tensor(np.array([0.7, 0.8], np.float32))
    frames = rng.uniform(-1, 1, (2, 3, 1, 32, 32)).astype(np.float32)
    embs, masks = text_inputs(2, [[4, 2], [3, 3]], rng)
    losses = {}
    for weight in (0.0, 1.0, 2.0):
        _, _, step = tiny_run(weight)
        losses[weight] = float(step.loss(x1, x0, t, embs, masks, *step.targets({"video": frames}, rng)).asnumpy())
    pixel = losses[1.0] - losses[0.0]
    assert pixel > 0 and losses[2.0] - losses[0.0] == pytest.approx(2 * pixel, rel=1e-4)

    model, tae, step = tiny_run(1.0)
    frozen = {p.name: p.asnumpy().copy() for p in tae.get_parameters()}
    before = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    step(x1, x0, t, embs, masks, *step.targets({"video": frames}, rng))
    assert all(np.array_equal(p.asnumpy(), frozen[p.name]) for p in tae.get_parameters())
    moved = [name for name, value in before.items()
             if not np.array_equal(value, dict(model.parameters_and_names())[name].asnumpy())]
    assert moved


def test_a_window_takes_the_frames_it_decodes_and_weighs_out_the_padding():
    rng = np.random.default_rng(3)
    frames = rng.uniform(-1, 1, (2, 3, 17, 32, 48)).astype(np.float32)  # latents: 3 frames, 4 x 6 cells
    seen = set()
    for _ in range(40):
        piece, weights, (times, rows, cols) = pixel_window(frames, 8, 8, (2, 1, 9), rng)
        assert len(times) == 2 and len(rows) == 1 and list(cols) == list(range(6))  # 9 columns: all 6
        first, real = 8 * times[0], min(16, 17 - 8 * times[0])
        seen.add(int(times[0]))
        assert piece.shape == (2, 3, 16, 8, 48) and list(weights) == [1.0] * real + [0.0] * (16 - real)
        np.testing.assert_array_equal(piece[:, :, :real], frames[:, :, first:first + real, 8 * rows[0]:8 * rows[0] + 8])
        assert not piece[:, :, real:].any()
    assert seen == {0, 1}
    whole, weights, axes = pixel_window(frames, 8, 8, None, rng)
    assert [len(a) for a in axes] == [3, 4, 6] and weights.sum() == 17
    np.testing.assert_array_equal(whole[:, :, :17], frames)


def test_the_pixel_term_of_a_window_is_the_error_of_that_piece():
    rng = np.random.default_rng(4)
    x1 = rng.standard_normal((2, 4, 3, 4, 4)).astype(np.float32)
    x0 = rng.standard_normal(x1.shape).astype(np.float32)
    frames = rng.uniform(-1, 1, (2, 3, 3, 4, 4)).astype(np.float32)
    t = np.array([0.6, 0.9], np.float32)
    model, tae = ConstantVelocity(), ChannelDecoder()
    step = PixelSupervisedStep(model, build_adamw(model.trainable_params(), lr=0.0, weight_decay=0.0),
                               FlowMatching(sigma_min=0.0), tae, PixelLossSettings(weight=1.0, min_t=0.5,
                                                                                  window=(2, 3, 1)), jit=False)
    extra = step.targets({"video": frames}, rng)
    times, rows, cols = (np.flatnonzero(select.asnumpy().any(axis=1)) for select in extra[2])
    assert [len(times), len(rows), len(cols)] == [2, 3, 1]
    loss = step.loss(*(ms.Tensor(a) for a in (x1, x0, t)), (), (), *extra)

    tb = t[:, None, None, None, None]
    estimate = (tb * x1 + (1 - tb) * x0 + (1 - tb) * 0.3)[:, :, times][:, :, :, rows][:, :, :, :, cols]
    decoded = (estimate / 2.0 + 0.5)[:, :3]
    real = frames[:, :, times][:, :, :, rows][:, :, :, :, cols]
    expected = np.mean((0.3 - (x1 - x0)) ** 2) + np.mean((decoded - real) ** 2)
    assert float(loss.asnumpy()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("settings,message", [(dict(weight=-1.0), "pixel_loss.weight"),
                                              (dict(min_t=1.0), "pixel_loss.min_t"),
                                              (dict(window=(2, 0, 4)), "pixel_loss.window"),
                                              (dict(window=(2, 4)), "pixel_loss.window")])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        PixelLossSettings(**settings)


def write_toy_video_data(root, rows=4):
    """A few 9-frame 32x32 toy clips, a tiny TAE and its cached latents, and text caches: a train.py dataset
    whose latents come from real videos (the pixel loss needs both)."""
    tw.write_toy_dataset(root / "videos", height=32, width=32, num_frames=9, videos_per_combo=1, images_per_pair=0,
                         shape_size=8, holdout=["red circle left"])
    table = pd.read_csv(root / "videos" / "train.csv").head(rows)
    table.to_csv(root / "videos" / "train.csv", index=False)
    table.head(2).to_csv(root / "videos" / "valid.csv", index=False)
    ms.set_seed(0)
    tae = TemporalAutoencoder(tae_config("tiny", latent_channels=4))
    save_tae(tae, root / "tae.safetensors")
    bucket = Bucket(32, 32, 9, 2)
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        cache_tae_latents(str(root / "videos" / f"{split}.csv"), str(root / "latents"), [bucket], lambda: tae,
                          video_folder=str(root / "videos"))
    for kind, dim in ENCODERS.items():
        for prompt in [prepared_prompt(c, 8.0, kind) for c in table["caption"]] + [EMPTY_PROMPT]:
            write_embedding(root / "text" / kind, prompt, kind, dim, rng)
    return {"csv": root / "videos" / "train.csv", "valid_csv": root / "videos" / "valid.csv",
            "latents": root / "latents", "text": {kind: str(root / "text" / kind) for kind in ENCODERS},
            "tae": root / "tae.safetensors", "bucket": {"height": 32, "width": 32, "frames": 9, "batch_size": 2}}


def test_train_py_runs_a_pixel_supervised_fine_tune(tmp_path):
    data = write_toy_video_data(tmp_path / "data")
    extra = ["--dataset.video_folder", str(data["csv"].parent), "--model.max_t", "2", "--env.mode", "1",
             "--pixel_loss.weight", "1.0"]
    train.main(train_args(data, tmp_path / "run", 2, extra))
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert list(log["step"]) == [1, 2] and np.isfinite(log["loss"]).all()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["dataset"]["pixels"] is True and saved["pixel_loss"]["weight"] == 1.0


def test_the_pixel_loss_is_refused_under_tensor_parallelism(tmp_path, capsys):
    data = write_cached_dataset(tmp_path / "data")
    with pytest.raises(SystemExit):
        train.main(train_args(data, tmp_path / "run", 2, ["--pixel_loss.weight", "1.0", "--parallel.tp", "2"]))
    assert "data parallelism" in capsys.readouterr().err


def test_the_frames_without_the_pixel_loss_are_refused(tmp_path, capsys):
    data = write_cached_dataset(tmp_path / "data")
    with pytest.raises(SystemExit):
        train.main(train_args(data, tmp_path / "run", 2, ["--dataset.pixels", "true"]))
    assert "pixel_loss.weight > 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

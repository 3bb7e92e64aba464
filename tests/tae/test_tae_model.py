"""TAE shapes, lengths, latent scaling and checkpoint round trip."""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import mint, ops
from safetensors.numpy import save_file

from mg.io import CheckpointError, read_metadata, state_dict
from mg.models.tae import TemporalAutoencoder, load_tae, save_tae, tae_config
from mg.models.tae.io import load_tae_config
from mg.models.tae.layers import GroupNorm
from mg.models.tae.losses import l1_loss

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_tae():
    ms.set_device("CPU")
    return TemporalAutoencoder(tae_config("tiny"))


@pytest.mark.parametrize("frames", [1, 8, 9, 17, 32, 33])
def test_lengths_and_non_square_sizes(tiny_tae, frames):
    x = ms.Tensor(np.random.uniform(-1, 1, (1, 3, frames, 24, 16)).astype(np.float32))
    mean, logvar = tiny_tae.encode(x)
    latent_frames = -(-frames // 8)
    assert mean.shape == logvar.shape == (1, 16, latent_frames, 3, 2)
    assert tiny_tae.decode(mean, frames).shape == (1, 3, frames, 24, 16)


def test_size_not_multiple_of_8_is_cropped_back(tiny_tae):
    x = ms.Tensor(np.random.uniform(-1, 1, (2, 3, 3, 20, 12)).astype(np.float32))
    mean, _ = tiny_tae.encode(x)
    assert mean.shape == (2, 16, 1, 3, 2)
    recon, _, _ = tiny_tae(x)
    assert recon.shape == (2, 3, 3, 20, 12)


def test_decode_rejects_inconsistent_length(tiny_tae):
    z = ms.Tensor(np.zeros((1, 16, 2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="num_frames=17 needs 3 latent frames"):
        tiny_tae.decode(z, 17)
    with pytest.raises(ValueError, match="expects"):
        tiny_tae.encode(ms.Tensor(np.zeros((1, 4, 1, 8, 8), np.float32)))


def test_an_image_encodes_and_decodes_as_a_static_clip():
    """Images (T=1) take the one-frame shortcut in every temporal conv; an 8-frame static clip of that image takes
    the gathered convs (random temporal weights, not identity) and must give the same latent and frames."""
    ms.set_seed(2)
    tae = TemporalAutoencoder(tae_config("tiny"))
    rng = np.random.default_rng(2)
    for name, param in tae.parameters_and_names():
        if ".temporal." in name and name.endswith("weight"):
            param.set_data(ms.Tensor(rng.normal(0, 0.4, param.shape).astype(np.float32)))
    image = rng.uniform(-1, 1, (1, 3, 1, 16, 16)).astype(np.float32)
    mean_image, _ = tae.encode(ms.Tensor(image))
    mean_clip, _ = tae.encode(ms.Tensor(np.repeat(image, 8, axis=2)))
    np.testing.assert_allclose(mean_image.asnumpy(), mean_clip.asnumpy(), rtol=1e-4, atol=1e-4)
    frames = tae.decode(mean_image, 5).asnumpy()
    assert frames.shape == (1, 3, 5, 16, 16)
    static = tae.decode(mint.cat([mean_image, mean_image], dim=2), 16).asnumpy()  # two latent frames: no shortcut
    for t in range(5):
        np.testing.assert_allclose(frames[:, :, t], static[:, :, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(static[:, :, 15], static[:, :, 0], rtol=1e-4, atol=1e-4)


def test_scale_and_unscale_latent():
    tae = TemporalAutoencoder(tae_config("tiny", scaling_factor=0.5, shift_factor=0.25))
    z = np.random.randn(1, 16, 1, 2, 2).astype(np.float32)
    scaled = tae.scale_latent(ms.Tensor(z)).asnumpy()
    np.testing.assert_allclose(scaled, (z - 0.25) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(tae.unscale_latent(ms.Tensor(scaled)).asnumpy(), z, rtol=1e-5, atol=1e-6)


def test_group_norm_backward_matches_autodiff():
    """GroupNorm's hand-written backward against autodiff of the textbook formula."""
    rng = np.random.default_rng(0)
    b, t, h, w, c, groups = 2, 3, 5, 4, 8, 4
    x = ms.Tensor(rng.normal(1.0, 2.0, (b, t, h, w, c)).astype(np.float32))
    dy = ms.Tensor(rng.normal(size=(b, t, h, w, c)).astype(np.float32))
    norm = GroupNorm(groups, c)
    norm.weight.set_data(ms.Tensor(rng.normal(size=c).astype(np.float32)))
    norm.bias.set_data(ms.Tensor(rng.normal(size=c).astype(np.float32)))

    def textbook(x, weight, bias):
        xg = x.reshape(b * t, h * w, groups, c // groups)
        centred = xg - xg.mean(axis=(1, 3), keep_dims=True)
        var = (centred * centred).mean(axis=(1, 3), keep_dims=True)
        return (centred / ops.sqrt(var + 1e-6)).reshape(x.shape) * weight + bias

    def ours(x, weight, bias):
        return norm.function(x.reshape(b * t, h * w, c), weight, bias).reshape(x.shape)

    np.testing.assert_allclose(ours(x, norm.weight, norm.bias).asnumpy(),
                               textbook(x, norm.weight, norm.bias).asnumpy(), atol=1e-5)
    grads = [ops.grad(lambda *a, f=f: (f(*a) * dy).sum(), grad_position=(0, 1, 2))(x, norm.weight, norm.bias)
             for f in (ours, textbook)]
    for got, want in zip(*grads):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-4, atol=1e-4)


def test_fit_latent_scale_normalises_the_latents():
    ms.set_seed(0)
    tae = TemporalAutoencoder(tae_config("tiny"))
    rng = np.random.default_rng(0)
    videos = [rng.uniform(-1, 1, (2, 3, 8, 16, 16)).astype(np.float32) * 3 for _ in range(2)]
    cfg = tae.fit_latent_scale(iter(videos))
    assert tae.config is cfg
    latents = np.concatenate([tae.scale_latent(tae.encode(ms.Tensor(v))[0]).asnumpy() for v in videos])
    assert abs(latents.mean()) < 1e-4
    assert latents.std() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="no videos"):
        tae.fit_latent_scale([])


def test_default_preset_is_16_channel_image_vae_layout():
    cfg = tae_config("default")
    assert (cfg.base_channels, cfg.channel_multipliers, cfg.num_res_blocks, cfg.latent_channels) == \
        (128, (1, 2, 4, 4), 2, 16)
    assert cfg.temporal_compression == cfg.spatial_compression == 8
    with pytest.raises(ValueError, match="unknown TAE preset"):
        tae_config("huge")


def _assert_same_weights(a, b):
    assert a.config == b.config
    for (name, x), (_, y) in zip(a.parameters_and_names(), b.parameters_and_names()):
        np.testing.assert_array_equal(x.asnumpy(), y.asnumpy(), err_msg=name)


def test_save_and_load_round_trip(tmp_path, tiny_tae):
    path = tmp_path / "tae.safetensors"
    assert save_tae(tiny_tae, path, extra={"note": "x"}) == path
    with pytest.raises(FileExistsError):
        save_tae(tiny_tae, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tae.json", "tae.safetensors"]
    assert read_metadata(path) == {"note": "x", "tae_config": tiny_tae.config.to_dict()}
    _assert_same_weights(load_tae(path), tiny_tae)
    assert load_tae_config(tmp_path / "tae") == tiny_tae.config

    record = json.loads((tmp_path / "tae.json").read_text())
    record["metadata"]["tae_config"]["bogus"] = 1
    (tmp_path / "tae.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="bad TAE config in .*tae.json: .*unknown keys"):
        load_tae(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="tae.safetensors is corrupt"):
        load_tae(path, config=tiny_tae.config)


def test_the_older_layout_still_loads(tmp_path, tiny_tae):
    """tae.safetensors + tae.safetensors.json {"config": ...}, as in checkpoints/toy (and a bare file + config)."""
    path = tmp_path / "tae.safetensors"
    save_file(state_dict(tiny_tae), str(path))
    with pytest.raises(FileNotFoundError, match="pass config=TAEConfig"):
        load_tae(path)
    _assert_same_weights(load_tae(path, config=tiny_tae.config), tiny_tae)
    (tmp_path / "tae.safetensors.json").write_text(json.dumps({"config": tiny_tae.config.to_dict()}))
    _assert_same_weights(load_tae(path), tiny_tae)
    assert load_tae_config(path) == tiny_tae.config
    (tmp_path / "tae.safetensors.json").write_text('{"config": {"bogus": 1}}')
    with pytest.raises(ValueError, match="unknown keys"):
        load_tae(path)
    committed = load_tae(ROOT / "checkpoints" / "toy" / "tae.safetensors")
    assert committed.config.scaling_factor != 1.0  # fitted by the toy training


def test_jit_gradients_equal_pynative_gradients():
    """The TAE trains under ms.jit; its gradients must be PyNative's. (A mint.permute of the conv weights once gave
    every conv of the same shape another conv's weight gradient under jit, and the TAE learned no colour.)"""
    ms.set_seed(0)
    tae = TemporalAutoencoder(tae_config("tiny"))
    x = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, 9, 16, 16)).astype(np.float32))

    def loss(x):
        recon, _, _ = tae(x, False)
        return l1_loss(recon, x)

    grad_fn = ms.value_and_grad(loss, None, tae.trainable_params())
    eager_loss, eager = grad_fn(x)
    jit_loss, jitted = ms.jit(grad_fn)(x)
    np.testing.assert_allclose(jit_loss.asnumpy(), eager_loss.asnumpy(), rtol=1e-5)
    for param, want, got in zip(tae.trainable_params(), eager, jitted):
        scale = float(np.abs(want.asnumpy()).max())
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-3, atol=1e-3 * scale + 1e-7,
                                   err_msg=param.name)


def test_set_logvar_bias_moves_only_the_log_variance():
    ms.set_seed(1)
    tae = TemporalAutoencoder(tae_config("tiny"))  # temporal convs are identity at init: the bias shift passes through
    x = ms.Tensor(np.random.default_rng(1).uniform(-1, 1, (1, 3, 8, 16, 16)).astype(np.float32))
    mean, logvar = tae.encode(x)
    old_bias = tae.encoder.conv_out.spatial.bias.asnumpy()[16:].copy()
    tae.encoder.set_logvar_bias(-8.0)
    mean2, logvar2 = tae.encode(x)
    np.testing.assert_allclose(mean2.asnumpy(), mean.asnumpy(), atol=1e-6)
    shift = (-8.0 - old_bias).reshape(1, -1, 1, 1, 1)
    np.testing.assert_allclose(logvar2.asnumpy(), logvar.asnumpy() + shift, atol=1e-4)

"""A diffusers-format image VAE inflated into the TAE gives, on a static video, the image VAE's own frames."""
import json

import mindspore as ms
import numpy as np
import pytest

from mg.models.tae.convert import config_from_diffusers, convert_image_vae

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
F = torch.nn.functional
nn = torch.nn

# ---------------------------------------------------------------------------------------------------------------------
# The witness: an independent PyTorch re-implementation of diffusers' AutoencoderKL. Module names follow diffusers,
# so state_dict() yields diffusers checkpoint key names (encoder.down_blocks.0.resnets.0.conv1.weight, ...).
# ---------------------------------------------------------------------------------------------------------------------
class Resnet(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin, eps=1e-6), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout, eps=1e-6), nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Attention(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.to_q, self.to_k, self.to_v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c), nn.Dropout(0.0)])

    def forward(self, x):
        b, c, h, w = x.shape
        t = self.group_norm(x).flatten(2).transpose(1, 2)
        out = F.scaled_dot_product_attention(self.to_q(t), self.to_k(t), self.to_v(t))
        return x + self.to_out[0](out).transpose(1, 2).reshape(b, c, h, w)


class Mid(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(c, c, groups), Resnet(c, c, groups)])
        self.attentions = nn.ModuleList([Attention(c, groups)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    def __init__(self, cin, cout, n, groups, sampler, name):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(cin if i == 0 else cout, cout, groups) for i in range(n)])
        if sampler is not None:
            setattr(self, name, nn.ModuleList([sampler(cout)]))
        self.sampler = name if sampler is not None else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        return getattr(self, self.sampler)[0](x) if self.sampler else x


class Encoder(nn.Module):
    def __init__(self, widths, layers, groups, latent):
        super().__init__()
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            Block(widths[max(i - 1, 0)], w, layers, groups, Down if i < len(widths) - 1 else None, "downsamplers")
            for i, w in enumerate(widths)])
        self.mid_block = Mid(widths[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, widths[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[-1], 2 * latent, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, widths, layers, groups, latent):
        super().__init__()
        rev = list(reversed(widths))
        self.conv_in = nn.Conv2d(latent, rev[0], 3, padding=1)
        self.mid_block = Mid(rev[0], groups)
        self.up_blocks = nn.ModuleList([
            Block(rev[max(i - 1, 0)], w, layers + 1, groups, Up if i < len(rev) - 1 else None, "upsamplers")
            for i, w in enumerate(rev)])
        self.conv_norm_out = nn.GroupNorm(groups, rev[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(rev[-1], 3, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, widths, layers, groups, latent, use_quant_conv):
        super().__init__()
        self.encoder = Encoder(widths, layers, groups, latent)
        self.decoder = Decoder(widths, layers, groups, latent)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1) if use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent, latent, 1) if use_quant_conv else None

    def encode_mean(self, x):
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments.chunk(2, dim=1)[0]

    def decode(self, z):
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)


# ---------------------------------------------------------------------------------------------------------------------

CONFIG = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 16,
          "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1, "norm_num_groups": 4,
          "scaling_factor": 0.3611, "shift_factor": 0.1159}


@pytest.fixture(params=[False, True], ids=["no-quant-conv", "quant-conv"])
def vae_dir(tmp_path, request):
    torch.manual_seed(0)
    cfg = {**CONFIG, "use_quant_conv": request.param, "use_post_quant_conv": request.param}
    ref = AutoencoderKL(cfg["block_out_channels"], 1, 4, 16, request.param).eval()
    with torch.no_grad():  # move norms and biases off their trivial init so every weight matters
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    safetensors_torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()},
                                str(tmp_path / "diffusion_pytorch_model.safetensors"))
    return tmp_path, ref


def test_inflated_tae_equals_image_vae_on_static_video(vae_dir):
    path, ref = vae_dir
    tae = convert_image_vae(path)
    assert (tae.config.scaling_factor, tae.config.shift_factor) == (0.3611, 0.1159)
    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 24)).astype(np.float32)
    with torch.no_grad():
        ref_mean = ref.encode_mean(torch.from_numpy(image))
        ref_frame = ref.decode(ref_mean).numpy()
    for frames in (1, 9):
        video = np.repeat(image[:, :, None], frames, axis=2)
        mean, _ = tae.encode(ms.Tensor(video))
        assert mean.shape[2] == -(-frames // 8)
        for t in range(mean.shape[2]):
            np.testing.assert_allclose(mean.asnumpy()[:, :, t], ref_mean.numpy(), rtol=1e-4, atol=1e-4)
        decoded = tae.decode(ms.Tensor(np.repeat(ref_mean.numpy()[:, :, None], mean.shape[2], axis=2)), frames)
        for t in range(frames):
            np.testing.assert_allclose(decoded.asnumpy()[:, :, t], ref_frame, rtol=1e-4, atol=1e-4)


def test_conversion_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        convert_image_vae(tmp_path)
    with pytest.raises(ValueError, match="needs 4 levels"):
        config_from_diffusers({**CONFIG, "block_out_channels": [8, 16, 16]})
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    safetensors_torch.save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3),
                                 "encoder.bogus.weight": torch.zeros(1)},
                                str(tmp_path / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ValueError, match="bogus"):
        convert_image_vae(tmp_path)


def test_convert_tool_writes_a_loadable_checkpoint(vae_dir):
    import subprocess
    import sys
    from pathlib import Path

    from mg.models.tae import load_tae

    path, _ = vae_dir
    tool = Path(__file__).resolve().parents[2] / "tools" / "convert_image_vae.py"
    out = path / "tae.safetensors"
    result = subprocess.run([sys.executable, str(tool), "--vae_dir", str(path), "--output", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = convert_image_vae(path)
    loaded = load_tae(out)
    assert loaded.config == expected.config
    for (name, a), (_, b) in zip(expected.parameters_and_names(), loaded.parameters_and_names()):
        if "temporal_attentions" not in name:  # temporal q/k/v are freshly (randomly) initialised per conversion
            np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=name)

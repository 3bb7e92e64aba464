"""TAE losses against NumPy / PyTorch references and closed forms."""
import mindspore as ms
import numpy as np
import pytest

from mg.models.tae.losses import (LPIPS, PatchDiscriminator, TAELoss, TAELossConfig, hinge_d_loss, hinge_g_loss,
                                  kl_loss, l1_loss, l2_loss, outlier_penalty_loss)


def _opl_numpy(z, r):
    mu = z.mean(axis=(3, 4), keepdims=True)
    std = z.std(axis=(3, 4), keepdims=True)                       # population std, per channel and frame
    dist = np.linalg.norm(z - mu, axis=1)                          # (B, T, H, W)
    return np.maximum(dist - r * np.linalg.norm(std, axis=1), 0).mean()


def test_opl_is_zero_without_outliers_and_positive_with_one():
    z = np.random.default_rng(0).standard_normal((2, 16, 3, 8, 8)).astype(np.float32)
    assert float(outlier_penalty_loss(ms.Tensor(z))) == 0.0
    z[1, :, 2, 4, 5] += 40.0
    got = float(outlier_penalty_loss(ms.Tensor(z), r=3.0))
    assert got > 0
    assert got == pytest.approx(_opl_numpy(z, 3.0), rel=1e-4)


def test_kl_and_l1_closed_forms():
    rng = np.random.default_rng(1)
    mean, logvar = rng.standard_normal((2, 4, 1, 2, 2)), rng.standard_normal((2, 4, 1, 2, 2))
    want = (0.5 * (mean ** 2 + np.exp(logvar) - 1 - logvar)).mean()
    got = float(kl_loss(ms.Tensor(mean, ms.float32), ms.Tensor(logvar, ms.float32)))
    assert got == pytest.approx(want, rel=1e-5)
    assert float(kl_loss(ms.Tensor(np.zeros((1, 4, 1, 2, 2), np.float32)),
                         ms.Tensor(np.zeros((1, 4, 1, 2, 2), np.float32)))) == 0.0
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    assert float(l1_loss(ms.Tensor(a, ms.float32), ms.Tensor(b, ms.float32))) == pytest.approx(np.abs(a - b).mean(),
                                                                                             rel=1e-5)
    assert float(l2_loss(ms.Tensor(a, ms.float32), ms.Tensor(b, ms.float32))) == pytest.approx(((a - b) ** 2).mean(),
                                                                                             rel=1e-5)


def test_hinge_losses():
    real, fake = np.array([2.0, 0.5, -1.0], np.float32), np.array([-2.0, 0.0, 1.5], np.float32)
    want_d = 0.5 * (np.maximum(1 - real, 0).mean() + np.maximum(1 + fake, 0).mean())
    assert float(hinge_d_loss(ms.Tensor(real), ms.Tensor(fake))) == pytest.approx(want_d)
    assert float(hinge_g_loss(ms.Tensor(fake))) == pytest.approx(-fake.mean())


def test_patch_discriminator_gives_patch_logits_per_frame():
    disc = PatchDiscriminator(channels=8, num_layers=2)
    logits = disc(ms.Tensor(np.random.uniform(-1, 1, (2, 3, 3, 32, 32)).astype(np.float32)))
    assert logits.shape == (2, 1, 3, 6, 6)


def _random_lpips_file(path, rng):
    """Random weights under the torchvision/LPIPS key names the real files use."""
    state, cin, idx = {}, 3, 0
    for item in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
        if item == "M":
            idx += 1
            continue
        state[f"features.{idx}.weight"] = (rng.standard_normal((item, cin, 3, 3)) * np.sqrt(2 / (9 * cin)))
        state[f"features.{idx}.bias"] = rng.standard_normal(item) * 0.01
        cin, idx = item, idx + 2
    for k, c in enumerate([64, 128, 256, 512, 512]):
        state[f"lin{k}.model.1.weight"] = np.abs(rng.standard_normal((1, c, 1, 1))) * 0.1
    from safetensors.numpy import save_file
    save_file({k: v.astype(np.float32) for k, v in state.items()}, str(path))
    return state


def _lpips_torch(state, x, y):
    """Reference LPIPS written with torch.nn.functional from the same state dict."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps = {3, 8, 15, 22, 29}                                       # ReLU indices relu1_2 ... relu5_3

    def feats(a):
        a, out = (a - shift) / scale, []
        for i in range(30):
            if f"features.{i}.weight" in state:
                a = F.conv2d(a, torch.from_numpy(state[f"features.{i}.weight"]).float(),
                             torch.from_numpy(state[f"features.{i}.bias"]).float(), padding=1)
            elif i in (4, 9, 16, 23):
                a = F.max_pool2d(a, 2, 2)
            else:
                a = F.relu(a)
                if i in taps:
                    out.append(a)
        return out

    total = 0.0
    for k, (a, b) in enumerate(zip(feats(torch.from_numpy(x)), feats(torch.from_numpy(y)))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total += F.conv2d((a - b) ** 2, torch.from_numpy(state[f"lin{k}.model.1.weight"]).float()).mean()
    return float(total)


def test_lpips_loads_weights_and_matches_torch_reference(tmp_path):
    rng = np.random.default_rng(2)
    state = _random_lpips_file(tmp_path / "lpips.safetensors", rng)
    lpips = LPIPS().load_weights(tmp_path / "lpips.safetensors")
    x = rng.uniform(-1, 1, (1, 3, 1, 32, 32)).astype(np.float32)
    y = np.clip(x + 0.3 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    assert float(lpips(ms.Tensor(x), ms.Tensor(x))) == pytest.approx(0.0, abs=1e-6)
    got = float(lpips(ms.Tensor(x), ms.Tensor(y)))
    assert got > 0
    assert got == pytest.approx(_lpips_torch(state, x[:, :, 0], y[:, :, 0]), rel=1e-3)
    with pytest.raises(FileNotFoundError, match="not found"):
        LPIPS().load_weights(tmp_path / "missing.safetensors")


def test_tae_loss_combines_weighted_terms():
    rng = np.random.default_rng(3)
    x, recon = (ms.Tensor(rng.uniform(-1, 1, (1, 3, 2, 16, 16)).astype(np.float32)) for _ in range(2))
    mean = rng.standard_normal((1, 16, 1, 8, 8)).astype(np.float32)
    mean[0, :, 0, 1, 1] += 30.0
    logvar = ms.Tensor(np.zeros_like(mean))
    cfg = TAELossConfig(l1_weight=2.0, l2_weight=3.0, kl_weight=0.5, opl_weight=10.0)
    loss = TAELoss(cfg)
    total, parts = loss(x, recon, ms.Tensor(mean), logvar)
    parts = dict(zip(loss.part_names, parts))
    assert set(parts) == {"l1", "l2", "kl", "opl"}
    want = 2.0 * float(parts["l1"]) + 3.0 * float(parts["l2"]) + 0.5 * float(parts["kl"]) + 10.0 * float(parts["opl"])
    assert float(total) == pytest.approx(want, rel=1e-5) and float(parts["opl"]) > 0
    with pytest.raises(ValueError, match="lpips_weights"):
        TAELoss(TAELossConfig(perceptual_weight=1.0))

"""TAE training losses: L1, KL, LPIPS (VGG-16), patch discriminator with hinge loss, outlier penalty loss (OPL).

Videos are (B, 3, T, H, W) in [-1, 1]; latents (B, C, T, H, W). Image-level losses fold time into the batch.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mindspore import Tensor, mint, nn, ops
from safetensors.numpy import load_file

from mg.models.tae.conv import Conv3d, SpatialConv, to_channels_first, to_channels_last
from mg.models.tae.layers import GroupNorm


@dataclass
class TAELossConfig:
    """Weights of the TAE loss terms (a weight of 0 switches a term off)."""
    l1_weight: float = 1.0
    l2_weight: float = 0.0           # mean squared error; weighs large errors (a wrong colour) above small ones
    kl_weight: float = 1e-6          # on the per-element mean KL
    perceptual_weight: float = 0.0   # LPIPS; needs lpips_weights
    lpips_weights: str = ""          # safetensors file with VGG-16 `features.N.*` and LPIPS `linK.model.1.weight`
    opl_weight: float = 0.0          # Movie Gen uses ~1e5 when fine-tuning with OPL
    opl_r: float = 3.0
    disc_weight: float = 0.0         # adversarial term of the generator loss
    disc_start: int = 0              # step from which the discriminator trains and the adversarial term applies
    disc_channels: int = 64
    disc_layers: int = 3


# ---------------------------------------------------------------------------------------------------------------------
# Reconstruction, KL, OPL
# ---------------------------------------------------------------------------------------------------------------------
def l1_loss(x, y):
    return mint.abs(x - y).mean()


def l2_loss(x, y):
    return ((x - y) ** 2).mean()


def kl_loss(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over every latent element."""
    return (0.5 * (mean * mean + mint.exp(logvar) - 1.0 - logvar)).mean()


def outlier_penalty_loss(z, r=3.0):
    """Movie Gen's OPL: mean over positions of max(||z_ij - mean(z)|| - r ||std(z)||, 0).

    Mean and (population) std are per channel over H, W of each frame (time folded into the batch); the norms are
    L2 norms over channels.
    """
    mu = z.mean(axis=(3, 4), keep_dims=True)
    centred = z - mu
    std = mint.sqrt((centred * centred).mean(axis=(3, 4), keep_dims=True) + 1e-12)
    distance = mint.sqrt((centred * centred).sum(axis=1) + 1e-12)        # (B, T, H, W)
    std_norm = mint.sqrt((std * std).sum(axis=1))                         # (B, T, 1, 1)
    return mint.nn.functional.relu(distance - r * std_norm).mean()


# ---------------------------------------------------------------------------------------------------------------------
# LPIPS over VGG-16
# ---------------------------------------------------------------------------------------------------------------------
_VGG_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_LPIPS_TAPS = (1, 3, 6, 9, 12)          # conv index (0-based among convs) after whose ReLU a feature is taken
_LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def _max_pool2(x):
    """2x2 max pooling of every frame of a channels-last (B, T, H, W, C) tensor."""
    b, t, h, w, c = x.shape
    x = x[:, :, :h - h % 2, :w - w % 2].reshape(b, t, h // 2, 2, w // 2, 2, c)
    return x.max(axis=5).max(axis=3)


class LPIPS(nn.Cell):
    """Learned perceptual distance (Zhang et al. 2018) on VGG-16 features, per frame; returns the mean distance.

    Weights come from `load_weights` (torchvision VGG-16 `features.N.weight/bias` and the LPIPS package's
    `linK.model.1.weight`, in one safetensors file). The network is frozen.
    """

    def __init__(self):
        super().__init__()
        convs, cin = [], 3
        for item in _VGG_LAYERS:
            if item != "M":
                convs.append(SpatialConv(cin, item, 3))
                cin = item
        self.convs = nn.CellList(convs)
        widths = [c for c in _VGG_LAYERS if c != "M"]
        self.lins = nn.CellList([Conv3d(widths[i], 1, (1, 1, 1), bias=False) for i in _LPIPS_TAPS])
        self.shift = Tensor(_LPIPS_SHIFT)
        self.scale = Tensor(_LPIPS_SCALE)
        for p in self.get_parameters():
            p.requires_grad = False

    def load_weights(self, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weights: {path} not found")
        state = load_file(str(path))
        conv_ids = _torchvision_layer_ids()
        targets = {}
        for k, conv in enumerate(self.convs):
            idx = conv_ids[k]
            targets[f"features.{idx}.weight"] = conv.weight
            targets[f"features.{idx}.bias"] = conv.bias
        for k, lin in enumerate(self.lins):
            targets[f"lin{k}.model.1.weight"] = lin.weight
        missing = sorted(set(targets) - set(state))
        if missing:
            raise ValueError(f"LPIPS weights {path}: missing {missing[:6]} ({len(missing)} tensors)")
        for name, param in targets.items():
            value = state[name].astype(np.float32)
            if value.size != param.size:
                raise ValueError(f"LPIPS weights {path}: {name} has shape {value.shape}, expected {param.shape}")
            param.set_data(Tensor(value.reshape(param.shape)))
        return self

    def _features(self, x):
        feats, k = [], 0
        for item in _VGG_LAYERS:
            if item == "M":
                x = _max_pool2(x)
                continue
            x = mint.nn.functional.relu(self.convs[k](x))
            if k in _LPIPS_TAPS:
                feats.append(x)
            k += 1
        return feats

    def construct(self, x, y):
        """Mean LPIPS distance between videos x and y (B, 3, T, H, W) in [-1, 1]."""
        fx = self._features((to_channels_last(x) - self.shift) / self.scale)
        fy = self._features((to_channels_last(y) - self.shift) / self.scale)
        total = 0.0
        for a, b, lin in zip(fx, fy, self.lins):
            a = a / (mint.sqrt((a * a).sum(axis=-1, keepdims=True)) + 1e-10)
            b = b / (mint.sqrt((b * b).sum(axis=-1, keepdims=True)) + 1e-10)
            total = total + lin((a - b) ** 2).mean()
        return total


def _torchvision_layer_ids():
    """Indices of the conv layers in torchvision's vgg16().features (conv, ReLU pairs; max-pools in between)."""
    ids, i = [], 0
    for item in _VGG_LAYERS:
        if item == "M":
            i += 1
        else:
            ids.append(i)
            i += 2
    return ids


# ---------------------------------------------------------------------------------------------------------------------
# Patch discriminator with hinge loss
# ---------------------------------------------------------------------------------------------------------------------
class PatchDiscriminator(nn.Cell):
    """PatchGAN (Isola et al.) applied to every frame: 4x4 convs, GroupNorm, LeakyReLU(0.2); logits per patch."""

    def __init__(self, in_channels=3, channels=64, num_layers=3):
        super().__init__()
        layers, norms = [SpatialConv(in_channels, channels, 4, stride=2, padding=(1, 1, 1, 1))], [None]
        c = channels
        for n in range(1, num_layers + 1):
            out = channels * min(2 ** n, 8)
            stride = 2 if n < num_layers else 1
            layers.append(SpatialConv(c, out, 4, stride=stride, padding=(1, 1, 1, 1)))
            norms.append(GroupNorm(int(np.gcd(32, out)), out))
            c = out
        layers.append(SpatialConv(c, 1, 4, padding=(1, 1, 1, 1)))
        self.layers = nn.CellList(layers)
        self.norms = nn.CellList(norms[1:])

    def construct(self, x):
        """Logits per patch and frame (B, 1, T, h, w) for videos (B, 3, T, H, W)."""
        x = ops.leaky_relu(self.layers[0](to_channels_last(x)), 0.2)
        for conv, norm in zip(self.layers[1:-1], self.norms):
            x = ops.leaky_relu(norm(conv(x)), 0.2)
        return to_channels_first(self.layers[-1](x))


def hinge_d_loss(logits_real, logits_fake):
    relu = mint.nn.functional.relu
    return 0.5 * (relu(1.0 - logits_real).mean() + relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake):
    return -logits_fake.mean()


class TAELoss(nn.Cell):
    """The generator (autoencoder) loss: weighted L1 + KL + LPIPS + OPL + adversarial.

    Returns (total, parts) where parts is a tuple of the unweighted terms named by `part_names` (a tuple, so the loss
    can run inside ms.jit). `adversarial` (0 or 1) switches the adversarial term on once the discriminator started.
    """

    def __init__(self, cfg: TAELossConfig, discriminator=None):
        super().__init__()
        self.cfg = cfg
        self.lpips = None
        if cfg.perceptual_weight > 0:
            if not cfg.lpips_weights:
                raise ValueError("TAELossConfig: perceptual_weight > 0 needs lpips_weights (a safetensors file)")
            self.lpips = LPIPS().load_weights(cfg.lpips_weights)
        if cfg.disc_weight > 0 and discriminator is None:
            raise ValueError("TAELossConfig: disc_weight > 0 needs a discriminator")
        self.discriminator = discriminator if cfg.disc_weight > 0 else None
        self.part_names = ("l1", "kl") + (("l2",) if cfg.l2_weight > 0 else ()) + \
            (("lpips",) if self.lpips is not None else ()) + \
            (("opl",) if cfg.opl_weight > 0 else ()) + (("g_adv",) if self.discriminator is not None else ())

    def construct(self, x, recon, mean, logvar, adversarial=0.0):
        cfg = self.cfg
        parts = (l1_loss(recon, x), kl_loss(mean, logvar))
        total = cfg.l1_weight * parts[0] + cfg.kl_weight * parts[1]
        if cfg.l2_weight > 0:
            term = l2_loss(recon, x)
            parts, total = parts + (term,), total + cfg.l2_weight * term
        if self.lpips is not None:
            term = self.lpips(recon, x)
            parts, total = parts + (term,), total + cfg.perceptual_weight * term
        if cfg.opl_weight > 0:
            term = outlier_penalty_loss(mean, cfg.opl_r)
            parts, total = parts + (term,), total + cfg.opl_weight * term
        if self.discriminator is not None:
            term = hinge_g_loss(self.discriminator(recon))
            parts, total = parts + (term,), total + adversarial * cfg.disc_weight * term
        return total, parts

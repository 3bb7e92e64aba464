"""CLIP vision tower: the trainable reference-image encoder of personalization, initialised from a CLIP/MetaCLIP
vision checkpoint in a local Hugging Face-format directory (config.json, safetensors, preprocessor_config.json).

Cell and parameter names mirror Hugging Face's `CLIPVisionModel` with the `vision_model.` prefix dropped, so a
checkpoint loads name by name. The output is HF's `last_hidden_state` (B, 1 + patches, C): every token, before
`post_layernorm` (which only serves HF's pooled output and is not part of this tower). It lives in `mg.models`, not
in `mg.models.text_encoders`, so the transformer can own a tower without importing the text encoders.
"""
import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn
from mindspore.common.initializer import initializer

from mg.backends import permute
from mg.io import check_names
from mg.models.clip_encoder import CLIPEncoder
from mg.models.encoder_layers import Embedding, LayerNorm
from mg.models.hf_checkpoint import checkpoint_dir, load_weights, read_config, read_weights

MODEL_TYPES = ("clip", "clip_vision_model")
PREPROCESSOR_FILE = "preprocessor_config.json"
PREFIX = "vision_model."
TOWER_PARTS = ("embeddings.", "encoder.", "pre_layrnorm.")  # HF's spelling of pre_layrnorm


@dataclass(frozen=True)
class CLIPVisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    image_mean: tuple = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's (MetaCLIP uses the same)
    image_std: tuple = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self):
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or len(values) != self.num_channels:
                raise ValueError(f"CLIP vision {name} {values!r} needs one value per channel ({self.num_channels})")
            object.__setattr__(self, name, tuple(float(v) for v in values))  # lists from JSON; stay hashable
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIP vision image_size {self.image_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"CLIP vision hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads}")

    @classmethod
    def from_hf(cls, cfg: dict, source: str) -> "CLIPVisionConfig":
        """Build from a CLIPVisionModel config.json dict or a CLIPModel one (its `vision_config`)."""
        cfg = cfg.get("vision_config", cfg)
        needed = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [k for k in needed if k not in cfg]
        if missing:
            raise ValueError(f"{source}: CLIP vision config lacks {missing}")
        try:
            return cls(**{f.name: cfg[f.name] for f in fields(cls) if f.name in cfg})
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from e

    @property
    def num_tokens(self) -> int:
        """Patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def parameter_count(self) -> int:
        """Parameters of `CLIPVisionTransformer(self)`, from the configuration alone."""
        d, f = self.hidden_size, self.intermediate_size
        embeddings = d + self.num_channels * self.patch_size ** 2 * d + self.num_tokens * d
        layer = 4 * (d * d + d) + 4 * d + (d * f + f) + (f * d + d)
        return embeddings + 2 * d + self.num_hidden_layers * layer

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class PatchEmbedding(nn.Cell):
    """HF's bias-free stride-p Conv2d, as reshape + matmul (a Conv2d runs far slower on CPU; same weight layout)."""

    def __init__(self, cfg: CLIPVisionConfig, dtype):
        super().__init__()
        self.patch_size = cfg.patch_size
        shape = (cfg.hidden_size, cfg.num_channels, cfg.patch_size, cfg.patch_size)
        self.weight = Parameter(initializer("normal", shape, dtype), name="weight")

    def construct(self, pixels: Tensor) -> Tensor:
        """(B, C, S, S) -> (B, (S/p)^2, D), patches in row-major order as the conv's flattened output."""
        b, c, s, _ = pixels.shape
        p, g = self.patch_size, s // self.patch_size
        patches = permute(pixels.reshape(b, c, g, p, g, p), (0, 2, 4, 1, 3, 5)).reshape(b, g * g, c * p * p)
        return mint.matmul(patches, mint.transpose(self.weight.reshape(self.weight.shape[0], -1), 0, 1))


class CLIPVisionEmbeddings(nn.Cell):
    def __init__(self, cfg: CLIPVisionConfig, dtype):
        super().__init__()
        self.class_embedding = Parameter(initializer("normal", (cfg.hidden_size,), dtype), name="class_embedding")
        self.patch_embedding = PatchEmbedding(cfg, dtype)
        self.position_embedding = Embedding(cfg.num_tokens, cfg.hidden_size, dtype)

    def construct(self, pixels: Tensor) -> Tensor:
        patches = self.patch_embedding(pixels)
        cls = mint.broadcast_to(self.class_embedding.reshape(1, 1, -1), (patches.shape[0], 1, patches.shape[2]))
        return mint.cat((cls, patches), dim=1) + self.position_embedding.weight.unsqueeze(0)


class CLIPVisionTransformer(nn.Cell):
    """pixel_values (B, C, S, S), CLIP-normalised (see `normalize`) -> HF's last_hidden_state (B, 1 + (S/p)^2, D)."""

    def __init__(self, cfg: CLIPVisionConfig, dtype=ms.float32):
        super().__init__()
        self.config = cfg
        self.compute_dtype = dtype
        self.embeddings = CLIPVisionEmbeddings(cfg, dtype)
        self.pre_layrnorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype)
        self.encoder = CLIPEncoder(cfg, dtype)
        self.no_mask = Tensor(np.zeros((1, 1, 1, 1), np.float32))  # every token sees every token
        self.mean = Tensor(np.array(cfg.image_mean, np.float32).reshape(1, -1, 1, 1))
        self.std = Tensor(np.array(cfg.image_std, np.float32).reshape(1, -1, 1, 1))

    def normalize(self, images: Tensor) -> Tensor:
        """Images (B, C, S, S) in the project's [-1, 1] -> CLIP's input: ((x + 1) / 2 - mean) / std per channel, fp32.

        Resizing to image_size is the caller's choice (CLIP resizes the short side and centre-crops).
        """
        return ((images.astype(ms.float32) + 1.0) * 0.5 - self.mean) / self.std

    def construct(self, pixel_values: Tensor) -> Tensor:
        size = self.config.image_size
        if pixel_values.shape[-2:] != (size, size):
            raise ValueError(f"CLIP vision input is {pixel_values.shape[-2:]} pixels; the tower takes {size}x{size}")
        x = self.pre_layrnorm(self.embeddings(pixel_values.astype(self.compute_dtype)))
        return self.encoder(x, self.no_mask)


def read_clip_vision_config(path) -> CLIPVisionConfig:
    """config.json (CLIPVisionModel or CLIPModel) plus image_mean/image_std of preprocessor_config.json if present."""
    path = checkpoint_dir(path)
    raw, source = read_config(path), str(path / "config.json")
    model_type = raw.get("model_type")
    if model_type is not None and model_type not in MODEL_TYPES:
        raise ValueError(f"{source}: model_type {model_type!r} is not a CLIP checkpoint (expected {MODEL_TYPES})")
    cfg = dict(raw.get("vision_config", raw))
    preprocessor = path / PREPROCESSOR_FILE
    if preprocessor.is_file():
        try:
            stats = json.loads(preprocessor.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{preprocessor}: not valid JSON ({e})") from e
        cfg.update({k: stats[k] for k in ("image_mean", "image_std") if k in stats})
        source = f"{source} + {preprocessor.name}"
    return CLIPVisionConfig.from_hf(cfg, source)


def clip_vision_weight_name(ckpt_name: str) -> Optional[str]:
    """Checkpoint name -> tower parameter name, or None for what the tower does not use.

    CLIPModel and transformers 4 CLIPVisionModel files prefix the tower with "vision_model."; transformers 5
    CLIPVisionModel files do not. The text tower, post_layernorm, projections, logit_scale and position_ids buffers
    are not used.
    """
    name = ckpt_name[len(PREFIX):] if ckpt_name.startswith(PREFIX) else ckpt_name
    if name.endswith("position_ids") or not name.startswith(TOWER_PARTS):
        return None
    return name


def load_clip_vision(path, dtype=ms.float32) -> CLIPVisionTransformer:
    """A tower (eval mode) with the weights of a local HF-format CLIP checkpoint; every parameter must be found."""
    model = CLIPVisionTransformer(read_clip_vision_config(path), dtype)
    load_weights(model, path, clip_vision_weight_name)
    model.set_train(False)
    return model


def clip_vision_weights(path) -> tuple:
    """({parameter name: shape}, read(name) -> np.ndarray) of a checkpoint's vision tower, read lazily.

    For initialising a tower that is part of a larger model later (deferred initialisation) one tensor at a time.
    """
    return read_weights(checkpoint_dir(path), clip_vision_weight_name)


def preprocessor_config(config: CLIPVisionConfig) -> dict:
    """CLIPImageProcessor settings: short side resized to image_size (bicubic), centre crop, rescale, normalise."""
    size = config.image_size
    return {
        "image_processor_type": "CLIPImageProcessor", "do_convert_rgb": True,
        "do_resize": True, "size": {"shortest_edge": size}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": size, "width": size},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": list(config.image_mean), "image_std": list(config.image_std),
    }


def write_clip_vision(out_dir, config: CLIPVisionConfig, weights: dict) -> Path:
    """Write a tower as a directory transformers' CLIPVisionModel.from_pretrained reads (and `load_clip_vision`).

    weights: {tower parameter name (no prefix): array}; they must fit `config`, checked before anything is written.
    Saved in float32 under "vision_model." names; post_layernorm is not part of the tower, so transformers reports
    it as newly initialised (harmless for last_hidden_state).
    """
    from safetensors.numpy import save_file
    from transformers import CLIPVisionConfig as HFConfig  # deferred: transformers is slow to import

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty; refusing to overwrite (choose a new directory)")
    tower = {name: tuple(p.shape) for name, p in CLIPVisionTransformer(config).parameters_and_names()}
    check_names(tower, {k: tuple(np.shape(v)) for k, v in weights.items()}, f"weights do not fit {config}")
    out.mkdir(parents=True, exist_ok=True)
    hf = {k: v for k, v in config.to_dict().items() if k not in ("image_mean", "image_std")}
    HFConfig(architectures=["CLIPVisionModel"], **hf).save_pretrained(out)
    (out / PREPROCESSOR_FILE).write_text(json.dumps(preprocessor_config(config), indent=2) + "\n")
    save_file({PREFIX + k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
              str(out / "model.safetensors"))
    return out

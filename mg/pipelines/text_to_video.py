"""Text-to-video (and text-to-image) sampling: prompts -> Gaussian noise -> Euler + CFG on the DiT's velocity ->
TAE decode. The pipeline only orchestrates; the math lives in the model, the sampler and the TAE."""
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor
from tqdm.auto import tqdm

from mg.data.conditions import GENERATE, condition_input, task_index
from mg.pipelines.given import (EditOptions, GivenOptions, condition_latent, edit_latent, keep_given,
                                reference_pixels)
from mg.pipelines.outputs import check_formats, save_video
from mg.pipelines.sizes import resolve_size
from mg.pipelines.text import TextConditioner
from mg.schedulers import EulerSampler

_logger = logging.getLogger(__name__)


@dataclass
class Generation:
    """One batch of results. videos: float32 (B, 3, T, H, W) in [-1, 1] (None if not decoded); latents: the
    sampled (scaled) DiT latents (B, C, T', h, w); fps: None for images; seconds: wall-clock time per video;
    references: each video's reference image (None without)."""
    prompts: List[str]
    seeds: List[int]
    videos: np.ndarray
    latents: np.ndarray
    fps: Optional[float]
    seconds: float
    references: Optional[List[str]] = None


def initial_noise(seed: int, shape) -> np.ndarray:
    """Standard normal float32 noise from NumPy's default_rng(seed): the same seed gives the same video."""
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def check_options(num_frames, fps, num_steps, schedule, guidance_scale, batch_size) -> EulerSampler:
    """Validate the model-independent sampling options (cheap: call it before loading models); return the sampler."""
    for name, value in (("num_frames", num_frames), ("num_steps", num_steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return EulerSampler(num_steps, schedule, guidance_scale)


class MovieGenPipeline:
    """Samples videos from a MovieGenDiT and decodes them with a TemporalAutoencoder.

        pipe = MovieGenPipeline(dit, tae, TextConditioner(dit.config.text_encoders, encoders={...}))
        result = pipe(["a red circle moving left, 8 fps"], num_frames=17, height=64, width=64, fps=8)
        result.videos   # (1, 3, 17, 64, 64) in [-1, 1]
    """

    def __init__(self, dit, tae, text: TextConditioner):
        if dit.config.in_channels != tae.config.latent_channels:
            raise ValueError(f"the DiT works on {dit.config.in_channels}-channel latents but the TAE makes "
                             f"{tae.config.latent_channels}: they were not trained together")
        if list(text.widths) != list(dit.config.text_encoders):
            raise ValueError(f"text conditioning serves {list(text.widths)} but the DiT expects "
                             f"{list(dit.config.text_encoders)}")
        self.dit, self.tae, self.text = dit, tae, text
        self.dit.set_train(False)
        self.tae.set_train(False)
        self._compiled_dit = None

    def velocity_fn(self, jit):
        """The DiT forward, compiled with ms.jit when asked (built once; each new input shape compiles once)."""
        if not jit:
            return self.dit
        if self._compiled_dit is None:
            compiled = ms.jit(self.dit.construct)

            def velocity(x, t, text_embs, text_masks, *condition):
                # mutable: otherwise jit treats the tuples as constants and recompiles whenever their tensors change
                return compiled(x, t, ms.mutable(tuple(text_embs)), ms.mutable(tuple(text_masks)), *condition)

            self._compiled_dit = velocity
        return self._compiled_dit

    # ---- shapes ------------------------------------------------------------------------------------------------
    @property
    def size_multiple(self):
        """Height and width must be multiples of this: the TAE's spatial compression times the DiT's patch."""
        patch = self.dit.config.patch_size
        return self.tae.config.spatial_compression * int(np.lcm(patch[1], patch[2]))

    def latent_shape(self, num_frames, height, width):
        """(C, T', h, w) of the latent for a num_frames x height x width video; raises if the model cannot make it."""
        f = self.tae.config.spatial_compression
        shape = (self.dit.config.in_channels, self.tae.latent_frames(num_frames), height // f, width // f)
        grid = self.dit.patch_grid(shape)
        limits = (self.dit.config.max_t, self.dit.config.max_h, self.dit.config.max_w)
        if any(g > m for g, m in zip(grid, limits)):
            raise ValueError(f"{num_frames} frames at {height}x{width} make a patch grid (t, h, w) = {grid}; the "
                             f"model's positional tables hold at most {limits}")
        return shape

    # ---- sampling ----------------------------------------------------------------------------------------------
    def generate(self, prompts: List[str], num_frames: int = 17, height: Optional[int] = None,
                 width: Optional[int] = None, aspect_ratio: Optional[str] = "1:1", resolution: Optional[int] = 256,
                 fps: float = 16, num_steps: int = 50, schedule: str = "linear_quadratic",
                 guidance_scale: float = 7.5, negative_prompt: str = "", seed: int = 0, batch_size: int = 1,
                 jit: bool = True, decode: bool = True, tiled_decode: bool = True, progress: bool = True,
                 condition: Optional[GivenOptions] = None, edit: Optional[EditOptions] = None,
                 reference_images: Optional[List[str]] = None):
        """Yield a `Generation` per batch of prompts.

        Args:
            prompts: captions, one video each.
            num_frames: frames per video; 1 makes an image.
            height: output height in pixels (with width); overrides aspect_ratio and resolution.
            width: output width in pixels.
            aspect_ratio: "width:height", used with resolution when height/width are not given.
            resolution: the short side in pixels, used with aspect_ratio.
            fps: frame rate: the "FPS-<n>" prompt prefix and the output files' rate (images get no prefix).
            num_steps: Euler steps.
            schedule: t-schedule, "linear_quadratic" (Movie Gen) or "linear".
            guidance_scale: classifier-free guidance weight (1 = no guidance, one model call per step).
            negative_prompt: the unconditional prompt ("" = the null condition used in training).
            seed: each prompt's noise comes from NumPy default_rng(seed): same seed, same video.
            batch_size: prompts sampled together.
            jit: run the transformer compiled (ms.jit): much faster steps after a one-off compile per shape.
            decode: decode the latents to videos (False: `videos` is None; latents only, to decode later).
            tiled_decode: decode with overlapping temporal tiles (bounded memory for long videos).
            progress: show progress bars over prompts and steps.
            condition: what every video is given (mg.pipelines.given: an image to start from, a video to continue
                or to inpaint); needs a transformer trained with conditions (`condition_channels`).
            edit: a video to edit, the prompts being instructions (mg.pipelines.given); needs a transformer trained
                to edit (`condition_channels` and `num_tasks`).
            reference_images: images of the subject, one video of each per prompt (personalization); needs a
                transformer with a reference tower (`reference_encoder`).
        """
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings")
        sampler = check_options(num_frames, fps, num_steps, schedule, guidance_scale, batch_size)
        height, width = resolve_size(height, width, aspect_ratio, resolution, self.size_multiple)
        shape = self.latent_shape(num_frames, height, width)
        given = self.condition_input(condition, edit, num_frames, height, width)
        references = self.reference_input(reference_images)
        items = [(p, r) for p in prompts for r in range(len(references))] if references is not None else \
            [(p, None) for p in prompts]
        prompt_fps = fps if num_frames > 1 else None
        bar = tqdm(total=len(items), desc="videos", unit="video", disable=not progress)
        for start in range(0, len(items), batch_size):
            batch = [p for p, _ in items[start:start + batch_size]]
            began = time.perf_counter()
            noise = np.stack([initial_noise(seed, shape) for _ in batch])
            cond = self.text.encode(batch, prompt_fps)
            uncond = self.text.encode_negative(negative_prompt, len(batch), prompt_fps) if guidance_scale != 1 else None
            extra = () if given is None else (Tensor(np.repeat(given, len(batch), axis=0)),)
            if self.dit.config.num_tasks:
                tasks = [edit.task_of(p) if edit is not None and edit.given else GENERATE for p in batch]
                extra += (Tensor(np.array([task_index(task) for task in tasks], np.int32)),)
            uncond_extra = extra
            if references is not None:  # the unconditional branch has neither the text nor the reference
                pixels = Tensor(references[[r for _, r in items[start:start + batch_size]]])
                extra = extra + (None,) * (2 - len(extra))
                uncond_extra = extra + (pixels, Tensor(np.zeros(len(batch), np.float32)))
                extra = extra + (pixels, Tensor(np.ones(len(batch), np.float32)))
            latents = sampler.sample(self.velocity_fn(jit), noise, _tensors(cond, extra),
                                     _tensors(uncond, uncond_extra), progress=progress)
            if condition is not None and condition.given and condition.keep:
                latents = Tensor(keep_given(latents.asnumpy(), given))
            videos = (np.stack([self.decode(latents[i:i + 1], num_frames, tiled_decode)[0] for i in range(len(batch))])
                      if decode else None)
            seconds = (time.perf_counter() - began) / len(batch)
            for prompt in batch:
                _logger.info("%.1f s/video  %dx%dx%d  seed %d  %r", seconds, num_frames, height, width, seed, prompt)
            bar.update(len(batch))
            used = None if references is None else [reference_images[r] for _, r in items[start:start + batch_size]]
            yield Generation(batch, [seed] * len(batch), videos, latents.asnumpy(), prompt_fps, seconds, used)
        bar.close()

    def reference_input(self, reference_images):
        """(R, 3, S, S) reference images in [-1, 1] for the reference tower, or None (none given)."""
        if not reference_images:
            return None
        tower = self.dit.config.reference_encoder
        if tower is None:
            raise ValueError("this transformer has no reference tower (reference_encoder): it cannot make a video of "
                             "the subject in --reference_image; use a model trained as docs/personalization.md says")
        return reference_pixels(reference_images, tower["image_size"])

    def condition_input(self, condition, edit, num_frames, height, width):
        """The condition input (1, C + 1, T', h, w) of what the videos are given or edit, or None (text only; a
        model with task embeddings takes a condition of nothing known)."""
        conditioning = condition is not None and condition.given
        editing = edit is not None and edit.given
        if conditioning and editing:
            raise ValueError("--edit.video edits a video: do not combine it with --condition.*")
        if (conditioning or editing) and not self.dit.config.condition_channels:
            raise ValueError("this transformer was trained for text-to-video only (no condition_channels): it "
                             "cannot start from or edit an image or a video (--condition.*, --edit.*)")
        if editing and not self.dit.config.num_tasks:
            raise ValueError("this transformer was not trained to edit (no task embeddings, num_tasks): --edit.* "
                             "needs a model trained as docs/editing.md says")
        if editing:
            edit.check(num_frames)
            return edit_latent(edit, self.tae, num_frames, height, width)
        if conditioning:
            condition.check(num_frames, self.tae.config.temporal_compression)
            return condition_latent(condition, self.tae, num_frames, height, width)
        if self.dit.config.num_tasks:
            shape = self.latent_shape(num_frames, height, width)
            return condition_input(np.zeros((1, *shape), np.float32), 0.0)
        return None

    def decode(self, latents, num_frames, tiled=True):
        """Scaled DiT latents (B, C, T', h, w) -> float32 video (B, 3, num_frames, H, W) clipped to [-1, 1]."""
        latents = latents if isinstance(latents, Tensor) else Tensor(np.asarray(latents, np.float32))
        video = self.tae.decode(self.tae.unscale_latent(latents), num_frames, tiled=tiled).asnumpy()
        return np.clip(video, -1.0, 1.0)

    def __call__(self, prompts: List[str], **options) -> Generation:
        """All prompts at once (options as in `generate`); results in prompt order."""
        parts = list(self.generate(prompts, **options))
        return Generation([p for g in parts for p in g.prompts], [s for g in parts for s in g.seeds],
                          None if parts[0].videos is None else np.concatenate([g.videos for g in parts]),
                          np.concatenate([g.latents for g in parts]),
                          parts[0].fps, float(np.mean([g.seconds for g in parts])),
                          None if parts[0].references is None else [r for g in parts for r in g.references])

    def generate_files(self, prompts: List[str], output_path: str, formats: tuple = ("mp4",),
                       save_latents: bool = False, overwrite: bool = False, **options) -> List:
        """Sample (options as in `generate`) and write each video as soon as its batch is done; return the paths.

        Files are named `<prompt slug>_seed<seed>.<format>`; an existing file is never replaced unless overwrite
        (a numbered name is used instead). Without decoding (decode=False) only the latents are written.
        """
        check_formats(formats)
        paths = []
        for result in self.generate(prompts, **options):
            fps = result.fps or options.get("fps", 16)
            for i, prompt in enumerate(result.prompts):
                video = None if result.videos is None else result.videos[i]
                latent = result.latents[i] if save_latents or video is None else None
                if result.references is not None:  # the file says whose video it is
                    prompt = f"{prompt} {Path(result.references[i]).stem}"
                paths += save_video(output_path, prompt, result.seeds[i], video, fps, formats, latent, overwrite)
        return paths


def _tensors(pair, extra=()):
    """The model's arguments after (x, t): text embeddings and masks as tensors, then `extra` (the condition, task
    and reference inputs)."""
    if pair is None:
        return None
    embs, masks = pair
    return (tuple(Tensor(e) for e in embs), tuple(Tensor(m) for m in masks), *extra)


def load_dit_checkpoint(path: str, prefer_ema: bool = True):
    """The transformer, ready to sample, of a DiT checkpoint file (`mg.models.dit.load_dit`) or of a sharded
    training checkpoint directory (consolidated in memory; EMA weights preferred)."""
    from mg.io import CheckpointError
    from mg.models.dit import MovieGenDiT, load_dit, load_dit_weights
    from mg.models.dit.io import config_from_dict
    from mg.parallel import is_sharded_checkpoint
    from mg.training.checkpoint import model_weights

    if not is_sharded_checkpoint(path):
        return load_dit(path, prefer_ema)
    weights, metadata = model_weights(path, prefer_ema)
    if "dit_config" not in metadata:
        raise CheckpointError(f"sharded checkpoint {path} has no 'dit_config' in its metadata: not a transformer")
    model = MovieGenDiT(config_from_dict(metadata["dit_config"], str(path)))
    load_dit_weights(model, weights, str(path))
    model.set_train(False)
    return model


def load_pipeline(dit_checkpoint: str, tae_checkpoint: str, text_encoder_paths: Optional[Dict[str, str]] = None,
                  text_max_lengths: Optional[Dict[str, int]] = None,
                  text_emb_folders: Optional[Dict[str, str]] = None) -> MovieGenPipeline:
    """Build the pipeline from checkpoint files.

    Args:
        dit_checkpoint: transformer checkpoint (`<stem>.safetensors` with its `<stem>.json`, written by save_dit or
            training; or a sharded training checkpoint directory `step_<step>/`; EMA weights preferred).
        tae_checkpoint: TAE weights (`<stem>.safetensors` with its `<stem>.json`, written by save_tae).
        text_encoder_paths: {kind: local Hugging Face-format folder} for encoders run on the fly.
        text_max_lengths: {kind: tokens} for those encoders (use the lengths the model was trained with).
        text_emb_folders: {kind: folder} of cached embeddings (docs/data.md), used instead of an encoder.
    """
    from mg.models.tae import load_tae
    from mg.models.text_encoders import build_text_encoder

    dit = load_dit_checkpoint(dit_checkpoint)
    tae = load_tae(tae_checkpoint)
    folders = dict(text_emb_folders or {})
    encoders = {}
    for kind in dit.config.text_encoders:
        if kind in folders:
            continue
        paths, lengths = text_encoder_paths or {}, text_max_lengths or {}
        if kind not in paths or kind not in lengths:
            raise ValueError(f"the DiT in {dit_checkpoint} needs a {kind!r} text encoder: give "
                             f"text_encoder_paths.{kind} and text_max_lengths.{kind}, or text_emb_folders.{kind}")
        encoders[kind] = build_text_encoder(kind, paths[kind], lengths[kind])
    return MovieGenPipeline(dit, tae, TextConditioner(dit.config.text_encoders, encoders, folders))

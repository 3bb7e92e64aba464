"""The training dataset: CSV rows -> bucketed samples -> batches (dicts of NumPy arrays).

Two sources for the visual part:
- pixel mode (no `tae_latent_folder`): videos/images are decoded, sampled, resized and centre-cropped to their
  bucket and returned as `video` (B, 3, T, H, W) in [-1, 1];
- latent mode: cached TAE latents are read and sampled, z = mean + std * eps, returned as `latent` (B, C, T', H', W').
Text is either returned raw (`caption`, "" when dropped for CFG) or, with `text_emb_folders`, as cached
`<kind>_emb` (B, L, C) float32 and `<kind>_mask` (B, L) uint8. `fps` (B,) is the FPS of the sampled clip (0 for images).
A table with edit rows (mg.data.table: `source_video`, `task`) also returns each sample's source as `source_latent`
or `source_video` (the same clip of it; zeros for a text-to-video row) and `task` (B,) int32 (mg.data.conditions.TASKS).
A table with reference images (personalization, `reference_image`) returns `reference` (B, 3, S, S) in [-1, 1] at
`reference_size` and `reference_mask` (B,) float32: 1 where the sample has a reference, 0 where it has none or it was
dropped (`reference_drop_prob`, for classifier-free guidance).

A sample whose file is missing or cannot be decoded is replaced by another sample of the same group, so batches stay
full and training never stops on a bad file; it is reported once per run (`note_skipped`, called by the loader in the
main process) and not tried again.
"""
import logging
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mg.data.buckets import Bucket, assign_bucket, parse_buckets
from mg.data.conditions import task_index
from mg.data.latent_cache import latent_path, load_latent, read_latent_header
from mg.data.table import Row, read_table
from mg.data.text_cache import EMPTY_PROMPT, load_text_emb, prepared_prompt, read_text_emb_shape, text_emb_path
from mg.data.transforms import clip_indices, frame_step, resize_center_crop, to_model_range
from mg.data.video_io import probe, read_frames

_logger = logging.getLogger(__name__)


@dataclass
class _Sample:
    row: Row
    group: int
    fps: float  # FPS of the sampled clip; 0 for images
    num_frames: int = 1  # source frames (pixel mode)
    step: float = 1.0  # source frames between sampled frames (pixel mode)
    channels: int = 0  # latent channels (latent mode)


def _fps_or_none(fps: float) -> Optional[float]:
    return fps if fps > 0 else None


class VideoDataset:
    """Bucketed video/image + caption dataset read from a CSV, in pixel or cached-latent mode.

    Args:
        csv_path: CSV with columns `video` and `caption` (optional `fps`, `frames`, `height`, `width`; an edit's
            `source_video` and `task`: mg.data.table).
        buckets: target shapes with their batch sizes (Bucket objects or dicts with height, width, frames,
            batch_size). In latent mode a latent belongs to the bucket whose shape it encodes.
        video_folder: folder that relative `video` paths are resolved against.
        tae_latent_folder: folder written by tools/cache_tae_latents.py; enables latent mode.
        text_emb_folders: {encoder kind: folder written by tools/cache_text_embeddings.py}; None returns captions.
        target_fps: sample clips at this FPS (pixel mode).
        frame_stride: sample every n-th frame instead (pixel mode); neither means every frame (native FPS).
        text_drop_prob: probability of replacing the text with the empty prompt (classifier-free guidance).
        random_clip_start: pick the clip start at random (else the middle clip) in pixel mode.
        latent_compression: TAE compression (time, height, width) that maps buckets to latent shapes.
        require_captions: skip rows with an empty caption (false for data that trains no text conditioning).
        pixels: in latent mode, also return each sample's frames as `video`: the clip its latent was cached from
            (the middle one), the target of a pixel-space loss (mg.training.pixel_loss).
        reference_size: side of the square reference images (the vision tower's input size); None: reference
            images are not read (a cache tool, a model without a reference tower).
        reference_drop_prob: probability of dropping a sample's reference image (classifier-free guidance).
    """

    def __init__(self, csv_path: str, buckets: list[Bucket], video_folder: str = "",
                 tae_latent_folder: Optional[str] = None, text_emb_folders: Optional[dict[str, str]] = None,
                 target_fps: Optional[float] = None, frame_stride: Optional[int] = None,
                 text_drop_prob: float = 0.0, random_clip_start: bool = True,
                 latent_compression: tuple[int, int, int] = (8, 8, 8), require_captions: bool = True,
                 pixels: bool = False, reference_size: Optional[int] = None, reference_drop_prob: float = 0.0):
        for name, value in (("text_drop_prob", text_drop_prob), ("reference_drop_prob", reference_drop_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        frame_step(30.0, target_fps, frame_stride)  # validates the sampling options before any file is read
        self.buckets = parse_buckets(buckets)
        self.csv_path = csv_path
        self.latent_mode = tae_latent_folder is not None
        self.tae_latent_folder = tae_latent_folder
        self.text_emb_folders = dict(text_emb_folders or {})
        self.target_fps, self.frame_stride = target_fps, frame_stride
        self.text_drop_prob = text_drop_prob
        self.random_clip_start = random_clip_start
        self.latent_compression = tuple(latent_compression)
        self.pixels = pixels and self.latent_mode  # pixel mode returns the frames anyway

        rows = read_table(csv_path, video_folder, require_captions)
        place = self._place_latent if self.latent_mode else self._place_pixels
        samples = [sample for sample in (place(row) for row in rows) if sample is not None]
        if self.text_emb_folders:
            samples = [s for s in samples if self._has_text_embeddings(s)]
            if text_drop_prob > 0:
                for kind, folder in self.text_emb_folders.items():
                    if not os.path.isfile(text_emb_path(folder, EMPTY_PROMPT)):
                        raise FileNotFoundError(f"text_drop_prob > 0 needs the empty-prompt embedding in {folder} "
                                                f"({kind}); run tools/cache_text_embeddings.py on this CSV")
        if len(samples) < len(rows):
            _logger.warning("%s: %d of %d rows are usable (see the warnings above)", csv_path, len(samples), len(rows))
        if not samples:
            raise ValueError(f"{csv_path}: no usable sample")
        self.samples = samples
        self.has_edits = any(s.row.source_video for s in samples)
        self.has_references = any(s.row.reference_image for s in samples)
        self.reads_references = self.has_references and reference_size is not None
        self.reference_size, self.reference_drop_prob = reference_size, reference_drop_prob
        self.latent_channels = self._latent_channels()
        # (length, width) of each encoder's cached embeddings (the caches pad every prompt to one length)
        self.text_shapes = {kind: read_text_emb_shape(text_emb_path(folder, self._prompt(samples[0], kind)))
                            for kind, folder in self.text_emb_folders.items()}
        self.group_ids = np.array([s.group for s in samples], dtype=np.int64)
        self._group_members = [np.flatnonzero(self.group_ids == g) for g in range(len(self.buckets))]
        self.bad = {}  # sample index -> why it failed to load: not tried again in this run
        self._reported = set()
        self.skips_this_epoch = 0

    # ------------------------------------------------------------------ construction
    def _place_pixels(self, row: Row) -> Optional[_Sample]:
        """Bucket of a raw video/image from CSV metadata, probing the file for what the CSV lacks."""
        needs = [row.height, row.width] + ([] if row.is_image else [row.fps, row.frames])
        if any(value is None for value in needs):
            try:
                info = probe(row.path)
            except Exception as error:
                _logger.warning("skipping %s: %s", row.path, error)
                return None
            row.height, row.width = row.height or info.height, row.width or info.width
            row.fps, row.frames = row.fps or info.fps, row.frames or info.num_frames
        if row.is_image:
            group = assign_bucket(row.height, row.width, None, self.buckets)
            sample = _Sample(row, -1 if group is None else group, 0.0)
        else:
            try:
                step, fps = frame_step(row.fps, self.target_fps, self.frame_stride)
            except ValueError as error:
                _logger.warning("skipping %s: %s", row.path, error)
                return None
            group = assign_bucket(row.height, row.width, row.frames, self.buckets, step)
            sample = _Sample(row, -1 if group is None else group, fps, row.frames, step)
        if group is None:
            _logger.warning("skipping %s (%sx%s, %s frames): no bucket fits", row.path, row.height, row.width,
                            row.frames)
            return None
        return sample

    def _latent_shape(self, bucket: Bucket) -> tuple:
        ct, ch, cw = self.latent_compression
        return math.ceil(bucket.frames / ct), bucket.height // ch, bucket.width // cw

    def _place_latent(self, row: Row) -> Optional[_Sample]:
        """Bucket of a cached latent, from the shape in its file header."""
        path = latent_path(self.tae_latent_folder, row.video)
        try:
            shape, metadata = read_latent_header(path)
        except Exception as error:
            _logger.warning("skipping %s: latent cache %s unreadable (%s)", row.video, path, error)
            return None
        groups = [i for i, bucket in enumerate(self.buckets) if self._latent_shape(bucket) == shape[1:]]
        if not groups:
            _logger.warning("skipping %s: latent shape %s matches no bucket", path, shape)
            return None
        if row.source_video:
            source = latent_path(self.tae_latent_folder, row.source_video)
            try:
                source_shape = read_latent_header(source)[0]
            except Exception as error:
                _logger.warning("skipping %s: the latent cache of its source %s is unreadable (%s)", row.video,
                                source, error)
                return None
            if source_shape != shape:
                _logger.warning("skipping %s: its latent is %s but its source's (%s) is %s", row.video, shape,
                                source, source_shape)
                return None
        sample = _Sample(row, groups[0], float(metadata["fps"]), channels=shape[0])
        if self.pixels:
            frames = self._place_pixels(row)
            if frames is None:
                return None
            if frames.group != sample.group:
                _logger.warning("skipping %s: its frames fit bucket %s but its cached latent %s", row.path,
                                self.buckets[frames.group], self.buckets[sample.group])
                return None
            sample.num_frames, sample.step = frames.num_frames, frames.step
        return sample

    def _latent_channels(self) -> Optional[int]:
        """The channel count of the cached latents (None in pixel mode); caches of different TAEs are refused."""
        if not self.latent_mode:
            return None
        found = sorted({s.channels for s in self.samples})
        if len(found) > 1:
            raise ValueError(f"{self.tae_latent_folder}: the cached latents have {found} channels; they come from "
                             "different TAEs (cache them again with one)")
        return found[0]

    def _prompt(self, sample: _Sample, kind: str) -> str:
        return prepared_prompt(sample.row.caption, _fps_or_none(sample.fps), kind)

    def _has_text_embeddings(self, sample: _Sample) -> bool:
        for kind, folder in self.text_emb_folders.items():
            path = text_emb_path(folder, self._prompt(sample, kind))
            if not os.path.isfile(path):
                _logger.warning("skipping %s: no %s text embedding (%s)", sample.row.video, kind, path)
                return False
        return True

    # ------------------------------------------------------------------ loading
    @property
    def column_names(self) -> list[str]:
        names = ["latent" if self.latent_mode else "video", "fps"]
        if self.has_edits:
            names += ["source_" + names[0], "task"]
        if self.pixels:
            names.append("video")
        if self.reads_references:
            names += ["reference", "reference_mask"]
        if self.text_emb_folders:
            for kind in self.text_emb_folders:
                names += [f"{kind}_emb", f"{kind}_mask"]
        else:
            names.append("caption")
        return names

    def __len__(self) -> int:
        return len(self.samples)

    def load_sample(self, index: int, rng: np.random.Generator) -> dict:
        """One sample as a dict of arrays (no batch axis); raises on a bad file."""
        sample = self.samples[index]
        dropped = rng.random() < self.text_drop_prob
        out = {"fps": np.float32(sample.fps)}
        key = "latent" if self.latent_mode else "video"
        start = None if self.latent_mode else (rng.random() if self.random_clip_start else 0.5)
        out[key] = self._visual(sample, sample.row.video, sample.row.path, rng, start)
        if self.pixels:
            out["video"] = self._frames(sample, sample.row.path, 0.5)  # the clip the cache encoded
        if self.has_edits:
            source = sample.row.source_video
            out["source_" + key] = (self._visual(sample, source, sample.row.source_path, rng, start) if source
                                    else np.zeros_like(out[key]))
            out["task"] = np.int32(task_index(sample.row.task))
        if self.reads_references:
            out["reference"], out["reference_mask"] = self._reference(sample, rng)
        if self.text_emb_folders:
            for kind, folder in self.text_emb_folders.items():
                prompt = EMPTY_PROMPT if dropped else self._prompt(sample, kind)
                out[f"{kind}_emb"], out[f"{kind}_mask"] = load_text_emb(text_emb_path(folder, prompt), prompt)
        else:
            out["caption"] = EMPTY_PROMPT if dropped else sample.row.caption
        return out

    def _visual(self, sample: _Sample, video: str, path: str, rng: np.random.Generator, start) -> np.ndarray:
        """A latent drawn from the posterior cached for `video`, or the clip of the file at `path` that begins at
        `start` (a fraction of where it may begin: an edit's source and result give the same clip)."""
        if self.latent_mode:
            mean, std = load_latent(latent_path(self.tae_latent_folder, video))
            return mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
        return self._frames(sample, path, start)

    def _reference(self, sample: _Sample, rng: np.random.Generator):
        """(the reference image (3, S, S) in [-1, 1], 1.0), or zeros and 0.0 when the row has none or it is dropped."""
        size = self.reference_size
        if not sample.row.reference_image or rng.random() < self.reference_drop_prob:
            return np.zeros((3, size, size), np.float32), np.float32(0.0)
        image = resize_center_crop(read_frames(sample.row.reference_path, [0])[:1], size, size)
        return to_model_range(image)[:, 0], np.float32(1.0)

    def _frames(self, sample: _Sample, path: str, start) -> np.ndarray:
        """The clip of the file at `path` that begins at `start`, in the sample's bucket, in [-1, 1]."""
        bucket = self.buckets[sample.group]
        indices = [0] if sample.row.is_image else clip_indices(sample.num_frames, bucket.frames, sample.step, start)
        return to_model_range(resize_center_crop(read_frames(path, indices), bucket.height, bucket.width))

    def load_batch(self, indices, seeds) -> tuple[dict, list]:
        """A batch: sample `indices[i]` drawn with randomness `np.random.default_rng(seeds[i])`; and the samples that
        failed, [(index, reason)].

        A sample that fails is replaced by the next loadable sample of its group (known bad ones are passed over).
        """
        items, failed = [], []
        for index, seed in zip(indices, seeds):
            members = self._group_members[self.group_ids[index]]
            order = np.roll(members, -int(np.searchsorted(members, index)))  # the sample itself, then the rest
            for candidate in (int(c) for c in order if int(c) not in self.bad):
                try:
                    items.append(self.load_sample(candidate, np.random.default_rng(seed)))
                    break
                except Exception as error:  # a bad sample must never end a training run
                    self.bad[candidate] = f"{type(error).__name__}: {error}"
                    failed.append((candidate, self.bad[candidate]))
            else:
                raise RuntimeError(f"every sample of bucket {self.buckets[self.group_ids[index]]} failed to load")
        return {name: self._stack(name, [item[name] for item in items]) for name in self.column_names}, failed

    def note_skipped(self, failed):
        """Record samples that failed to load (in this process or a loader worker): each is reported once per run
        and not tried again."""
        for index, reason in failed:
            self.skips_this_epoch += 1
            self.bad[index] = reason
            if index not in self._reported:
                self._reported.add(index)
                _logger.warning("skipping %s for the rest of this run: %s", self.samples[index].row.path, reason)

    def end_epoch(self, epoch):
        """Summarise the epoch's skipped samples (if any) and start counting the next epoch's."""
        if self.skips_this_epoch:
            _logger.warning("epoch %d: %d sample loads failed and were replaced from the same bucket; %d of %d samples "
                            "are unusable", epoch, self.skips_this_epoch, len(self.bad), len(self.samples))
        self.skips_this_epoch = 0

    @staticmethod
    def _stack(name: str, values: list) -> np.ndarray:
        if name == "caption":
            return np.array(values, dtype=np.str_)
        shapes = {np.shape(v) for v in values}
        if len(shapes) > 1:
            raise ValueError(f"`{name}` arrays of one batch differ in shape {sorted(shapes)}; cache every "
                             f"embedding with the same max_length")
        return np.stack(values)

"""Turn a data-loader batch into the transformer's inputs: scaled latents and one (embedding, mask) per encoder.

Batches come from mg.data in latent mode (cached TAE latents) or pixel mode (videos the TAE encodes here), with
cached text embeddings (`<kind>_emb` / `<kind>_mask`) or captions that the text encoders encode here.
"""
import mindspore as ms
import numpy as np

from mg.models.text_encoders import prepare_prompt


class ModelInputs:
    """Callable: batch dict -> (x1 Tensor (B, C, T, H, W), text_embs tuple, text_masks tuple).

    Args:
        encoder_kinds: text encoders in the order the transformer expects them.
        tae_config: latent scale and shift (and the TAE's layout).
        tae: a TemporalAutoencoder, needed only for pixel batches.
        text_encoders: {kind: encoder}, needed only for caption batches.
        tiled: encode videos in temporal tiles.
    """

    def __init__(self, encoder_kinds, tae_config, tae=None, text_encoders=None, tiled=True):
        self.encoder_kinds = tuple(encoder_kinds)
        self.scale, self.shift = tae_config.scaling_factor, tae_config.shift_factor
        self.tae = tae
        self.text_encoders = dict(text_encoders or {})
        self.tiled = tiled

    def check(self, dataset, config):
        """Refuse, before training starts, a dataset (mg.data.VideoDataset) whose cached latents or text embeddings
        do not fit the transformer's `config`: they would be reshaped into the wrong number of tokens and fail deep
        in the first block."""
        if dataset.latent_channels is not None and dataset.latent_channels != config.in_channels:
            raise ValueError(f"{dataset.tae_latent_folder}: the cached latents have {dataset.latent_channels} "
                             f"channels but the transformer takes model.in_channels = {config.in_channels} (cache the "
                             "latents with the TAE this model is trained for, or change model.in_channels)")
        for kind, (_, width) in dataset.text_shapes.items():
            if kind in config.text_encoders and width != config.text_encoders[kind]:
                raise ValueError(f"{dataset.text_emb_folders[kind]}: the cached {kind} embeddings are {width} wide "
                                 f"but model.text_encoders.{kind} = {config.text_encoders[kind]}")
        if dataset.has_edits and not (config.num_tasks and config.condition_channels):
            raise ValueError(f"{dataset.csv_path} holds edits (source_video, task) but the transformer has no task "
                             "embeddings or condition channels (set model.num_tasks and model.condition_channels)")
        if dataset.has_references and config.reference_encoder is None:
            raise ValueError(f"{dataset.csv_path} has reference images (reference_image) but the transformer has no "
                             "reference tower to read them (set model.reference_encoder_path to a CLIP vision "
                             "checkpoint)")
        if not dataset.latent_mode and self.tae is None:
            raise ValueError("the dataset reads videos (no dataset.tae_latent_folder) but no TAE encodes them: set "
                             "tae.path to a TAE checkpoint")
        uncovered = [kind for kind in self.encoder_kinds
                     if kind not in dataset.text_emb_folders and kind not in self.text_encoders]
        if uncovered:
            raise ValueError(f"the transformer reads text from {list(self.encoder_kinds)} but {uncovered} has neither "
                             "a cached folder (dataset.text_emb_folders) nor an encoder (text_encoders)")

    def latents(self, batch, rng, prefix=""):
        """The scaled latents of the batch's videos (`prefix` "source_": of an edit's source videos)."""
        if prefix + "latent" in batch:
            z = batch[prefix + "latent"].astype(np.float32)
        elif prefix + "video" in batch:
            if self.tae is None:
                raise ValueError("the batch holds videos but no TAE was given (set tae.path and use pixel mode)")
            mean, logvar = self.tae.encode(ms.Tensor(batch[prefix + "video"].astype(np.float32)), tiled=self.tiled)
            mean, std = mean.asnumpy(), np.exp(0.5 * logvar.asnumpy())
            z = mean + std * rng.standard_normal(mean.shape).astype(np.float32)
        else:
            raise KeyError(f"batch has neither '{prefix}latent' nor '{prefix}video' (keys: {sorted(batch)})")
        return ms.Tensor((z - self.shift) * self.scale)

    def text(self, batch):
        embs, masks = [], []
        for kind in self.encoder_kinds:
            if f"{kind}_emb" in batch:
                emb, mask = batch[f"{kind}_emb"], batch[f"{kind}_mask"]
            elif "caption" in batch and kind in self.text_encoders:
                fps = batch.get("fps", [None] * len(batch["caption"]))
                prompts = [prepare_prompt(str(c), float(f) if f else None, kind) if str(c) else ""
                           for c, f in zip(batch["caption"], fps)]
                emb, mask = self.text_encoders[kind].encode(prompts)
            else:
                raise KeyError(f"batch has no cached '{kind}_emb' and no '{kind}' text encoder was configured")
            embs.append(ms.Tensor(np.asarray(emb, np.float32)))
            masks.append(ms.Tensor(np.asarray(mask, np.float32)))
        return tuple(embs), tuple(masks)

    def __call__(self, batch, rng):
        embs, masks = self.text(batch)
        return self.latents(batch, rng), embs, masks

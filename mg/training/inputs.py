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

    def latents(self, batch, rng):
        if "latent" in batch:
            z = batch["latent"].astype(np.float32)
        elif "video" in batch:
            if self.tae is None:
                raise ValueError("the batch holds videos but no TAE was given (set tae.path and use pixel mode)")
            mean, logvar = self.tae.encode(ms.Tensor(batch["video"].astype(np.float32)), tiled=self.tiled)
            mean, std = mean.asnumpy(), np.exp(0.5 * logvar.asnumpy())
            z = mean + std * rng.standard_normal(mean.shape).astype(np.float32)
        else:
            raise KeyError(f"batch has neither 'latent' nor 'video' (keys: {sorted(batch)})")
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

"""Temporal autoencoder (TAE): 8x compression in T, H and W into 16 latent channels.

    from mg.models.tae import TemporalAutoencoder, tae_config, load_tae
    tae = TemporalAutoencoder(tae_config("small"))
    mean, logvar = tae.encode(video)                 # video (B, 3, T, H, W) in [-1, 1]
    z = tae.scale_latent(mean)                       # what the DiT sees
    video = tae.decode(tae.unscale_latent(z), num_frames=T)
"""
from mg.models.tae.autoencoder import TemporalAutoencoder
from mg.models.tae.config import TAEConfig, tae_config
from mg.models.tae.io import load_tae, save_tae

__all__ = ["TemporalAutoencoder", "TAEConfig", "tae_config", "load_tae", "save_tae"]

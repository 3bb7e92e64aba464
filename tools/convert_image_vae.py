"""Inflate a diffusers-format image VAE (AutoencoderKL folder: config.json + diffusion_pytorch_model.safetensors)
into a TAE checkpoint (safetensors + sidecar JSON) that load_tae reads.

    python tools/convert_image_vae.py --vae_dir path/to/vae --output tae_init.safetensors
"""
import mg  # noqa: F401  (quiet logging before mindspore loads)
from jsonargparse import CLI

from mg.models.tae import save_tae
from mg.models.tae.convert import convert_image_vae


def main(vae_dir: str, output: str, overwrite: bool = False):
    """Convert.

    Args:
        vae_dir: diffusers AutoencoderKL folder (the 16-channel kind fits the default TAE layout).
        output: TAE checkpoint to write (its config goes to `<output>.json`).
        overwrite: replace an existing output.
    """
    tae = convert_image_vae(vae_dir)
    save_tae(tae, output, overwrite=overwrite, extra={"converted_from": vae_dir})
    cfg = tae.config
    print(f"{vae_dir} -> {output}: base {cfg.base_channels} x {list(cfg.channel_multipliers)}, "
          f"{cfg.latent_channels} latent channels, scale {cfg.scaling_factor}, shift {cfg.shift_factor}")


if __name__ == "__main__":
    CLI(main, as_positional=False)

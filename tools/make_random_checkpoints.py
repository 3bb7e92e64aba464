"""Write untrained, randomly initialised checkpoints in the layout inference expects (dit, tae, text encoders), for
trying inference.py before any training: the samples are noise decoded by an untrained TAE, but every stage of
sampling (text encoding, Euler + CFG, tiled TAE decoding, video writing) runs for real.

    python tools/make_random_checkpoints.py checkpoints/random_tiny
"""
import mg  # noqa: F401  (quiet MindSpore logging)

from pathlib import Path

import mindspore as ms
from jsonargparse import CLI

from mg.models.dit import MovieGenDiT, dit_config, save_dit
from mg.models.tae import TemporalAutoencoder, save_tae, tae_config
from mg.models.text_encoders.tiny import write_tiny_text_encoder


def main(output_folder: str, text_width: int = 32, seed: int = 0):
    """output_folder: must not exist yet. text_width: hidden size of the tiny UL2 and MetaCLIP encoders."""
    out = Path(output_folder)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new folder")
    ms.set_seed(seed)
    encoders = {"ul2": text_width, "metaclip": text_width}
    for kind in encoders:
        write_tiny_text_encoder(kind, out / kind, hidden_size=text_width, num_layers=1, seed=seed)
    save_dit(MovieGenDiT(dit_config("tiny", text_encoders=encoders, max_t=4, max_h=8, max_w=8)), out / "dit")
    save_tae(TemporalAutoencoder(tae_config("tiny")), out / "tae.safetensors")
    print(f"wrote untrained dit, tae, ul2 and metaclip checkpoints to {out}")


if __name__ == "__main__":
    CLI(main)

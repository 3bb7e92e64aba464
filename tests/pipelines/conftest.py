"""Tiny random checkpoints (DiT, TAE, text encoders) written once per test session, in the layout of
configs/inference/toy.yaml: dit.safetensors + dit.json, tae.safetensors + tae.safetensors.json, ul2/, byt5/."""
import numpy as np
import pytest
from mindspore import Tensor

from mg.models.dit import MovieGenDiT, dit_config, save_dit
from mg.models.tae import TemporalAutoencoder, save_tae, tae_config
from mg.models.text_encoders.tiny import write_tiny_text_encoder

TEXT_WIDTHS = {"ul2": 32, "byt5": 16}
MAX_LENGTHS = {"ul2": 24, "byt5": 8}


def _randomize(cell, seed, scale=0.1):
    """Random values for every parameter (the zero-initialised output layers too), so the velocity is not 0."""
    rng = np.random.default_rng(seed)
    for p in cell.get_parameters():
        p.set_data(Tensor(rng.normal(0, scale, p.shape).astype(np.float32)))
    return cell


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    dit = _randomize(MovieGenDiT(dit_config("tiny", dim=32, ffn_dim=48, depth=1, in_channels=16,
                                            text_encoders=dict(TEXT_WIDTHS), max_t=4, max_h=4, max_w=4)), 0)
    save_dit(dit, root / "dit")
    save_tae(TemporalAutoencoder(tae_config("tiny")), root / "tae.safetensors")
    write_tiny_text_encoder("ul2", root / "ul2", hidden_size=TEXT_WIDTHS["ul2"], num_layers=1)
    write_tiny_text_encoder("byt5", root / "byt5", hidden_size=TEXT_WIDTHS["byt5"], num_layers=1)
    return root

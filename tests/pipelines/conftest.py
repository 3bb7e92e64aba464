"""Tiny random checkpoints (DiT, TAE, text encoders) written once per test session, in the layout of
configs/inference/toy.yaml: dit.safetensors + dit.json, tae.safetensors + tae.json, ul2/, byt5/."""
import mindspore as ms
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
def inference(load_script):
    """inference.py as a module (its main(argv) and build_parser())."""
    return load_script("inference.py")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    ms.set_context(mode=ms.PYNATIVE_MODE)  # before any kernel runs (session fixtures precede the autouse one)
    ms.set_device("CPU")
    root = tmp_path_factory.mktemp("checkpoints")
    dit = _randomize(MovieGenDiT(dit_config("tiny", dim=32, ffn_dim=48, depth=1, in_channels=16,
                                            text_encoders=dict(TEXT_WIDTHS), max_t=4, max_h=4, max_w=4)), 0)
    save_dit(dit, root / "dit")
    tae = TemporalAutoencoder(tae_config("tiny", base_channels=4, channel_multipliers=(1, 1, 1, 1), norm_groups=2,
                                         scaling_factor=0.5, shift_factor=0.1))
    save_tae(tae, root / "tae.safetensors")
    write_tiny_text_encoder("ul2", root / "ul2", hidden_size=TEXT_WIDTHS["ul2"], num_layers=1)
    write_tiny_text_encoder("byt5", root / "byt5", hidden_size=TEXT_WIDTHS["byt5"], num_layers=1)
    return root


@pytest.fixture(scope="session")
def model_options(tiny_checkpoints):
    """The `load_pipeline` arguments for the tiny checkpoints (encoders run on the fly)."""
    root = tiny_checkpoints
    return dict(dit_checkpoint=str(root / "dit.safetensors"), tae_checkpoint=str(root / "tae.safetensors"),
                text_encoder_paths={k: str(root / k) for k in TEXT_WIDTHS}, text_max_lengths=dict(MAX_LENGTHS))


@pytest.fixture(scope="session")
def tiny_pipeline(model_options):
    from mg.pipelines import load_pipeline

    return load_pipeline(**model_options)

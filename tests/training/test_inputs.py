"""Cached latents and text embeddings that do not fit the transformer are refused before training starts, naming the
folder and both numbers."""
import pytest

from mg.data import VideoDataset
from mg.models.dit import dit_config
from mg.models.tae import tae_config
from mg.training.inputs import ModelInputs

from training.cached_dataset import ENCODERS, write_cached_dataset


def dataset_of(data, with_text=True):
    return VideoDataset(str(data["csv"]), [data["bucket"]], tae_latent_folder=str(data["latents"]),
                        text_emb_folders=data["text"] if with_text else None)


def check(data, with_text=True, encoders=None, **model):
    config = dit_config("tiny", **{"in_channels": 4, "text_encoders": dict(ENCODERS), **model})
    ModelInputs(config.text_encoders, tae_config("tiny"), text_encoders=encoders).check(dataset_of(data, with_text),
                                                                                         config)


def test_a_fitting_cache_passes(tmp_path):
    check(write_cached_dataset(tmp_path))


def test_latents_of_another_tae_name_the_folder_and_both_channel_counts(tmp_path):
    data = write_cached_dataset(tmp_path, latent_shape=(16, 1, 4, 4))
    with pytest.raises(ValueError, match=rf"{data['latents']}: the cached latents have 16 channels but the "
                                         r"transformer takes model.in_channels = 4"):
        check(data)


def test_text_embeddings_of_another_width_name_the_folder_and_both_widths(tmp_path):
    data = write_cached_dataset(tmp_path)
    with pytest.raises(ValueError, match=rf"{data['text']['byt5']}: the cached byt5 embeddings are 8 wide but "
                                         r"model.text_encoders.byt5 = 32"):
        check(data, text_encoders={"ul2": 12, "byt5": 32})


def test_an_encoder_without_cache_or_encoder_is_named(tmp_path):
    data = write_cached_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"\['ul2', 'byt5'\] has neither a cached folder"):
        check(data, with_text=False)

"""Small model factories and inputs shared by the transformer tests."""
import mindspore as ms
import numpy as np

from mg.models.dit import MovieGenDiT, dit_config

TEXT_DIMS = {"ul2": 12, "byt5": 8}


def tiny_config(**overrides):
    settings = dict(depth=2, dim=32, ffn_dim=48, num_heads=4, in_channels=4, text_encoders=dict(TEXT_DIMS),
                    max_t=4, max_h=6, max_w=6)
    settings.update(overrides)
    return dit_config("tiny", **settings)


def randomize(model, seed=0, scale=0.2):
    """Give every parameter (including the zero-initialised ones) random values, so outputs are not trivially 0."""
    rng = np.random.default_rng(seed)
    for p in model.get_parameters():
        p.set_data(ms.Tensor(rng.normal(0, scale, p.shape).astype(np.float32)))
    return model


def random_model(seed=0, **overrides):
    return randomize(MovieGenDiT(tiny_config(**overrides)), seed)


def text_inputs(batch, lengths, rng, dims=TEXT_DIMS):
    """Embeddings and masks per encoder; `lengths[i][b]` real tokens of a padded length 5 + i."""
    embs, masks = [], []
    for i, dim in enumerate(dims.values()):
        pad_len = 5 + i
        embs.append(ms.Tensor(rng.standard_normal((batch, pad_len, dim)).astype(np.float32)))
        mask = np.zeros((batch, pad_len), np.float32)
        for b in range(batch):
            mask[b, :lengths[i][b]] = 1
        masks.append(ms.Tensor(mask))
    return tuple(embs), tuple(masks)

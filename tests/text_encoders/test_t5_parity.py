"""T5 encoder (UL2 / ByT5) against transformers' PyTorch T5EncoderModel on tiny checkpoints it saved."""
import numpy as np
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention as TorchT5Attention

from mg.models.text_encoders import build_text_encoder
from mg.models.text_encoders.t5 import relative_position_buckets

PROMPTS = [
    "a cat on the beach at sunset",
    "dog",
    "the sign says Hello World, 42 times, then the dog and the cat sit on the beach",  # truncated at 20
    "",
]


def reference(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long))
    return out.last_hidden_state.numpy()


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
def test_ul2_matches_transformers(tmp_path, make_t5, ul2_tokenizer, feed_forward_proj):
    ref = make_t5(tmp_path, feed_forward_proj, vocab_size=len(ul2_tokenizer))
    ul2_tokenizer.save_pretrained(tmp_path)
    enc = build_text_encoder("ul2", tmp_path, max_length=20)
    emb, mask = enc.encode(PROMPTS)

    tokens = ul2_tokenizer(PROMPTS, padding="max_length", max_length=20, truncation=True)
    expected_mask = np.array(tokens["attention_mask"])
    assert emb.shape == (4, 20, 32) and emb.dtype == np.float32
    assert mask.dtype == np.uint8 and (mask == expected_mask).all()
    assert mask[2].all() and mask[3].sum() == 1  # truncated row is full; "" still has its </s>
    np.testing.assert_allclose(emb, reference(ref, tokens["input_ids"], expected_mask), atol=1e-4, rtol=0)
    assert enc.kind == "ul2" and enc.hidden_size == 32 and enc.max_length == 20


def byt5_ids(text, length):
    """ByT5's closed form: UTF-8 bytes + 3, then </s> = 1, truncated to keep </s>, padded with 0."""
    ids = [b + 3 for b in text.encode("utf-8")][: length - 1] + [1]
    return ids + [0] * (length - len(ids)), [1] * len(ids) + [0] * (length - len(ids))


def test_byt5_bytes_and_empty_span(tmp_path, make_t5):
    ref = make_t5(tmp_path, "gated-gelu", vocab_size=384)  # no tokenizer files: ByT5's needs none
    enc = build_text_encoder("byt5", tmp_path, max_length=10)
    prompts = ["Café", "", "OPEN 24 HOURS", "   "]
    emb, mask = enc.encode(prompts)

    expected = [byt5_ids(p, 10) for p in prompts[:3]]
    assert mask[0].tolist() == expected[0][1] and mask[2].tolist() == expected[2][1]
    assert mask[2].all()  # 13 bytes truncated to 9 + </s>
    for row in (1, 3):  # no visual text: all masked, zero embedding
        assert not mask[row].any() and not emb[row].any()
    ids = np.array([expected[0][0], expected[2][0]])
    np.testing.assert_allclose(emb[[0, 2]], reference(ref, ids, np.array(mask[[0, 2]])), atol=1e-4, rtol=0)


def test_all_empty_byt5_batch_skips_the_model(tmp_path, make_t5):
    make_t5(tmp_path, "gated-gelu", vocab_size=384)
    emb, mask = build_text_encoder("byt5", tmp_path, max_length=6).encode(["", ""])
    assert emb.shape == (2, 6, 32) and not emb.any() and not mask.any()


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 12)])
def test_relative_position_buckets_match_transformers(num_buckets, max_distance):
    length = 300
    pos = torch.arange(length)
    expected = TorchT5Attention._relative_position_bucket(
        pos[None, :] - pos[:, None], bidirectional=True, num_buckets=num_buckets, max_distance=max_distance
    ).numpy()
    np.testing.assert_array_equal(relative_position_buckets(length, num_buckets, max_distance), expected)

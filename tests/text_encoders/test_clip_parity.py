"""CLIP text transformer (MetaCLIP) against transformers' CLIPTextModel / CLIPModel, incl. position extension."""
import numpy as np
import pytest
import torch
import transformers

from mg.models.hf_checkpoint import interpolate_positions
from mg.models.text_encoders import build_text_encoder

PROMPTS = ["FPS-16 a cat", "FPS-24 a dog runs on the beach", ""]


def reference(model, tokenizer, prompts, length):
    tokens = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return out.last_hidden_state.numpy(), tokens["attention_mask"].numpy()


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_clip_matches_transformers(tmp_path, make_clip_text, clip_tokenizer, hidden_act):
    ref = make_clip_text(tmp_path, hidden_act, positions=16, vocab_size=len(clip_tokenizer))
    clip_tokenizer.save_pretrained(tmp_path)
    emb, mask = build_text_encoder("metaclip", tmp_path, max_length=16).encode(PROMPTS)
    expected, expected_mask = reference(ref, clip_tokenizer, PROMPTS, 16)
    assert (mask == expected_mask).all()
    assert mask[1].all() and mask[2].sum() == 2  # truncated row full; "" is <start><end>
    np.testing.assert_allclose(emb, expected, atol=1e-4, rtol=0)


def test_interpolate_positions_is_linear_resampling():
    table = np.random.default_rng(0).normal(size=(77, 5)).astype(np.float32)
    out = interpolate_positions(table, 256)
    src = np.linspace(0, 76, 256)  # new position j sits at j * 76 / 255 on the old axis
    expected = np.stack([np.interp(src, np.arange(77), table[:, c]) for c in range(5)], 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_array_equal(out[[0, -1]], table[[0, -1]])
    np.testing.assert_array_equal(interpolate_positions(table, 77), table)


def test_extended_positions_match_a_reference_with_the_interpolated_table(
    tmp_path, make_clip_text, clip_tokenizer, clip_positions
):
    """An 8-position checkpoint loaded with max_length 20 equals transformers' 20-position model whose table is
    the np.interp resampling of the 8 rows (all other weights shared)."""
    short = make_clip_text(tmp_path, "gelu", positions=8, vocab_size=len(clip_tokenizer))
    clip_tokenizer.save_pretrained(tmp_path)
    enc = build_text_encoder("metaclip", tmp_path, max_length=20)

    long_cfg = transformers.CLIPTextConfig(**{**short.config.to_dict(), "max_position_embeddings": 20})
    long = transformers.CLIPTextModel(long_cfg).eval()
    result = long.load_state_dict({k: v for k, v in short.state_dict().items() if "position" not in k}, strict=False)
    assert [k for k in result.missing_keys if "position_embedding" not in k] == []
    old = clip_positions(short).detach().numpy()
    src = np.linspace(0, 7, 20)
    with torch.no_grad():
        clip_positions(long).copy_(torch.tensor(np.stack([np.interp(src, np.arange(8), c) for c in old.T], 1)))

    prompts = ["a dog runs on the beach at sunset", "cat"]
    expected, expected_mask = reference(long, clip_tokenizer, prompts, 20)
    emb, mask = enc.encode(prompts)
    assert mask[0].sum() > 8  # the prompt really uses extended positions
    assert (mask == expected_mask).all()
    np.testing.assert_allclose(emb, expected, atol=1e-4, rtol=0)


def test_full_clip_model_checkpoint_loads_its_text_tower(tmp_path, clip_tokenizer):
    """MetaCLIP checkpoints are CLIPModel (text + vision): the text tower loads, the rest is ignored."""
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(clip_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=12, hidden_act="gelu",
                         eos_token_id=len(clip_tokenizer) - 1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=8, patch_size=4),
        projection_dim=8,
    )
    model = transformers.CLIPModel(cfg).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    clip_tokenizer.save_pretrained(tmp_path)
    emb, _ = build_text_encoder("metaclip", tmp_path, max_length=12).encode(PROMPTS)
    expected, _ = reference(model.text_model, clip_tokenizer, PROMPTS, 12)
    np.testing.assert_allclose(emb, expected, atol=1e-4, rtol=0)

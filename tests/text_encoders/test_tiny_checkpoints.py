"""write_tiny_text_encoder writes checkpoints transformers loads completely and our encoders reproduce."""
import numpy as np
import pytest
import torch
import transformers

from mg.models.hf_checkpoint import load_weights
from mg.models.text_encoders import build_text_encoder
from mg.models.text_encoders.encoder import _t5_name
from mg.models.text_encoders.tiny import write_tiny_text_encoder

REFERENCE = {"ul2": transformers.T5EncoderModel, "byt5": transformers.T5EncoderModel,
             "metaclip": transformers.CLIPTextModel}


@pytest.mark.parametrize("kind", ["ul2", "byt5", "metaclip"])
def test_tiny_checkpoint_loads_in_transformers_and_matches(tmp_path, kind):
    out = write_tiny_text_encoder(kind, tmp_path / kind, hidden_size=16, num_layers=1, num_heads=2,
                                  max_positions=12, words=("cat", "sign"))
    ref, info = REFERENCE[kind].from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]

    enc = build_text_encoder(kind, out, max_length=12)
    prompts = ["FPS-16 a cat", "a sign that says hi"]
    emb, mask = enc.encode(prompts)
    tokens = enc.tokenizer(prompts, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = ref.eval()(**tokens).last_hidden_state.numpy()
    np.testing.assert_allclose(emb, expected, atol=1e-4, rtol=0)
    assert np.abs(emb[0] - emb[1]).max() > 1e-2  # different prompts, different embeddings


def test_tiny_writer_refuses_to_overwrite(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        write_tiny_text_encoder("byt5", tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_truncation_is_reported_once(tmp_path, caplog):
    out = write_tiny_text_encoder("metaclip", tmp_path / "metaclip", hidden_size=16, num_layers=1, num_heads=2,
                                  max_positions=12)
    enc = build_text_encoder("metaclip", out, max_length=12)
    with caplog.at_level("WARNING", logger="mg.models.text_encoders.encoder"):
        enc.encode(["a cat", "abcdefghij"])  # 4 and 10 byte tokens + start/end: the second fills max_length exactly
        assert not caplog.records
        enc.encode(["a cat", "a yellow triangle moving right"])
        assert len(caplog.records) == 1
        assert "cut to max_length 12" in caplog.text and "a yellow triangle moving right" in caplog.text
        enc.encode(["a yellow triangle moving left"])
        assert len(caplog.records) == 1


def test_loading_weights_writes_into_the_parameters(tmp_path):
    """In place, as a graph that ms.jit compiled before the load needs (set_data would swap in new tensors)."""
    sizes = dict(hidden_size=16, num_layers=1, num_heads=2)
    first = write_tiny_text_encoder("byt5", tmp_path / "first", seed=0, **sizes)
    second = write_tiny_text_encoder("byt5", tmp_path / "second", seed=1, **sizes)
    model = build_text_encoder("byt5", first, max_length=6).model
    views = {name: p.asnumpy() for name, p in model.parameters_and_names()}  # on CPU: the parameters' own memory
    before = {name: view.copy() for name, view in views.items()}
    load_weights(model, second, _t5_name)
    expected = build_text_encoder("byt5", second, max_length=6).model
    for name, p in expected.parameters_and_names():
        np.testing.assert_array_equal(views[name], p.asnumpy(), err_msg=name)
    assert any(np.abs(views[name] - before[name]).max() > 1e-2 for name in views)

"""build_text_encoder fails clearly on bad directories, configs, weights, tokenizers and arguments."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mg.io import CheckpointError
from mg.models.text_encoders import build_text_encoder


def test_missing_directory(tmp_path):
    missing = tmp_path / "no_such_ul2"
    with pytest.raises(FileNotFoundError, match="no_such_ul2.*does not exist"):
        build_text_encoder("ul2", missing, 8)


def test_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        build_text_encoder("byt5", tmp_path, 8)


def test_missing_weights(tmp_path, make_t5):
    make_t5(tmp_path, "relu", vocab_size=384)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        build_text_encoder("byt5", tmp_path, 8)


def test_missing_tokenizer_for_ul2(tmp_path, make_t5):
    make_t5(tmp_path, "relu", vocab_size=384)
    with pytest.raises(FileNotFoundError, match="no tokenizer files .* ul2"):
        build_text_encoder("ul2", tmp_path, 8)


def test_wrong_model_type(tmp_path, make_clip_text):
    make_clip_text(tmp_path, "gelu", positions=8, vocab_size=514)
    with pytest.raises(ValueError, match="model_type 'clip_text_model' is not a ul2 checkpoint"):
        build_text_encoder("ul2", tmp_path, 8)


def test_config_weight_mismatch(tmp_path, make_t5):
    make_t5(tmp_path, "gated-gelu", vocab_size=384)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "d_ff": 50}))
    with pytest.raises(CheckpointError, match=r"does config.json match.*6 shape mismatch \[.*wi_0.weight: \(48, 32\) "
                                              r"vs expected \(50, 32\)"):
        build_text_encoder("byt5", tmp_path, 8)


def test_missing_tensor_is_named(tmp_path, make_t5):
    make_t5(tmp_path, "relu", vocab_size=384)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["encoder.final_layer_norm.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"does not fit T5Encoder .*: 1 missing \[final_layer_norm.weight\]"):
        build_text_encoder("byt5", tmp_path, 8)


def test_tokenizer_larger_than_vocab(tmp_path, make_t5, ul2_tokenizer):
    make_t5(tmp_path, "relu", vocab_size=len(ul2_tokenizer) - 5)
    ul2_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="tokenizer has .* tokens but the model's vocab_size"):
        build_text_encoder("ul2", tmp_path, 8)


@pytest.mark.parametrize("kind,max_length,error", [("t5", 8, "unknown text encoder kind"), ("ul2", 0, "max_length"),
                                                   ("ul2", 8.0, "max_length")])
def test_bad_arguments(tmp_path, kind, max_length, error):
    with pytest.raises(ValueError, match=error):
        build_text_encoder(kind, tmp_path, max_length)


def test_encode_wants_a_list(tmp_path, make_t5):
    make_t5(tmp_path, "relu", vocab_size=384)
    enc = build_text_encoder("byt5", tmp_path, 8)
    with pytest.raises(TypeError, match="list of str"):
        enc.encode("a single string")
    assert np.array_equal(enc.encode([])[1], np.zeros((0, 8), np.uint8))

"""Tiny random text encoders in Hugging Face format, for tests and the toy world (no download, no torch).

The tokenizers cover any text: UL2's is a character-level Unigram model (plus optional whole words), CLIP's a
byte-level BPE without merges. The weights are random, so embeddings carry the prompt's identity, not meaning.
"""
import string
from pathlib import Path

import numpy as np

from .prompts import check_kind


def tiny_t5_tokenizer(words=()):
    """T5 (sentencepiece-style Unigram) tokenizer over characters, plus "▁word" pieces for `words`."""
    from transformers import T5Tokenizer

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in chars] + [("▁" + w, -1.0) for w in dict.fromkeys(words)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_clip_tokenizer():
    """CLIP tokenizer whose vocabulary is the 256 byte-level symbols (with and without "</w>"), no merges."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def _t5_weights(cfg, rng):
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    w = {"shared.weight": rng.normal(0, 1.0, (cfg.vocab_size, d))}
    w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = rng.normal(
        0, 0.5, (cfg.relative_attention_num_buckets, cfg.num_heads)
    )
    for i in range(cfg.num_layers):
        p = f"encoder.block.{i}.layer."
        for name, shape in (("q", (inner, d)), ("k", (inner, d)), ("v", (inner, d)), ("o", (d, inner))):
            w[f"{p}0.SelfAttention.{name}.weight"] = rng.normal(0, d**-0.5, shape)
        w[f"{p}0.layer_norm.weight"] = np.ones(d)
        for name in ("wi_0", "wi_1"):
            w[f"{p}1.DenseReluDense.{name}.weight"] = rng.normal(0, d**-0.5, (cfg.d_ff, d))
        w[f"{p}1.DenseReluDense.wo.weight"] = rng.normal(0, cfg.d_ff**-0.5, (d, cfg.d_ff))
        w[f"{p}1.layer_norm.weight"] = np.ones(d)
    w["encoder.final_layer_norm.weight"] = np.ones(d)
    return w


def _clip_weights(cfg, rng):
    d, f = cfg.hidden_size, cfg.intermediate_size
    w = {
        "text_model.embeddings.token_embedding.weight": rng.normal(0, 0.02, (cfg.vocab_size, d)),
        "text_model.embeddings.position_embedding.weight": rng.normal(0, 0.01, (cfg.max_position_embeddings, d)),
        "text_model.final_layer_norm.weight": np.ones(d),
        "text_model.final_layer_norm.bias": np.zeros(d),
    }
    for i in range(cfg.num_hidden_layers):
        p = f"text_model.encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[f"{p}self_attn.{name}.weight"] = rng.normal(0, d**-0.5, (d, d))
            w[f"{p}self_attn.{name}.bias"] = np.zeros(d)
        w[f"{p}mlp.fc1.weight"], w[f"{p}mlp.fc1.bias"] = rng.normal(0, d**-0.5, (f, d)), np.zeros(f)
        w[f"{p}mlp.fc2.weight"], w[f"{p}mlp.fc2.bias"] = rng.normal(0, f**-0.5, (d, f)), np.zeros(d)
        for norm in ("layer_norm1", "layer_norm2"):
            w[f"{p}{norm}.weight"], w[f"{p}{norm}.bias"] = np.ones(d), np.zeros(d)
    return w


def write_tiny_text_encoder(kind: str, out_dir, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
                            max_positions: int = 77, words=(), seed: int = 0) -> Path:
    """Write config.json, model.safetensors and (except for byt5) a tokenizer into a new or empty `out_dir`.

    ul2: gated-gelu T5 over tiny_t5_tokenizer(words); byt5: gated-gelu T5 with ByT5's 384-token byte vocabulary;
    metaclip: CLIP text model (gelu, `max_positions` positions) over tiny_clip_tokenizer().
    """
    from safetensors.numpy import save_file
    from transformers import CLIPTextConfig, T5Config

    check_kind(kind)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: not empty; refusing to overwrite (choose a new directory)")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if kind == "metaclip":
        tokenizer = tiny_clip_tokenizer()
        cfg = CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, max_position_embeddings=max_positions,
            hidden_act="gelu", bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        weights = _clip_weights(cfg, rng)
    else:
        tokenizer = tiny_t5_tokenizer(words) if kind == "ul2" else None
        cfg = T5Config(
            vocab_size=len(tokenizer) if tokenizer is not None else 384, d_model=hidden_size,
            d_kv=hidden_size // num_heads, d_ff=2 * hidden_size, num_layers=num_layers, num_heads=num_heads,
            feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
            tie_word_embeddings=False, is_encoder_decoder=False,
        )
        weights = _t5_weights(cfg, rng)
    cfg.save_pretrained(out)
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    save_file(weights, str(out / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out

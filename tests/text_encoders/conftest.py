"""Tiny checkpoints saved by transformers itself (the reference implementation) for the parity tests."""
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mg.models.text_encoders.tiny import tiny_clip_tokenizer, tiny_t5_tokenizer  # noqa: E402

WORDS = ("a", "cat", "dog", "on", "the", "beach", "at", "sunset", "sign", "says")


def save_t5(out_dir, feed_forward_proj, vocab_size, seed=0):
    """Random T5EncoderModel saved with save_pretrained (safetensors); returns the torch model (eval mode)."""
    torch.manual_seed(seed)
    cfg = transformers.T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, feed_forward_proj=feed_forward_proj,
        dropout_rate=0.0,
    )
    model = transformers.T5EncoderModel(cfg).eval()
    with torch.no_grad():  # the default init has a near-zero relative bias; make it matter
        model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.normal_(0, 1.0)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def position_table(model):
    """The position embedding Parameter (its path differs between transformers 4 and 5)."""
    return next(p for n, p in model.named_parameters() if n.endswith("embeddings.position_embedding.weight"))


def save_clip_text(out_dir, hidden_act, positions, vocab_size, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=positions, hidden_act=hidden_act, eos_token_id=vocab_size - 1,
        bos_token_id=vocab_size - 2, pad_token_id=vocab_size - 1,
    )
    model = transformers.CLIPTextModel(cfg).eval()
    with torch.no_grad():  # default init gives positions std 0.01; larger makes the position table matter
        position_table(model).normal_(0, 1.0)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


@pytest.fixture(scope="module")
def ul2_tokenizer():
    return tiny_t5_tokenizer(WORDS)


@pytest.fixture(scope="module")
def clip_tokenizer():
    return tiny_clip_tokenizer()


@pytest.fixture
def make_t5():
    return save_t5


@pytest.fixture
def make_clip_text():
    return save_clip_text


@pytest.fixture
def clip_positions():
    return position_table

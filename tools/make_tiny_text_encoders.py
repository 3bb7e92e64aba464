"""Write tiny random Hugging Face-format text encoders (config.json, model.safetensors, tokenizer) to a folder.

For tests and the toy world, where pretrained UL2 / ByT5 / MetaCLIP cannot be downloaded. Each kind goes into
<out_dir>/<kind>; existing non-empty folders are refused, never overwritten.

    python tools/make_tiny_text_encoders.py toy/text_encoders --hidden_size 32 \
        --words '[red, square, moves, left, right]'
"""
from jsonargparse import CLI


def main(out_dir: str, kinds: tuple[str, ...] = ("ul2", "byt5", "metaclip"), hidden_size: int = 32,
         num_layers: int = 2, num_heads: int = 4, max_positions: int = 77, words: tuple[str, ...] = (),
         seed: int = 0):
    """Write one tiny encoder per kind.

    Args:
        out_dir: parent folder; each encoder is written to out_dir/<kind>.
        kinds: which of ul2, byt5, metaclip to write.
        hidden_size: model width (also the embedding width the DiT's text projector sees).
        num_layers: transformer layers.
        num_heads: attention heads (must divide hidden_size).
        max_positions: MetaCLIP position table length (longer max_length at load time interpolates it).
        words: whole words given their own UL2 token (anything else is spelled in characters).
        seed: NumPy seed of the random weights.
    """
    import mg  # noqa: F401  (quiet MindSpore logging before anything imports it)
    from pathlib import Path

    from mg.models.text_encoders.tiny import write_tiny_text_encoder

    if hidden_size % num_heads:
        raise ValueError(f"--hidden_size {hidden_size} is not divisible by --num_heads {num_heads}")
    for kind in kinds:
        path = write_tiny_text_encoder(kind, Path(out_dir) / kind, hidden_size, num_layers, num_heads,
                                       max_positions, words, seed)
        print(f"wrote {kind} -> {path}")


if __name__ == "__main__":
    CLI(main)

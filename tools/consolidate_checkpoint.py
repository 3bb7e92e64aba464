"""Consolidate a sharded training checkpoint (one file per rank, docs/parallel.md) into one model checkpoint that
inference and --model.pretrained_model_path load: <output>.safetensors + <output>.json with the DiT config. Works in
one process, one tensor at a time, whatever layout saved the checkpoint.

    python tools/consolidate_checkpoint.py --checkpoint runs/stage1/ckpt/step_000010000 --output checkpoints/dit_10k
"""
import mg  # noqa: F401  (quiet MindSpore logging)

from typing import Literal

from jsonargparse import CLI

from mg.training.checkpoint import export_dit


def main(checkpoint: str, output: str, weights: Literal["ema", "model"] = "ema", overwrite: bool = False):
    """Consolidate a sharded checkpoint.

    Args:
        checkpoint: a sharded checkpoint directory (step_<step>/) or a directory of checkpoints (its newest complete
            one is used).
        output: path stem of the model file.
        weights: ema (the raw weights when the checkpoint has no EMA) or model (the raw weights).
        overwrite: replace an existing output.
    """
    written, source = export_dit(checkpoint, output, prefer_ema=weights == "ema", overwrite=overwrite)
    print(f"consolidated {source} -> {written}")


if __name__ == "__main__":
    CLI(main, as_positional=False)

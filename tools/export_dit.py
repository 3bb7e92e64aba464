"""Export the transformer of a training checkpoint (EMA weights by default) as a standalone model checkpoint that
inference loads: <output>.safetensors + <output>.json (with the DiT config).

    python tools/export_dit.py --checkpoint runs/toy/dit_stage2/ckpt --output checkpoints/toy/dit
"""
import mg  # noqa: F401  (quiet MindSpore logging)

from pathlib import Path

from jsonargparse import CLI

from mg.models.dit import load_dit, save_dit
from mg.training.checkpoint import CheckpointManager


def main(checkpoint: str, output: str, ema: bool = True, overwrite: bool = False):
    """checkpoint: a training checkpoint file or a directory (its newest complete checkpoint is used).
    output: path stem of the exported model. ema: export the EMA weights (else the raw weights)."""
    where = Path(checkpoint)
    manager = CheckpointManager(where if where.is_dir() else where.parent)
    source = manager.resolve("latest" if where.is_dir() else checkpoint)
    model = load_dit(source, prefer_ema=ema)
    written = save_dit(model, output, {"source": str(source), "weights": "ema" if ema else "model"}, overwrite)
    print(f"exported {source} -> {written}")


if __name__ == "__main__":
    CLI(main, as_positional=False)

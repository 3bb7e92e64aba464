"""Export the transformer of a training checkpoint (EMA weights by default) as a standalone model checkpoint that
inference loads: <output>.safetensors + <output>.json (with the DiT config). The checkpoint may be a file, a sharded
checkpoint directory (see also tools/consolidate_checkpoint.py) or a directory of checkpoints (its newest).

    python tools/export_dit.py --checkpoint runs/toy/dit_stage2/ckpt --output checkpoints/toy/dit
"""
import mg  # noqa: F401  (quiet MindSpore logging)

from jsonargparse import CLI

from mg.training.checkpoint import export_dit


def main(checkpoint: str, output: str, ema: bool = True, overwrite: bool = False):
    """Export a DiT.

    Args:
        checkpoint: a training checkpoint file, a sharded checkpoint directory or a directory of checkpoints (its
            newest complete one is used).
        output: path stem of the exported model.
        ema: export the EMA weights (a checkpoint without them gives its raw ones), else the raw weights.
        overwrite: replace an existing output.
    """
    written, source = export_dit(checkpoint, output, prefer_ema=ema, overwrite=overwrite)
    print(f"exported {source} -> {written}")


if __name__ == "__main__":
    CLI(main, as_positional=False)

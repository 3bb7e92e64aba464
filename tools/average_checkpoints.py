"""Average the transformers of several checkpoints of one architecture into one model file (Movie Gen's model
averaging): <output>.safetensors + <output>.json with the DiT config, as tools/export_dit.py writes, so inference
and --model.pretrained_model_path load it. Each checkpoint may be a training checkpoint file, an exported model
file or a sharded checkpoint directory; its EMA weights are used when it has them. How: mg/training/averaging.py.

    python tools/average_checkpoints.py --checkpoints [runs/a/ckpt/step_000005000.safetensors, \
        runs/b/ckpt/step_000005000] --output checkpoints/dit_avg --weights [1, 1]
"""
import mg  # noqa: F401  (quiet MindSpore logging)

import logging
from typing import Optional

from jsonargparse import CLI

from mg.training.averaging import average_checkpoints


def main(checkpoints: list[str], output: str, weights: Optional[list[float]] = None, overwrite: bool = False):
    """Average DiT checkpoints.

    Args:
        checkpoints: two or more checkpoints of one architecture: training checkpoint files, exported model files or
            sharded checkpoint directories (a directory of checkpoints: its newest complete one).
        output: path stem of the averaged model.
        weights: one positive weight per checkpoint, normalised to sum 1 (default: uniform).
        overwrite: replace an existing output.
    """
    result = average_checkpoints(checkpoints, output, weights, overwrite)
    sources = ", ".join(f"{path} x {weight:.4g}" for path, weight in zip(result.sources, result.weights))
    print(f"averaged {result.num_params} parameters of {len(result.sources)} checkpoints: {sources}")
    logging.getLogger("average_checkpoints").info("wrote %s", result.path)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    CLI(main, as_positional=False)

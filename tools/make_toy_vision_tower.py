"""Make the toy world's reference-image tower: a tiny CLIP vision transformer, trained here to tell the toy subjects
apart (the role MetaCLIP's pretraining plays for the paper's tower), written as a Hugging Face-format checkpoint
directory that the personalization model starts from through the same loading path as a real one.

    python tools/make_toy_vision_tower.py --output_folder checkpoints/toy/vision [--steps 400] [--seed 0]

Training is contrastive (InfoNCE, CLIP's loss with image pairs in place of image-text pairs): two renders of the same
subject at different places and sizes are a positive pair, the other subjects of the batch negatives. Only the
subjects that the toy personalization data trains on are drawn (`--unseen` are never shown), so the evaluation's
unseen subjects are new to the tower as well.
"""
import logging
from typing import List

import mg  # noqa: F401  (quiet logging before mindspore loads)
import mindspore as ms
import numpy as np
from jsonargparse import auto_cli
from mindspore import mint

from mg.data.toy_subjects import ALL_SUBJECTS, DEFAULT_UNSEEN, Subject, reference_placement, render_reference
from mg.data.transforms import to_model_range
from mg.models.clip_vision import CLIPVisionConfig, CLIPVisionTransformer, write_clip_vision
from mg.optim import build_adamw

_logger = logging.getLogger("make_toy_vision_tower")

TEMPERATURE = 0.1  # CLIP learns its temperature; a fixed one is enough for 36 subjects


class ContrastiveTower(ms.nn.Cell):
    """The tower and a projection head (discarded afterwards, as CLIP's is by the paper's use of the tower)."""

    def __init__(self, config):
        super().__init__()
        self.tower = CLIPVisionTransformer(config)
        self.head = mint.nn.Linear(config.hidden_size, config.hidden_size)

    def embed(self, images):
        tokens = self.tower(self.tower.normalize(images))
        features = self.head(mint.mean(tokens, dim=1))
        return features / mint.sqrt(mint.sum(features * features, dim=-1, keepdim=True) + 1e-6)

    def construct(self, first, second):
        logits = mint.matmul(self.embed(first), self.embed(second).T) / TEMPERATURE
        labels = mint.arange(logits.shape[0])
        loss = mint.nn.functional.cross_entropy
        return 0.5 * (loss(logits, labels) + loss(logits.T, labels))


def render_views(rng, subjects, size):
    """Two renders of each subject at independent places and sizes: (B, 3, size, size) in [-1, 1] each."""
    views = [[], []]
    for subject in subjects:
        for view in views:
            image = render_reference(subject, reference_placement(rng, size, size), size, size)
            view.append(to_model_range(image)[:, 0])
    return tuple(ms.Tensor(np.stack(v)) for v in views)


def main(output_folder: str, steps: int = 400, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
         image_size: int = 64, patch_size: int = 8, hidden_size: int = 64, layers: int = 2, heads: int = 4,
         unseen: List[str] = list(DEFAULT_UNSEEN)):
    """Train the tower and write it to `output_folder` (new or empty).

    Args:
        output_folder: the checkpoint directory to write (config.json, preprocessor_config.json, model.safetensors).
        steps: optimisation steps.
        batch_size: subjects per step (distinct, so each has one positive).
        lr: AdamW learning rate.
        seed: seeds the weights and the renders.
        image_size: the tower's input side in pixels (the toy frames' 64: the subject is not shrunk).
        patch_size: pixels per patch side.
        hidden_size: token width.
        layers: transformer layers.
        heads: attention heads.
        unseen: subjects never shown (the personalization data's held-out ones).
    """
    held = {Subject.parse(name) for name in unseen}
    seen = [s for s in ALL_SUBJECTS if s not in held]
    if batch_size > len(seen):
        raise ValueError(f"batch_size {batch_size} exceeds the {len(seen)} subjects shown")
    config = CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=layers,
                              num_attention_heads=heads, image_size=image_size, patch_size=patch_size)
    ms.set_seed(seed)
    model = ContrastiveTower(config)
    optimizer = build_adamw(model.trainable_params(), lr=lr, weight_decay=0.0)
    grad_fn = ms.value_and_grad(model, None, optimizer.parameters)

    @ms.jit
    def step(first, second):
        loss, grads = grad_fn(first, second)
        optimizer(grads)
        return loss

    rng = np.random.default_rng(seed)
    for i in range(steps):
        chosen = [seen[k] for k in rng.choice(len(seen), batch_size, replace=False)]
        loss = float(step(*render_views(rng, chosen, image_size)).asnumpy())
        if i % 50 == 0 or i == steps - 1:
            _logger.info("step %d  contrastive loss %.3f", i, loss)
    weights = {p.name[len("tower."):]: p.asnumpy() for p in model.trainable_params() if p.name.startswith("tower.")}
    write_clip_vision(output_folder, config, weights)
    _logger.info("wrote %s", output_folder)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    auto_cli(main, as_positional=False)

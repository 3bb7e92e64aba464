"""Synthetic moving-shape videos for TAE benchmarks and smoke training: soft-edged discs and squares of random
colour moving in straight lines (bouncing off the borders) over a plain background."""
import numpy as np


def moving_shapes(rng, batch, frames, height, width, max_shapes=2, edge=1.5):
    """float32 (batch, 3, frames, height, width) in [-1, 1]; `edge` is the anti-aliased edge width in pixels."""
    out = np.empty((batch, 3, frames, height, width), np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for b in range(batch):
        video = np.broadcast_to(rng.uniform(-1, 1, (3, 1, 1, 1)), (3, frames, height, width)).copy()
        for _ in range(rng.integers(1, max_shapes + 1)):
            size = rng.uniform(0.15, 0.35) * min(height, width)
            pos = rng.uniform([size, size], [height - size, width - size])
            vel = rng.uniform(-1.5, 1.5, 2)
            colour = rng.uniform(-1, 1, 3).reshape(3, 1, 1)
            square = rng.random() < 0.5
            for t in range(frames):
                dy, dx = yy - pos[0], xx - pos[1]
                dist = np.maximum(np.abs(dy), np.abs(dx)) if square else np.sqrt(dy * dy + dx * dx)
                alpha = np.clip((size - dist) / edge + 0.5, 0, 1)
                video[:, t] = video[:, t] * (1 - alpha) + colour * alpha
                pos = pos + vel
                for axis, limit in ((0, height), (1, width)):
                    if not size <= pos[axis] <= limit - size:
                        vel[axis] = -vel[axis]
                        pos[axis] = np.clip(pos[axis], size, limit - size)
        out[b] = video
    return out

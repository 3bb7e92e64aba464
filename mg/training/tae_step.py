"""The TAE's training: its step object (autoencoder update, then once started a discriminator update; eager or
ms.jit) and its batches (video clips, and every n-th batch one frame from each of many clips)."""
import mindspore as ms
import numpy as np
from mindspore import ops

from mg.data.buckets import Bucket
from mg.data.dataset import VideoDataset
from mg.data.loader import VideoDataLoader
from mg.io import check_names, copy_into, tensor_to_numpy
from mg.models.tae.losses import hinge_d_loss
from mg.models.tae.synthetic import moving_shapes
from mg.optim import load_optimizer_state, optimizer_state
from mg.training.train_step import TrainStep


class TAETrainStep(TrainStep):
    """Call with a batch x (B, 3, T, H, W) in [-1, 1] and the step (optimizer updates done before this one); returns
    a dict of float losses.

    `optimizer` updates the autoencoder, `disc_optimizer` the loss's discriminator (if the loss has one); the
    discriminator trains and the adversarial term applies from `loss.cfg.disc_start` on. Image (T=1) and video batches
    compile one graph each under jit. The discriminator and its optimizer go into checkpoints as ``disc/`` and
    ``disc_optimizer/``.
    """

    def __init__(self, tae, loss, optimizer, disc_optimizer=None, jit=True, clip_grad_norm=0.0):
        self.model, self.loss, self.optimizer = tae, loss, optimizer
        self.discriminator, self.disc_optimizer = loss.discriminator, disc_optimizer
        if self.discriminator is not None and disc_optimizer is None:
            raise ValueError("TAETrainStep: a loss with a discriminator needs disc_optimizer")
        self.clip_grad_norm = clip_grad_norm
        self._g_grad = ms.value_and_grad(self._g_forward, None, optimizer.parameters, has_aux=True)
        self._g_step = ms.jit(self._g_update) if jit else self._g_update
        if self.discriminator is not None:
            self._d_grad = ms.value_and_grad(self._d_forward, None, disc_optimizer.parameters)
            self._d_step = ms.jit(self._d_update) if jit else self._d_update

    def _g_forward(self, x, adversarial):
        recon, mean, logvar = self.model(x)
        total, parts = self.loss(x, recon, mean, logvar, adversarial)
        return total, parts, recon

    def _g_update(self, x, adversarial):
        (total, parts, recon), grads = self._g_grad(x, adversarial)
        if self.clip_grad_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_grad_norm)
        self.optimizer(grads)
        return total, parts, recon

    def _d_forward(self, x, recon):
        return hinge_d_loss(self.discriminator(x), self.discriminator(recon))

    def _d_update(self, x, recon):
        loss, grads = self._d_grad(x, ops.stop_gradient(recon))
        self.disc_optimizer(grads)
        return loss

    def __call__(self, x, step):
        adversarial = float(self.discriminator is not None and step >= self.loss.cfg.disc_start)
        total, parts, recon = self._g_step(x, ms.Tensor(adversarial, ms.float32))
        out = {"loss": float(total.asnumpy()), **{n: float(p.asnumpy()) for n, p in zip(self.loss.part_names, parts)}}
        if adversarial:
            out["d_loss"] = float(self._d_step(x, recon).asnumpy())
        return out

    def train_batch(self, batch, step, rng):
        return self(ms.Tensor(batch), step)  # the TAE's randomness: its batches' generator and its posterior draw

    def extra_state(self):
        if self.discriminator is None:
            return {}
        return {"disc": {name: tensor_to_numpy(p) for name, p in self._disc_parameters().items()},
                "disc_optimizer": optimizer_state(self.disc_optimizer)}

    def load_extra_state(self, spaces):
        if self.discriminator is None:
            return
        missing = {"disc", "disc_optimizer"} - set(spaces)
        if missing:
            raise ValueError(f"the checkpoint has no {sorted(missing)} but this run trains a discriminator "
                             "(loss.disc_weight > 0)")
        parameters = self._disc_parameters()
        check_names(parameters, spaces["disc"], "the checkpoint's discriminator does not fit this one")
        for name, parameter in parameters.items():
            copy_into(parameter, spaces["disc"][name])
        load_optimizer_state(self.disc_optimizer, spaces["disc_optimizer"])

    def _disc_parameters(self):
        # By place in the Cell, not Parameter.name: slicing the discriminator's CellList in PyNative renames some
        # of its parameters ("layers.1.weight" becomes "0.weight"), so saved names would not match a fresh one.
        return dict(self.discriminator.parameters_and_names())

    def metadata(self):
        return {"tae_config": self.model.config.to_dict()}


class TAEBatches:
    """Endless TAE training batches (B, 3, T, H, W) in [-1, 1]: every `image_every`-th batch is an image batch (one
    random frame from each of `image_batch_size` clips; 0: videos only), the others are `video_batch_size` clips of
    `frames` frames at `height` x `width`.

    Args:
        csv_path: CSV with a `video` column (docs/data.md); unused with `synthetic`.
        video_folder: folder relative `video` paths are resolved against.
        synthetic: generated moving-shape videos instead of a CSV.
        crop_size: > 0: a random crop_size^2 window of each clip or image, each at its own place (a multiple of 8).
        num_workers: decoding worker processes of the CSV loader.
        seed: of the batch order, the frames and the windows.

    Distinct clips per image batch matter more than pixels per step: with frames of a few clips the TAE learns colour
    one axis at a time (docs/tae.md). `state_dict` holds the position, the generator and the loader's place.
    """

    def __init__(self, csv_path: str = "", video_folder: str = "", synthetic: bool = False, height: int = 256,
                 width: int = 256, frames: int = 32, video_batch_size: int = 1, image_batch_size: int = 4,
                 image_every: int = 4, crop_size: int = 0, num_workers: int = 2, seed: int = 42):
        if crop_size and (crop_size % 8 or crop_size > min(height, width)):
            raise ValueError(f"data.crop_size must be a multiple of 8 no larger than data.height and data.width "
                             f"({height}x{width}), got {crop_size}")
        self.synthetic, self.height, self.width, self.frames = synthetic, height, width, frames
        self.video_batch_size, self.image_batch_size = video_batch_size, image_batch_size
        self.image_every, self.crop_size = image_every, crop_size
        self.rng = np.random.default_rng(seed)
        self.position = 0
        self.loader = None
        if not synthetic:
            if not csv_path:
                raise ValueError("data.csv_path is required unless data.synthetic is true")
            dataset = VideoDataset(csv_path, [Bucket(height, width, frames, video_batch_size)],
                                   video_folder=video_folder)
            self.loader = VideoDataLoader(dataset, seed=seed, num_workers=num_workers, drop_last=True)
            if len(self.loader) == 0:
                raise ValueError(f"{csv_path}: no video long enough for {frames} frames at {height}x{width}")
        self._iter = None

    def videos(self):
        """One batch of clips."""
        if self.loader is None:
            return moving_shapes(self.rng, self.video_batch_size, self.frames, self.height, self.width)
        while True:
            if self._iter is None:
                self._iter = iter(self.loader)
            try:
                return next(self._iter)["video"]
            except StopIteration:
                self._iter = None

    def __iter__(self):
        while True:
            images = self.image_every and self.position % self.image_every == self.image_every - 1
            batch = self._images() if images else self.videos()
            self.position += 1
            yield self._crop(batch) if self.crop_size else batch

    def _crop(self, batch):
        """A random window of each sample, placed independently."""
        size = self.crop_size
        tops = self.rng.integers(0, batch.shape[-2] - size + 1, len(batch))
        lefts = self.rng.integers(0, batch.shape[-1] - size + 1, len(batch))
        return np.stack([clip[..., y:y + size, x:x + size] for clip, y, x in zip(batch, tops, lefts)])

    def _images(self):
        frames = []
        while len(frames) < self.image_batch_size:
            for clip in self.videos()[:self.image_batch_size - len(frames)]:
                t = self.rng.integers(0, clip.shape[1])
                frames.append(clip[:, t:t + 1])
        return np.stack(frames)

    def state_dict(self):
        return {"position": self.position, "rng": self.rng.bit_generator.state,
                "loader": self.loader.state_dict() if self.loader is not None else None}

    def load_state_dict(self, state):
        self.position = int(state["position"])
        self.rng.bit_generator.state = state["rng"]
        if self.loader is not None:
            self.loader.load_state_dict(state["loader"])
            self._iter = None

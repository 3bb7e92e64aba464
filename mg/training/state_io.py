"""What a checkpoint takes from and gives back to the model, the optimizer and the EMA: directly in one process, or
gathered to (and split from) single-process arrays under a parallel layout, so that a checkpoint saved under one
layout loads under any other."""
from mg.io import load_state_dict, state_dict
from mg.parallel import (gather_arrays, gather_optimizer_state, gather_state_dict, load_gathered_optimizer_state,
                         load_gathered_state_dict, local_arrays)
from mg.optim import load_optimizer_state, optimizer_state


class LocalState:
    """One process: it writes the checkpoints."""
    writes = True

    def __init__(self, model, optimizer, ema=None):
        self.model, self.optimizer, self.ema = model, optimizer, ema

    def model_state(self):
        return state_dict(self.model)

    def optimizer_state(self):
        return optimizer_state(self.optimizer)

    def ema_state(self):
        return self.ema.state_dict()

    def load_model(self, tensors):
        load_state_dict(self.model, tensors)

    def load_optimizer(self, tensors):
        load_optimizer_state(self.optimizer, tensors)

    def load_ema(self, tensors, num_updates):
        self.ema.load_state_dict(tensors, num_updates)


class ParallelState(LocalState):
    """A parallelized model with ParallelAdamW: every rank takes part in the gathers, rank 0 writes."""

    def __init__(self, model, optimizer, ema, groups):
        super().__init__(model, optimizer, ema)
        self.writes = groups.rank == 0

    def model_state(self):
        return gather_state_dict(self.model)

    def optimizer_state(self):
        return gather_optimizer_state(self.optimizer)

    def ema_state(self):
        return gather_arrays(self.model, self.ema.state_dict())

    def load_model(self, tensors):
        load_gathered_state_dict(self.model, tensors, self.optimizer)

    def load_optimizer(self, tensors):
        load_gathered_optimizer_state(self.optimizer, tensors)

    def load_ema(self, tensors, num_updates):
        self.ema.load_state_dict(local_arrays(self.model, tensors), num_updates)

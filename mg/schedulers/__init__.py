"""Flow matching: training path and loss, validation loss, Euler sampling with CFG."""
from mg.schedulers.flow_matching import T_SAMPLERS, FlowMatching
from mg.schedulers.sampling import SCHEDULES, EulerSampler, linear_quadratic_timesteps, linear_timesteps

__all__ = ["FlowMatching", "EulerSampler", "SCHEDULES", "T_SAMPLERS", "linear_quadratic_timesteps",
           "linear_timesteps"]

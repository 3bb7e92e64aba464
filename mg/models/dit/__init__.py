"""The Movie Gen diffusion transformer."""
from mg.models.dit.config import FLAVORS, DiTConfig, dit_config, parameter_count
from mg.models.dit.embeddings import expand_position_tables
from mg.models.dit.io import load_dit, load_dit_weights, save_dit
from mg.models.dit.model import MovieGenDiT

__all__ = ["DiTConfig", "FLAVORS", "MovieGenDiT", "dit_config", "expand_position_tables", "load_dit",
           "load_dit_weights", "parameter_count", "save_dit"]

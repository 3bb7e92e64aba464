"""Writing a cache file under a temporary name and renaming it, so an interrupted tool never leaves a partial file
that a resumed run would skip as done."""
import os

from safetensors.numpy import save_file


def save_safetensors_atomic(path: str, tensors: dict, metadata: dict):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    save_file(tensors, temporary, metadata=metadata)
    os.replace(temporary, path)

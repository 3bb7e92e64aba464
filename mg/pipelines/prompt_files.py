"""Prompts from a file: .txt (one prompt per line; blank lines and lines starting with '#' skipped) or .csv (a
`caption` or `prompt` column)."""
from pathlib import Path

import pandas as pd

PROMPT_COLUMNS = ("caption", "prompt")


def read_prompts(path) -> list:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    if path.suffix.lower() == ".csv":
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        column = next((c for c in PROMPT_COLUMNS if c in table.columns), None)
        if column is None:
            raise ValueError(f"{path}: needs a column named one of {PROMPT_COLUMNS}; found {list(table.columns)}")
        prompts = [p for p in table[column].tolist() if p.strip()]
    elif path.suffix.lower() == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        raise ValueError(f"{path}: prompts file must end in .txt or .csv")
    if not prompts:
        raise ValueError(f"{path}: contains no prompts")
    return prompts

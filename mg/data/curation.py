"""Curation for quality tuning: score the clips of a CSV, keep the rows whose scores pass minimum / maximum rules, and
optionally only the best N by one column; mix curated CSVs in set proportions (tools/curate_videos.py).

Movie Gen's last training stage, like Emu's quality-tuning, fine-tunes on a small set of very high quality clips:
a few thousand chosen ones lift visual quality more than many ordinary ones. Choosing them is scoring, then rules.

Scores come from two places, and the rules work on any numeric column of either:
- a scorer: SCORERS maps a name to the columns it adds and a function from one clip's uint8 (T, H, W, 3) frames to
  {column: float}. "toy" reads the toy world's flaws from its pixels (toy_scores). A real-data scorer (an aesthetic
  predictor on a few frames, optical-flow motion) is registered in a module of its own,

      from mg.data.curation import register_scorer

      @register_scorer("aesthetic", columns=("aesthetic",))
      def aesthetic(frames):
          return {"aesthetic": my_predictor(frames[len(frames) // 2])}

  and named with `--scorer_module my_scorers --scorer aesthetic`;
- precomputed columns of the CSV (say `aesthetic`, `motion` from a separate scoring job), filtered with no scorer.
"""
import logging
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

from mg.data.table import FILE_COLUMNS
from mg.data.toy_quality import edge_sharpness
from mg.data.toy_world import centroids, shape_masks
from mg.data.video_io import DecodeError, probe, read_frames
from mg.io import atomic_path

_logger = logging.getLogger(__name__)

NO_SCORER = "none"                         # filter the CSV's own columns only
# A frame shows the whole shape when its mask keeps off the border and has at least this share of the clip's largest
# mask: a shape half out of frame is cut at the border, one that breaks up or fades loses area.
VISIBLE_AREA = 0.75


@dataclass(frozen=True)
class Scorer:
    """The score columns a scorer adds, and its function: uint8 (T, H, W, 3) frames -> {column: float}."""
    columns: tuple
    score: Callable[[np.ndarray], dict]


SCORERS: dict = {}


def register_scorer(name, columns):
    """Decorator adding a scoring function to SCORERS as `name`, declaring the `columns` it returns (so rules on them
    are checked before any clip is read, and a clip that cannot be read gets NaN in each)."""
    def add(function):
        if name in SCORERS or name == NO_SCORER:
            raise ValueError(f"a scorer named {name!r} exists already; choose another name")
        SCORERS[name] = Scorer(tuple(columns), function)
        return function
    return add


def get_scorer(name) -> Optional[Scorer]:
    """The registered scorer `name` (None for NO_SCORER); an unknown name raises a ValueError listing the known."""
    if name == NO_SCORER:
        return None
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; the scorers are {[NO_SCORER, *SCORERS]}")
    return SCORERS[name]


# ---- the toy world's scorer --------------------------------------------------------------------------------------
def centred(masks):
    """1 - the distance of the shape's mean centroid over the clip from the frame's centre, in half frame diagonals:
    1 when the path is centred, 0 at a corner (NaN when no frame shows a shape)."""
    track = centroids(masks)
    if np.isnan(track[:, 0]).all():
        return float("nan")
    height, width = masks.shape[1:]
    offset = np.nanmean(track, axis=0) - np.array([(width - 1) / 2, (height - 1) / 2])
    return float(1 - np.linalg.norm(offset) / (0.5 * np.hypot(width, height)))


def visible(masks):
    """Share of the frames that show the whole shape: its mask clear of the frame's border and at least VISIBLE_AREA of
    the clip's largest (1 = whole in every frame; 0 when no frame shows a shape)."""
    areas = masks.sum(axis=(1, 2))
    border = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    whole = ~border & (areas > 0) & (areas >= VISIBLE_AREA * areas.max())
    return float(whole.mean())


@register_scorer("toy", columns=("sharpness", "centred", "visible"))
def toy_scores(frames):
    """The toy world's flaws read from the pixels: `sharpness` (1 / edge width in px, toy_quality.edge_sharpness),
    `centred` and `visible` (above)."""
    masks = shape_masks(frames)
    return {"sharpness": edge_sharpness(frames, masks), "centred": centred(masks), "visible": visible(masks)}


# ---- tables ------------------------------------------------------------------------------------------------------
def read_csv(csv_path):
    """Every column of a training CSV as the text written (so a curated copy keeps them unchanged); needs `video`."""
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"CSV file not found: {csv_path}")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if "video" not in table.columns:
        raise ValueError(f"{csv_path}: no `video` column; found columns {list(table.columns)}")
    return table


def _frame_indices(num_frames, max_frames):
    """All frames, or `max_frames` of them spread evenly over the clip (long real videos need not be read whole)."""
    if max_frames is None or num_frames <= max_frames:
        return np.arange(num_frames)
    return np.unique(np.linspace(0, num_frames - 1, max_frames).round().astype(np.int64))


def score_table(csv_path, video_folder, scorer, max_frames=None):
    """The CSV's rows (every column as written) with the columns of the scorer named `scorer` added (replacing
    columns of the same name); relative video paths resolve against `video_folder`.

    A file that cannot be read gets NaN scores and a warning instead of stopping the run; their `video` values are
    listed in the result's attrs["unreadable"]. max_frames: score at most this many frames per clip, evenly spread.
    """
    table, chosen = read_csv(csv_path), get_scorer(scorer)
    if chosen is None:
        raise ValueError(f"score_table needs a scorer; {NO_SCORER!r} scores nothing")
    scores, unreadable = [], []
    for video in table["video"]:
        path = os.path.join(video_folder, video)
        try:
            frames = read_frames(path, _frame_indices(probe(path).num_frames, max_frames))
        except DecodeError as error:
            _logger.warning("cannot score %s (NaN scores): %s", video, error)
            unreadable.append(video)
            scores.append({})
            continue
        scores.append(chosen.score(frames))
    scored = table.drop(columns=[c for c in chosen.columns if c in table.columns])
    for column in chosen.columns:
        scored[column] = [float(s.get(column, math.nan)) for s in scores]
    scored.attrs["unreadable"] = unreadable
    return scored


def numeric_columns(table):
    """Columns a rule can test: numeric ones, and text ones whose every non-empty value is a number (fps, frames)."""
    names = []
    for name in table.columns:
        column = table[name]
        if pd.api.types.is_numeric_dtype(column):
            names.append(name)
            continue
        filled = column[column.astype(str).str.strip() != ""]
        if len(filled) and pd.to_numeric(filled, errors="coerce").notna().all():
            names.append(name)
    return names


def check_rules(numeric, minimum=None, maximum=None, top=None, by=None):
    """Raise a ValueError for a rule or ranking on a column not in `numeric` (naming it and listing those), a
    threshold that is not a finite number, `top` without `by`, or a negative `top`."""
    for column in [*(minimum or {}), *(maximum or {}), *([by] if by is not None else [])]:
        if column not in numeric:
            raise ValueError(f"{column!r} is not a numeric column to curate by; the numeric columns are "
                             f"{sorted(numeric)}")
    for column, value in {**(minimum or {}), **(maximum or {})}.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"the threshold of {column!r} must be a finite number, got {value!r}")
    if top is not None and by is None:
        raise ValueError("top needs by: the column whose highest values are kept")
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0, got {top}")


def _values(column):
    """A column as floats (NaN where empty or not a number)."""
    return pd.to_numeric(column, errors="coerce")


def curate(table, minimum=None, maximum=None, top=None, by=None):
    """(the rows kept, a report): rows whose column values are >= each `minimum` and <= each `maximum` ({column:
    value}); NaN passes no rule. With `by` the kept rows are ordered by that column, highest first, and with `top`
    only that many with a value there are kept.

    The report: rows_in, rows_out and `dropped`, per rule the input rows that fail it (a row failing two rules counts
    under both) and, for top, the rows that passed the rules but did not make the top.
    """
    check_rules(numeric_columns(table), minimum, maximum, top, by)
    passes = {f"{c} >= {v:g}": (_values(table[c]) >= v).to_numpy() for c, v in (minimum or {}).items()}
    passes.update({f"{c} <= {v:g}": (_values(table[c]) <= v).to_numpy() for c, v in (maximum or {}).items()})
    kept = table[np.logical_and.reduce(list(passes.values()))] if passes else table
    dropped = {rule: int((~ok).sum()) for rule, ok in passes.items()}
    if by is not None:
        values = _values(kept[by]).to_numpy(np.float64)
        order = np.argsort(-values, kind="stable")  # NaN last
        if top is not None:
            order = order[~np.isnan(values[order])][:top]
            dropped[f"top {top} by {by}"] = len(kept) - len(order)
        kept = kept.iloc[order]
    return kept, {"rows_in": len(table), "rows_out": len(kept), "dropped": dropped}


def rebase_paths(table, video_folder, folder):
    """A copy of `table` whose relative file paths (FILE_COLUMNS) resolve from `folder` instead of `video_folder`."""
    moved = table.copy()
    for name in (c for c in FILE_COLUMNS if c in moved.columns):
        moved[name] = [p if not p or os.path.isabs(p) else os.path.relpath(os.path.join(video_folder, p), folder)
                       for p in moved[name]]
    return moved


def mix(tables, weights, seed=0):
    """(rows drawn from `tables` in the proportions `weights`, the rows taken from each): the most rows that keep the
    proportions without repeating a row, each table's share drawn at random (numpy generator `seed`) and kept in
    its order, the tables one after another. Columns missing from a table are left empty."""
    if len(tables) != len(weights) or len(tables) < 2:
        raise ValueError(f"mix needs two or more tables and a weight for each; got {len(tables)} tables and "
                         f"{len(weights)} weights")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0 for w in weights):
        raise ValueError(f"mix weights must be positive numbers, got {list(weights)}")
    unit = min(len(table) / weight for table, weight in zip(tables, weights))
    counts = [int(math.floor(unit * weight + 1e-9)) for weight in weights]
    rng = np.random.default_rng(seed)
    parts = [table.iloc[np.sort(rng.choice(len(table), count, replace=False))]
             for table, count in zip(tables, counts)]
    return pd.concat(parts, ignore_index=True).fillna(""), counts


def write_curated(table, output, video_folder, overwrite=False):
    """Write `table` as a CSV at `output` (atomically; an existing file only with `overwrite`), its relative file paths
    rewritten from `video_folder` to the output's folder so they resolve from there."""
    moved = rebase_paths(table, video_folder, os.path.dirname(os.path.abspath(output)))
    with atomic_path(output, overwrite=overwrite) as path:
        moved.to_csv(path, index=False, float_format="%.6g")

"""Curate a video CSV for quality tuning (Movie Gen's last stage): score every clip, keep those that pass the rules;
mix curated CSVs in set proportions.

    # a toy pool of mixed quality (clean, blurred, off-centre, partly out of frame; the `quality` column says which)
    python tools/curate_videos.py pool --output_folder runs/toy/pool --per_combo 8 --seed 1
    # score with the toy scorer and keep the clips that pass
    python tools/curate_videos.py select --csv runs/toy/pool/pool.csv --scorer toy \
        --min "{sharpness: 0.5, centred: 0.74, visible: 1.0}" --output runs/toy/pool/curated.csv \
        [--top 96 --by sharpness] [--overwrite true]
    # real data: filter precomputed numeric columns (or register a scorer: mg/data/curation.py)
    python tools/curate_videos.py select --csv scored.csv --scorer none --min "{aesthetic: 5.5}" \
        --max "{motion: 40}" --output curated.csv
    # a fine-tuning mix in set proportions (personalization's SFT: paired : cross-paired 1:1)
    python tools/curate_videos.py mix --csvs "[paired.csv, cross.csv]" --weights "[1, 1]" --output sft.csv

select writes the kept rows with all their columns plus the scorer's, relative video paths rewritten to resolve from
the output's folder, and prints a report (rows in and out, rows each rule drops, files that could not be read; those
get NaN scores, which pass no rule). Scoring the rows without rules (--output scored.csv) keeps them all with their
scores, for choosing thresholds.

Suggested toy thresholds: sharpness >= 0.5, centred >= 0.74, visible >= 1.0. Measured on a pool of 4 clips per
training combination (`pool --per_combo 4 --seed 1`: 45 clean, 34 blurred, 50 off-centre, 47 cut), median (min-max):

    kind        sharpness          centred            visible
    clean       0.80 (0.60-1.08)   0.86 (0.765-0.97)  1
    blurred     0.23 (0.19-0.35)   0.87 (0.76-0.96)   1
    off-centre  0.84 (0.59-1.09)   0.60 (0.52-0.72)   1
    cut         0.68 (0.50-1.00)   0.52 (0.40-0.62)   0.29 (0-0.71)

Over 1200 uncompressed renders of each, centred spans 0.742-1.00 for clean clips and 0.45-0.731 for off-centre
ones, so 0.74 is the tightest of the three cuts. These thresholds keep all 45 clean clips and nothing else; the
stricter `--min "{sharpness: 0.6, centred: 0.8, visible: 1.0}"` keeps 42 of them.
"""
import importlib
import json
import logging
import os
from typing import Dict, List, Optional

import mg  # noqa: F401  (quiet logging before mindspore loads)
from jsonargparse import ArgumentParser

from mg.data.curation import (NO_SCORER, check_rules, curate, get_scorer, mix, numeric_columns, read_csv,
                              rebase_paths, score_table, write_curated)
from mg.data.toy_pool import write_toy_pool

_logger = logging.getLogger("curate_videos")


def build_parser():
    pool = ArgumentParser(description="write a toy pool of mixed quality (videos/*.mp4, pool.csv)")
    pool.add_function_arguments(write_toy_pool)
    select = ArgumentParser(description="score a CSV's clips and write the rows that pass the rules")
    select.add_argument("--csv", type=str, required=True, help="the CSV to curate (columns video, caption, ...)")
    select.add_argument("--video_folder", type=Optional[str], default=None,
                        help="folder the CSV's relative video paths start from (default: the CSV's folder)")
    select.add_argument("--scorer", type=str, default="toy", help="a registered scorer, or none to filter only")
    select.add_argument("--scorer_module", type=Optional[str], default=None,
                        help="a module to import first, whose register_scorer calls add scorers")
    select.add_argument("--max_frames", type=Optional[int], default=None,
                        help="score at most this many frames per clip, spread evenly (default: all)")
    select.add_argument("--min", type=Dict[str, float], default={}, help="{column: lowest value kept}")
    select.add_argument("--max", type=Dict[str, float], default={}, help="{column: highest value kept}")
    select.add_argument("--top", type=Optional[int], default=None, help="keep only this many, the highest --by")
    select.add_argument("--by", type=Optional[str], default=None, help="column the kept rows are ordered by")
    select.add_argument("--output", type=str, required=True, help="the curated CSV to write")
    select.add_argument("--overwrite", type=bool, default=False, help="replace an existing output")
    mixing = ArgumentParser(description="draw rows from several CSVs in set proportions, repeating none")
    mixing.add_argument("--csvs", type=List[str], required=True,
                        help="the CSVs to mix; relative paths in each resolve from its own folder")
    mixing.add_argument("--weights", type=Optional[List[float]], default=None,
                        help="a proportion per CSV (default: equal)")
    mixing.add_argument("--seed", type=int, default=0, help="seed of the rows drawn from each CSV")
    mixing.add_argument("--output", type=str, required=True, help="the mixed CSV to write")
    mixing.add_argument("--overwrite", type=bool, default=False, help="replace an existing output")
    parser = ArgumentParser(description=__doc__.split("\n")[0], prog="curate_videos.py")
    commands = parser.add_subcommands()
    commands.add_subcommand("pool", pool)
    commands.add_subcommand("select", select)
    commands.add_subcommand("mix", mixing)
    return parser


def _check_output(cfg):
    if os.path.exists(cfg.output) and not cfg.overwrite:
        raise FileExistsError(f"{cfg.output} exists; pass --overwrite true to replace it")


def _check_select(cfg):
    """Every error found before any clip is read: the CSV, the scorer, the rules, the output."""
    if cfg.scorer_module:
        importlib.import_module(cfg.scorer_module)
    scorer = get_scorer(cfg.scorer)
    numeric = set(numeric_columns(read_csv(cfg.csv))) | set(scorer.columns if scorer else ())
    check_rules(numeric, cfg.min, cfg.max, cfg.top, cfg.by)
    _check_output(cfg)


def select(cfg):
    """Score (unless --scorer none), curate and write; returns the report."""
    video_folder = os.path.dirname(cfg.csv) if cfg.video_folder is None else cfg.video_folder
    if cfg.scorer == NO_SCORER:
        table = read_csv(cfg.csv)
    else:
        table = score_table(cfg.csv, video_folder, cfg.scorer, cfg.max_frames)
    kept, report = curate(table, cfg.min, cfg.max, cfg.top, cfg.by)
    report["unreadable"] = table.attrs.get("unreadable", [])
    write_curated(kept, cfg.output, video_folder, cfg.overwrite)
    return report


def mix_csvs(cfg):
    """Mix the CSVs (checked first: every file, the weights, the output) and write the mix; returns the report."""
    weights = cfg.weights if cfg.weights is not None else [1.0] * len(cfg.csvs)
    tables = [read_csv(csv) for csv in cfg.csvs]
    _check_output(cfg)
    folder = os.path.dirname(os.path.abspath(cfg.output))
    mixed, counts = mix([rebase_paths(table, os.path.dirname(csv), folder) for csv, table in zip(cfg.csvs, tables)],
                        weights, cfg.seed)
    write_curated(mixed, cfg.output, folder, cfg.overwrite)
    return {"rows_in": {csv: len(table) for csv, table in zip(cfg.csvs, tables)},
            "rows_out": dict(zip(cfg.csvs, counts))}


def main(argv=None):
    parser = build_parser()
    cfg = parser.parse_args(argv)
    command = cfg.subcommand
    cfg = cfg[command]
    try:
        if command == "pool":
            counts = write_toy_pool(**cfg.as_dict())
            _logger.info("wrote %s clips into %s", counts, cfg.output_folder)
            return counts
        if command == "mix":
            report = mix_csvs(cfg)
            print(json.dumps(report, indent=2))
            _logger.info("wrote %d rows to %s", sum(report["rows_out"].values()), cfg.output)
            return report
        _check_select(cfg)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as error:
        parser.error(str(error))
    report = select(cfg)
    print(json.dumps(report, indent=2))
    _logger.info("wrote %d of %d rows to %s", report["rows_out"], report["rows_in"], cfg.output)
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    main()

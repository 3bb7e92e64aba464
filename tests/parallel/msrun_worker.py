"""Entry point of the msrun workers launched by tests/parallel: runs one suite of checks and writes
{check name: max abs error} of this rank to <out_dir>/rank_<r>.json (a failure's traceback goes to "__error__")."""
import mg  # noqa: F401  (quiet logging before mindspore loads)

import argparse
import json
import os
import traceback
from pathlib import Path

import mindspore as ms
from mindspore.communication import get_rank, init


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("suite", choices=["two", "four"])
    parser.add_argument("out_dir")
    args = parser.parse_args()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    init()
    if os.environ.get("MS_ROLE") == "MS_SCHED":  # msrun runs this script as its scheduler too
        return
    results = {}
    try:
        if args.suite == "two":
            from suite_two import run
        else:
            from suite_four import run
        run(results, args.out_dir)
    except Exception:  # report, then fail fast so the other ranks do not wait on collectives forever
        results["__error__"] = traceback.format_exc()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.out_dir) / f"rank_{get_rank()}.json").write_text(json.dumps(results, indent=1))
    if "__error__" in results:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

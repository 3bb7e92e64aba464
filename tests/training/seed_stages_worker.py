"""An msrun worker of tests/training/test_seed_scripts.py: the seed's three stage scripts' options, stage 2 from
stage 1's checkpoint and stage 3 from stage 2's, in one launch (each launch costs ~15 s of start-up). Writes
{stage: final step} or a traceback to <out>/rank_<r>.json; stage outputs go to <out>/stage<n>."""
import mg  # noqa: F401  (quiet logging before mindspore loads)

import json
import os
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import train  # noqa: E402
from training.seed_stages import seed_stage_options  # noqa: E402


def main(data, out):
    from mindspore.communication import get_rank, init
    init()
    if os.environ.get("MS_ROLE") == "MS_SCHED":  # msrun runs the script as its scheduler too: init() served it
        return
    os.chdir(ROOT)  # the seed's scripts name the configs relative to the repository
    result, previous = {}, None
    try:
        for stage in (1, 2, 3):
            output = f"{out}/stage{stage}"
            result[f"stage{stage}"] = train.main(seed_stage_options(stage, data, output, previous))
            previous = output
    except BaseException:  # report, then fail fast so the other ranks do not wait on collectives forever
        result["__error__"] = traceback.format_exc()
    Path(out, f"rank_{get_rank()}.json").write_text(json.dumps(result))
    if "__error__" in result:
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

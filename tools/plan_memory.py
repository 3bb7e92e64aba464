"""The memory plan of a training run before it is launched: bytes per device of weights, gradients, optimizer state,
accumulation buffers, weight copies and activations of the bucket that needs the most (mg/parallel/memory.py).

    python tools/plan_memory.py --config configs/train/stage2_t2iv_256px.yaml --config configs/model/dit_5B.yaml \
        --processes 64 --parallel.tp 4 --parallel.sp true --train.settings.zero_stage 3

It reads the same options as train.py (any train.py option may be given; data paths need not exist: the plan assumes
the seed's text lengths unless --text_encoders says otherwise) plus `--processes`, the msrun worker count (parallel.dp
defaults to what tp x cp leave of it) and `--kernels` (fused: Ascend, the default; plain: CPU). It prints the plan
and, with --env.max_device_memory, whether it fits. `--fit_table true` (alone) prints the table of docs/training.md instead:
for every flavor and stage, the fewest 64 GB Ascend 910B cards and the cheapest layout whose plan fits;
`--state_table true` (alone) the per-rank memory of 5B and 30B before and after sharded state (docs/parallel.md).
"""
import mg  # noqa: F401  (quiet MindSpore logging before it is imported)

import re
import sys
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train.py's parser and plan, from the repository root

import train  # noqa: E402
from mg.models.dit import parameter_count  # noqa: E402
from mg.parallel.memory import GIB, Layout  # noqa: E402

DEVICE = "59GB"  # what the seed's scripts give MindSpore of a 64 GB Ascend 910B (env.max_device_memory)
STAGES = ("stage1_t2i_256px", "stage2_t2iv_256px", "stage3_t2iv_768px", "stage4_sft_768px")
CARDS = (8, 16, 32, 64, 128, 256)


def candidate_layouts(cards, flavor):
    """(tp, cp, zero_stage, recompute_every) for `cards` processes, cheapest first: less tensor and context
    parallelism (their collectives run every layer), ZeRO-2 before ZeRO-3 (which gathers weights every step), less
    recompute (a recomputed block costs a forward again). From 5B on, a rank must never hold the whole model: only
    layouts that shard the weights (ZeRO-3 or TP)."""
    for tp in (1, 2, 4, 8):  # within a node of 8
        for cp in (1, 2, 4, 8):
            if cards % (tp * cp):
                continue
            for zero in (2, 3):
                if flavor in WHOLE_MODEL_TOO_LARGE and zero < 3 and tp == 1:
                    continue
                for every in (0, 2, 1):
                    yield tp, cp, zero, every


WHOLE_MODEL_TOO_LARGE = ("5B", "30B")


def build_parser():
    parser = train.build_parser()
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--processes", type=int, default=8, help="the msrun worker count of the run")
    parser.add_argument("--kernels", type=Literal["fused", "plain"], default="fused",
                        help="fused: Ascend's kernels; plain: the CPU path")
    parser.add_argument("--fit_table", type=bool, default=False,
                        help="alone: print the shipped layouts' plans against a 64 GB device (docs/training.md)")
    parser.add_argument("--state_table", type=bool, default=False,
                        help="alone: print 5B's and 30B's per-rank memory under the shipped layouts before and "
                             "after sharded state (docs/parallel.md)")
    parser.set_defaults({"tae.path": "unused"})  # the plan needs no TAE
    return parser


def plan_for(argv):
    """(plan, largest bucket, layout, env.max_device_memory, options) of train.py options plus this tool's."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    built = parser.instantiate(cfg)
    layout = built.parallel
    dp = layout.dp or cfg.processes // (layout.tp * layout.cp)
    plan_layout = Layout(dp, layout.tp, layout.cp, layout.sp, built.train.settings.zero_stage)
    built.env.device_target = "Ascend" if cfg.kernels == "fused" else "CPU"
    plan, bucket = train.memory_plan(cfg, built, plan_layout)
    return plan, bucket, plan_layout, built.env.max_device_memory, cfg


def stage_options(flavor, stage, cards, tp, cp, zero, every=None):
    """Options of a stage config at a layout (`every` None: the config's own recompute)."""
    root = Path(__file__).resolve().parents[1] / "configs" / "train"
    return ["--config", str(root / f"{stage}.yaml"), "--model.flavor", flavor, "--dataset.csv_path", "unused",
            "--processes", str(cards), "--parallel.tp", str(tp), "--parallel.cp", str(cp),
            "--parallel.sp", str(tp > 1).lower(), "--train.settings.zero_stage", str(zero),
            *([] if every is None else ["--model.recompute_every", str(every)])]


def smallest_fit(flavor, stage):
    """(cards, tp, cp, zero, every, plan) of the fewest cards and cheapest layout whose plan fits DEVICE."""
    limit = train.parse_memory_size(DEVICE)
    for cards in CARDS:
        for tp, cp, zero, every in candidate_layouts(cards, flavor):
            plan = plan_for(stage_options(flavor, stage, cards, tp, cp, zero, every))[0]
            if plan.device <= limit:
                return cards, tp, cp, zero, every, plan
    raise SystemExit(f"{flavor} {stage}: nothing up to {CARDS[-1]} cards fits {DEVICE}")


def fit_table():
    """The fewest Ascend 910B cards (64 GB, 59 GB given to MindSpore as in the seed's scripts) that fit each flavor
    and stage with the seed's batch sizes and accumulation, and how the seed's own setup (8 cards, ZeRO-2, data
    parallel) plans."""
    print("| model | stage | the seed's setup: 8 cards, dp8, ZeRO-2 | fewest cards | layout | recompute | planned GiB |")
    print("|---|---|---|---|---|---|---|")
    for flavor in ("1B", "5B", "30B"):
        for stage in STAGES:
            seed = plan_for(stage_options(flavor, stage, 8, 1, 1, 2))[0]
            cards, tp, cp, zero, every, plan = smallest_fit(flavor, stage)
            layout = " x ".join(f"{name}{size}" for name, size in
                                (("dp", cards // (tp * cp)), ("tp", tp), ("cp", cp)) if size > 1 or name == "dp")
            layout += (" + SP" if tp > 1 else "") + f", ZeRO-{zero}"
            rc = f"every {every}" if every else "none"
            print(f"| {flavor} | {stage} | {seed.device / GIB:.1f} GiB | {cards} | {layout} | {rc} | "
                  f"{plan.device / GIB:.1f} |")


def shipped_layouts():
    """{(flavor, stage number): (cards, tp, cp, zero, every)} as scripts/stage_common.sh launches them."""
    script = (Path(__file__).resolve().parents[1] / "scripts" / "stage_common.sh").read_text()
    layouts = {}
    for cases, fit in re.findall(r"^\s*([0-9B/| ]+)\) fit=\"([0-9 ]+)\"", script, re.MULTILINE):
        for case in cases.split("|"):
            flavor, stage = case.strip().split("/")
            layouts[(flavor, int(stage))] = tuple(int(v) for v in fit.split())
    return layouts


def state_table():
    """Per-rank memory of 5B and 30B under the shipped layouts, before sharded state (the whole model built on every
    rank, ZeRO-2 accumulating whole gradients, the EMA a host copy, checkpoints gathered whole on every rank) and
    now (this plan)."""
    print("| model | stage | layout | device GiB before -> now | host GiB building before -> now | "
          "host GiB saving before -> now |")
    print("|---|---|---|---|---|---|")
    shipped = shipped_layouts()
    for flavor in ("5B", "30B"):
        for number, stage in enumerate(STAGES, 1):
            cards, tp, cp, zero, every = shipped[(flavor, number)]
            argv = stage_options(flavor, stage, cards, tp, cp, zero, every)
            plan, _, layout, _, cfg = plan_for(argv)
            whole = 4 * parameter_count(train.model_config(cfg))
            before_device = plan.device - plan.ema - plan.accumulation + (plan.gradients if plan.accumulation else 0)
            saved_parts = 3 + bool(plan.ema)
            name = f"dp{layout.dp}" + (f" x tp{tp} + SP" if tp > 1 else "") + f", ZeRO-{zero}"
            print(f"| {flavor} | {stage} | {cards} cards, {name} | {before_device / GIB:.1f} -> {plan.device / GIB:.1f} "
                  f"| {whole / GIB:.1f} -> {plan.construction / GIB:.1f} "
                  f"| {saved_parts * whole / GIB:.1f} -> {plan.checkpoint / GIB:.1f} |")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["--fit_table", "true"]:  # the table reads the shipped configs itself: no run's options
        return fit_table()
    if argv[:2] == ["--state_table", "true"]:
        return state_table()
    plan, bucket, layout, limit, cfg = plan_for(argv)
    print(f"layout {layout}, {cfg.kernels} kernels, largest bucket {bucket}")
    print("\n".join(plan.lines()))
    if cfg.pixel_loss.weight > 0:
        print(train.PIXEL_LOSS_UNPLANNED)
    if limit:
        fits = plan.device <= train.parse_memory_size(limit)
        print(f"{'fits' if fits else 'does NOT fit'} env.max_device_memory = {limit}")
    return plan


if __name__ == "__main__":
    main()

"""The memory plan of a training run before it is launched: bytes per device of weights, gradients, optimizer state,
accumulation buffers, weight copies and activations of the bucket that needs the most (mg/parallel/memory.py).

    python tools/plan_memory.py --config configs/train/stage2_t2iv_256px.yaml --config configs/model/dit_5B.yaml \
        --processes 64 --parallel.tp 4 --parallel.sp true --train.settings.zero_stage 3

It reads the same options as train.py (any train.py option may be given; data paths need not exist: the plan assumes
the seed's text lengths unless --text_encoders says otherwise) plus `--processes`, the msrun worker count (parallel.dp
defaults to what tp x cp leave of it) and `--kernels` (fused: Ascend, the default; plain: CPU). It prints the plan
and, with --env.max_device_memory, whether it fits. `--fit_table true` prints the table of docs/training.md instead:
the shipped layouts of every flavor and stage against a 64 GB Ascend 910B.
"""
import mg  # noqa: F401  (quiet MindSpore logging before it is imported)

import sys
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train.py's parser and plan, from the repository root

import train  # noqa: E402
from mg.parallel.memory import GIB, Layout  # noqa: E402

# The shipped layouts (scripts/stage*.sh with MODEL=...): flavor, stage config -> (processes, tp, cp, sp, zero,
# recompute_every). See docs/training.md, "Configs that fit".
SHIPPED = {
    ("1B", "stage1_t2i_256px"): (8, 1, 1, False, 2, 1),
    ("1B", "stage2_t2iv_256px"): (8, 1, 1, False, 2, 1),
    ("1B", "stage3_t2iv_768px"): (8, 2, 1, True, 2, 1),
    ("5B", "stage1_t2i_256px"): (8, 1, 1, False, 3, 1),
    ("5B", "stage2_t2iv_256px"): (8, 2, 1, True, 3, 1),
    ("5B", "stage3_t2iv_768px"): (16, 8, 1, True, 3, 1),
    ("30B", "stage1_t2i_256px"): (32, 4, 1, True, 3, 1),
    ("30B", "stage2_t2iv_256px"): (64, 8, 1, True, 3, 1),
    ("30B", "stage3_t2iv_768px"): (128, 8, 4, True, 3, 1),
}
DEVICE = "64GB"  # an Ascend 910B's memory


def build_parser():
    parser = train.build_parser()
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--processes", type=int, default=8, help="the msrun worker count of the run")
    parser.add_argument("--kernels", type=Literal["fused", "plain"], default="fused",
                        help="fused: Ascend's kernels; plain: the CPU path")
    parser.add_argument("--fit_table", type=bool, default=False,
                        help="print the shipped layouts' plans against a 64 GB device (docs/training.md)")
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


def fit_table():
    root = Path(__file__).resolve().parents[1] / "configs"
    print("| model | stage | cards | layout | recompute | planned GiB/device | fits 64 GB |")
    print("|---|---|---|---|---|---|---|")
    for (flavor, stage), (cards, tp, cp, sp, zero, every) in SHIPPED.items():
        argv = ["--config", str(root / "train" / f"{stage}.yaml"), "--model.flavor", flavor,
                "--processes", str(cards), "--parallel.tp", str(tp), "--parallel.cp", str(cp),
                "--parallel.sp", str(sp).lower(), "--train.settings.zero_stage", str(zero),
                "--model.recompute_every", str(every)]
        plan, _, layout, _, _ = plan_for(argv)
        text = f"dp{layout.dp} x tp{tp}" + (f" x cp{cp}" if cp > 1 else "") + (" + SP" if sp else "") + f", ZeRO-{zero}"
        fits = "yes" if plan.device <= train.parse_memory_size(DEVICE) else "no"
        print(f"| {flavor} | {stage} | {cards} | {text} | every {every} | {plan.device / GIB:.1f} | {fits} |")


def main(argv=None):
    plan, bucket, layout, limit, cfg = plan_for(argv)
    if cfg.fit_table:
        return fit_table()
    print(f"layout {layout}, {cfg.kernels} kernels, largest bucket {bucket}")
    print("\n".join(plan.lines()))
    if limit:
        fits = plan.device <= train.parse_memory_size(limit)
        print(f"{'fits' if fits else 'does NOT fit'} env.max_device_memory = {limit}")
    return plan


if __name__ == "__main__":
    main()

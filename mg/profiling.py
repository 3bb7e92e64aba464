"""Kernel time per op type of one call, from MindSpore's profiler (the benchmarks' "where does the time go")."""
import csv
import tempfile
from pathlib import Path


def op_type_times(fn):
    """Run `fn()` once under `mindspore.Profiler`; return [(op type, calls, total kernel ms)], largest first.

    Kernels of a jitted graph can overlap on several cores, so the totals are summed kernel time, not wall time."""
    import mindspore as ms
    with tempfile.TemporaryDirectory() as profile_dir:
        profiler = ms.Profiler(output_path=profile_dir)
        fn()
        profiler.analyse()
        table = next(Path(profile_dir).rglob("cpu_op_type_info_*.csv"))
        with open(table, newline="") as f:
            rows = [(r["op_type"], int(r["type_occurrences"]), float(r["total_compute_time"]))
                    for r in csv.DictReader(f)]
    return sorted(rows, key=lambda r: -r[2])


def format_op_times(rows, top, indent="      "):
    """Lines '<op type> <calls> calls <ms> ms <share>% of kernel time' for the `top` rows."""
    total = sum(millis for _, _, millis in rows) or 1.0
    return [f"{indent}{op_type:<16} {calls:>5} calls {millis:>8.1f} ms {100 * millis / total:>5.1f}% of kernel time"
            for op_type, calls, millis in rows[:top]]

"""Measurements for the benchmarks and the memory plan: kernel time per op type of one call (MindSpore's profiler),
and the peak resident-memory growth of one call."""
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


def peak_memory_growth(fn, interval=0.002):
    """(result of `fn()`, how far this process's resident memory rose above its level at the call while `fn` ran,
    in bytes), sampled every `interval` seconds by a thread (a step's peak lasts far longer than that)."""
    import threading

    import psutil
    process = psutil.Process()
    start = process.memory_info().rss
    peak = [start]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(interval)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    return result, max(peak[0], process.memory_info().rss) - start

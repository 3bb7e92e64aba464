"""Run one benchmark case in a fresh process (spawn), so that its peak RSS and its graph compiles are its own."""
import multiprocessing as mp
from queue import Empty


def run_isolated(target, args, label):
    """Run `target(*args, queue)` in a spawned process and return what it puts on `queue`. If the process dies
    without a result (its traceback is printed above), exit with an error naming the case `label`."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not proc.is_alive():
                raise SystemExit(f"the case {label} failed (exit code {proc.exitcode})")
    proc.join()
    return result

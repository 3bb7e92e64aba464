"""Training and sampling speed of the transformer on this machine, against its own matrix-multiply peak.

    python tools/benchmark.py --output_dir docs/performance            # the full table (tens of minutes on 2 cores)
    python tools/benchmark.py --models "[toy]" --tokens "[256]" --steps 3 --output_dir /tmp/bench   # a quick look

Every measurement runs in its own process (peak RSS is per process): a training step (forward, backward, AdamW) in
PyNative and in graph mode (ms.jit; the first call, which compiles, is reported separately), each with and without
recompute; the fp32 GEMM throughput measured by MindSpore in the same run, compiled like the step, is the yardstick
(MFU-vs-GEMM = achieved model FLOP/s / GEMM FLOP/s); sampling is timed per denoising step and per 50-step video,
with and without CFG; the toy world's TAE (preset small, base 16) is timed encoding and decoding 64x64 videos,
tiled and untiled.
Writes benchmark.md (tables) and step_time_vs_tokens.png into --output_dir and prints the tables.
"""
import mg  # noqa: F401  (MindSpore's defaults: quiet logging, dispatch on the caller's thread off Ascend)

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
from jsonargparse import CLI

# name -> DiTConfig fields: the shipped toy model, the 4-layer d=256 model that earlier runs called "toy"
# (docs/performance.md), a 4-layer d=512 model (and 16- and 32-layer ones, where activations rather than the process
# make most of the peak memory, for recompute), one block of the 1B flavor
MODELS = {
    "toy": dict(flavor="toy"),
    "d256x4": dict(flavor="tiny", depth=4, dim=256, ffn_dim=704, num_heads=4),
    "d512x4": dict(flavor="tiny", depth=4, dim=512, ffn_dim=1408, num_heads=8),
    "d512x16": dict(flavor="tiny", depth=16, dim=512, ffn_dim=1408, num_heads=8),
    "d512x32": dict(flavor="tiny", depth=32, dim=512, ffn_dim=1408, num_heads=8),
    "1B-block": dict(flavor="1B", depth=1),
    "d512x1": dict(flavor="tiny", depth=1, dim=512, ffn_dim=1408, num_heads=8),
    "d512x1-mate": dict(flavor="tiny", depth=1, dim=512, ffn_dim=1408, num_heads=8, attention="mate"),
}
TEXT_TOKENS, TEXT_WIDTH = 64, 256
PROFILE_TOP = 10  # op types listed per profiled row


def grid_for(tokens, frames=1):
    """A patch grid (frames, h, w) with frames * h * w = tokens, each frame as square as possible."""
    if tokens % frames:
        raise SystemExit(f"--frames {frames} does not divide {tokens} tokens")
    per_frame = tokens // frames
    h = int(np.sqrt(per_frame))
    while per_frame % h:
        h -= 1
    return frames, h, per_frame // h


def build(model_name, tokens, frames=1):
    from mg.models.dit import MovieGenDiT, dit_config
    spec = dict(MODELS[model_name])
    t, h, w = grid_for(tokens, frames)
    config = dit_config(spec.pop("flavor"), **spec, text_encoders={"ul2": TEXT_WIDTH}, max_t=t, max_h=h, max_w=w)
    return MovieGenDiT(config), (1, config.in_channels, t, 2 * h, 2 * w)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- measurements (each runs inside a worker process) -----------------------------------------------------------
def measure_gemm(size=2048, repeats=10):
    """Best-of-`repeats` fp32 GEMM throughput, compiled (the yardstick: the train step runs compiled) and PyNative."""
    import mindspore as ms
    from mindspore import mint
    a, b = (ms.Tensor(np.random.default_rng(i).standard_normal((size, size), dtype=np.float32)) for i in range(2))
    result = {}
    for label, matmul in (("gemm_gflops", ms.jit(mint.matmul)), ("pynative_gemm_gflops", mint.matmul)):
        matmul(a, b).asnumpy()
        best = min(_timed(lambda: matmul(a, b).asnumpy()) for _ in range(repeats))
        result[label] = 2 * size ** 3 / best / 1e9
    return result


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_train(model, tokens, mode, recompute, steps, warmup, frames=1, profile=False):
    import mindspore as ms
    from mg.models.dit.flops import training_flops
    from mg.profiling import op_type_times
    from mg.schedulers import FlowMatching
    from mg.optim import build_adamw
    from mg.training.train_step import FlowMatchingTrainStep
    from mg.backends import apply_recompute
    net, shape = build(model, tokens, frames)
    apply_recompute(net, 1 if recompute else 0, compiled=mode == "graph")
    optimizer = build_adamw(net.trainable_params(), lr=1e-4, weight_decay=0.0)
    step = FlowMatchingTrainStep(net, optimizer, FlowMatching(), jit=mode == "graph")
    rng = np.random.default_rng(0)
    x1, x0 = (ms.Tensor(rng.standard_normal(shape, dtype=np.float32)) for _ in range(2))
    t = ms.Tensor(np.array([0.5], np.float32))
    embs = (ms.Tensor(rng.standard_normal((1, TEXT_TOKENS, TEXT_WIDTH), dtype=np.float32)),)
    masks = (ms.Tensor(np.ones((1, TEXT_TOKENS), np.float32)),)

    def run():
        step(x1, x0, t, embs, masks).asnumpy()

    first = _timed(run)
    for _ in range(warmup):
        run()
    times = [_timed(run) for _ in range(steps)]
    median = statistics.median(times)
    flops = training_flops(net.config, 1, tokens, {"ul2": TEXT_TOKENS})
    rss = peak_rss_mib()
    op_times = op_type_times(run)[:PROFILE_TOP] if profile else []
    return {"op_times": op_times, "first_call_s": first, "step_s": median, "step_min_s": min(times),
            "step_max_s": max(times), "tokens_per_s": tokens / median, "tflop_per_step": flops / 1e12,
            "gflops": flops / median / 1e9, "attention_share": _attention_share(net.config, tokens),
            "peak_rss_mib": rss}


def _attention_share(config, tokens):
    """Fraction of the step's FLOPs in token mixing beyond projections (full attention: scores and weighted sums)."""
    from mg.models.dit.flops import forward_flops, mixing_flops
    return config.depth * mixing_flops(config, tokens) / forward_flops(config, 1, tokens, {"ul2": TEXT_TOKENS})


def measure_sampling(model, steps=50):
    import mindspore as ms
    from mg.models.dit import MovieGenDiT, dit_config
    from mg.schedulers import EulerSampler
    spec = dict(MODELS[model])
    net = MovieGenDiT(dit_config(spec.pop("flavor"), **spec, text_encoders={"ul2": TEXT_WIDTH}, max_t=3, max_h=4,
                                 max_w=4))
    net.set_train(False)
    model_fn = ms.jit(net.construct)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((1, 16, 3, 8, 8), dtype=np.float32)
    text = (ms.mutable((ms.Tensor(rng.standard_normal((1, TEXT_TOKENS, TEXT_WIDTH), dtype=np.float32)),)),
            ms.mutable((ms.Tensor(np.ones((1, TEXT_TOKENS), np.float32)),)))
    result = {}
    for label, guidance in (("no_cfg", 1.0), ("cfg", 7.5)):
        sampler = EulerSampler(steps, guidance_scale=guidance)
        sampler.sample(model_fn, noise, text, text)  # compiles
        seconds = _timed(lambda: sampler.sample(model_fn, noise, text, text).asnumpy())
        result[f"{label}_video_s"], result[f"{label}_step_s"] = seconds, seconds / steps
    return result


def measure_tae(frames, size, tiled):
    """Frames/s of TAE encode and decode (PyNative, as the pipelines run them) for one video."""
    import mindspore as ms
    from mg.models.tae import TemporalAutoencoder, tae_config
    tae = TemporalAutoencoder(tae_config("small", base_channels=16))
    tae.set_train(False)
    video = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, frames, size, size)).astype(np.float32))
    latent = tae.encode(video, tiled=tiled)[0]
    encode_s = _timed(lambda: tae.encode(video, tiled=tiled)[0].asnumpy())
    tae.decode(latent, frames, tiled=tiled).asnumpy()
    decode_s = _timed(lambda: tae.decode(latent, frames, tiled=tiled).asnumpy())
    return {"encode_fps": frames / encode_s, "decode_fps": frames / decode_s, "encode_s": encode_s,
            "decode_s": decode_s, "peak_rss_mib": peak_rss_mib()}


def worker(task):
    kind = task.pop("kind")
    fn = {"gemm": measure_gemm, "train": measure_train, "sampling": measure_sampling, "tae": measure_tae}[kind]
    print("RESULT " + json.dumps(fn(**task)), flush=True)


# ---- the driver ------------------------------------------------------------------------------------------------
def run_worker(task):
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(task)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def main(models: List[str] = ("toy", "d512x4", "1B-block"), tokens: List[int] = (256, 1024, 2048, 4096, 8192),
         modes: List[str] = ("pynative", "graph"), recompute: bool = True, steps: int = 5, warmup: int = 5,
         tae_frames: List[int] = (17, 64), profile: bool = False, sample_model: str = "toy",
         frames: int = 1, output_dir: str = "benchmark"):
    """models: of MODELS (the "-mate" ones use LinGen's MATE for self-attention); tokens: video tokens per sample
    (batch 1, 64 text tokens) on a grid of `frames` patch-grid frames (each as square as possible); warmup: untimed steps after the first call (a compiled step settles after ~5 calls here, the ones
    before ~20% slower); recompute: also measure each mode with recompute of every block; tae_frames: video lengths
    for the TAE rows (64x64, tiled and untiled; empty to skip); profile: one more graph-mode step (no recompute) per
    model and length runs under MindSpore's profiler, and the report lists its kernel time by op type; sample_model:
    the model whose sampling is timed (a 64x64x17 toy-world video; "" to skip)."""
    unknown = sorted(set(models) - set(MODELS) | ({sample_model} - set(MODELS) - {""}))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")
    gemm = run_worker({"kind": "gemm"})
    rows = []
    for model in models:
        for n in tokens:
            for mode, rc in [(mode, rc) for mode in modes for rc in ((False, True) if recompute else (False,))]:
                result = run_worker({"kind": "train", "model": model, "tokens": n, "mode": mode, "recompute": rc,
                                     "steps": steps, "warmup": warmup, "frames": frames,
                                     "profile": profile and mode == "graph" and not rc})
                rows.append({"model": model, "tokens": n, "mode": mode, "recompute": rc, **result})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "op_times"}), flush=True)
    sampling = {"model": sample_model, **run_worker({"kind": "sampling", "model": sample_model})} if sample_model \
        else {"model": "none"}
    tae_rows = [{"frames": n, "tiled": tiled, **run_worker({"kind": "tae", "frames": n, "size": 64, "tiled": tiled})}
                for n in tae_frames for tiled in (False, True)]
    write_report(Path(output_dir), gemm, rows, sampling, tae_rows)


def write_report(out, gemm, rows, sampling, tae_rows):
    from mg.profiling import format_op_times
    out.mkdir(parents=True, exist_ok=True)
    peak = gemm.get("gemm_gflops", float("nan"))
    lines = [f"GEMM (fp32 2048^3, MindSpore, same run, best of 10): {peak:.1f} GFLOP/s compiled (the yardstick), "
             f"{gemm.get('pynative_gemm_gflops', float('nan')):.1f} GFLOP/s PyNative", "",
             "| model | tokens | mode | recompute | first call s | step s (min-max) | tokens/s | TFLOP/step | "
             "GFLOP/s | MFU-vs-GEMM | attention share | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += _table_rows(rows, ("model", "tokens", "mode", "recompute"), lambda r: (
        f"{r['first_call_s']:.1f} | {r['step_s']:.3f} ({r['step_min_s']:.3f}-{r['step_max_s']:.3f}) | "
        f"{r['tokens_per_s']:.0f} | {r['tflop_per_step']:.3f} | {r['gflops']:.1f} | {r['gflops'] / peak:.0%} | "
        f"{r['attention_share']:.0%} | {r['peak_rss_mib']:.0f}"))
    for r in rows:
        if r.get("op_times"):
            lines += ["", f"Kernel time by op type, one graph-mode step of {r['model']} at {r['tokens']} tokens "
                      "(summed over kernels, which overlap on the cores):", "```"]
            lines += format_op_times(r["op_times"], PROFILE_TOP, indent="") + ["```"]
    lines += ["", f"Sampling, model {sampling['model']} (48 tokens), 50 steps, compiled transformer (no TAE decode):", "",
              "| | s/step | s/video |", "|---|---|---|"]
    for label in ("no_cfg", "cfg"):
        if f"{label}_step_s" in sampling:
            lines.append(f"| {label} | {sampling[f'{label}_step_s']:.4f} | {sampling[f'{label}_video_s']:.2f} |")
    if tae_rows:
        lines += ["", "TAE (toy world's: preset small, base 16), one 64x64 video, PyNative:", "",
                  "| frames | tiled | encode frames/s | decode frames/s | encode s | decode s | peak RSS MiB |",
                  "|---|---|---|---|---|---|---|"]
        lines += _table_rows(tae_rows, ("frames", "tiled"), lambda r: (
            f"{r['encode_fps']:.1f} | {r['decode_fps']:.1f} | {r['encode_s']:.2f} | {r['decode_s']:.2f} | "
            f"{r['peak_rss_mib']:.0f}"))
    text = "\n".join(lines) + "\n"
    (out / "benchmark.md").write_text(text)
    print(text)
    plot(out / "step_time_vs_tokens.png", rows)


def _table_rows(results, key_fields, measured):
    """Markdown rows: the key fields, then `measured(result)` or the worker's error."""
    lines = []
    for r in results:
        keys = " | ".join(str(r[k]) for k in key_fields)
        lines.append(f"| {keys} | error: {r['error']} |" if "error" in r else f"| {keys} | {measured(r)} |")
    return lines


def plot(path, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for model in dict.fromkeys(r["model"] for r in rows):
        points = [r for r in rows if r["model"] == model and r["mode"] == "graph" and not r["recompute"]
                  and "error" not in r]
        if points:
            left.plot([r["tokens"] for r in points], [r["step_s"] for r in points], "o-", label=model)
            right.plot([r["tokens"] for r in points], [r["attention_share"] for r in points], "o-", label=model)
    left.set(xscale="log", yscale="log", xlabel="video tokens", ylabel="s / training step (graph mode)")
    right.set(xscale="log", xlabel="video tokens", ylabel="self-attention share of FLOPs")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        CLI(main)

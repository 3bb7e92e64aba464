import sys, resource, time
import numpy as np, mindspore as ms
from mg.models.dit.mate import MATE, to_scan_order
part = sys.argv[1]; T, H, W = 16, 32, 32
m = MATE(512, 8, 1, 64, 64, (8, 2, 2), 0)
x = ms.Tensor(np.random.default_rng(0).standard_normal((1, T, H, W, 512)).astype(np.float32))
w = m.weights()
def loss(x, *w):
    if part == "mate":
        return m.apply(x, *w)[0].sum()
    if part == "mamba":
        return m.mamba.apply(to_scan_order(x, m.order), None, *w[:8]).sum()
    return m.tesa.apply(x.reshape(1, -1, 512), (T, H, W), *w[8:]).sum()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
f = ms.jit(ms.grad(loss, (0,)))
f(x, *w)
t0 = time.perf_counter(); f(x, *w).asnumpy(); t1 = time.perf_counter()
print(part, "peak MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base, "s", t1 - t0)

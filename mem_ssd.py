import sys, resource, time
import numpy as np, mindspore as ms
from mg.backends.ssd import ssd_scan
L = int(sys.argv[1]); H, P, N = 8, 64, 64
rng = np.random.default_rng(0)
x = ms.Tensor(rng.standard_normal((1, L, H, P)).astype(np.float32)); dt = ms.Tensor(rng.uniform(0.01, 0.1, (1, L, H)).astype(np.float32))
a = ms.Tensor(-np.ones(H, np.float32)); b = ms.Tensor(rng.standard_normal((1, L, N)).astype(np.float32)); c = ms.Tensor(rng.standard_normal((1, L, N)).astype(np.float32))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def loss(*t):
    return ssd_scan(*t).sum()
f = ms.jit(ms.grad(loss, (0, 1, 2, 3, 4)))
f(x, dt, a, b, c)
t0 = time.perf_counter(); f(x, dt, a, b, c)[0].asnumpy(); t1 = time.perf_counter()
print(L, "peak MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base, "s", t1 - t0)

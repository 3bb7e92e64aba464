"""mg.profiling reads MindSpore's profiler output: the op types of a jitted call, with their call counts."""
import ast
import subprocess
import sys

SCRIPT = '''
import mg
import mindspore as ms
import numpy as np
from mindspore import mint
from mg.profiling import op_type_times


@ms.jit
def matmuls_then_scale(x):
    return mint.matmul(mint.matmul(x, x), x) * 2


x = ms.Tensor(np.ones((64, 64), np.float32))
matmuls_then_scale(x)
print(op_type_times(lambda: matmuls_then_scale(x).asnumpy()))
'''


def test_op_type_times_counts_the_kernels_of_a_jitted_call(tmp_path):
    script = tmp_path / "profile_matmul.py"  # own process: the profiler is global state
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
    calls = {op_type: count for op_type, count, _ in rows}
    assert calls["MatMul"] == 2 and calls["Mul"] == 1
    assert all(ms >= 0 for _, _, ms in rows)
    assert [ms for _, _, ms in rows] == sorted((ms for _, _, ms in rows), reverse=True)

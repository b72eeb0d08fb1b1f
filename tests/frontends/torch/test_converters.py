"""One test per ATen converter: a tiny module exported, converted, run by the interpreter,
compared with eager PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_torch

pytestmark = requires_torch
torch = pytest.importorskip("torch")
F = torch.nn.functional


class Fn(torch.nn.Module):
    def __init__(self, fn, *params):
        super().__init__()
        self.fn = fn
        self.params = torch.nn.ParameterList([torch.nn.Parameter(p, requires_grad=False) for p in params])

    def forward(self, *xs):
        return self.fn(*xs, *self.params)


def check(fn, *inputs, params=(), rtol=1e-5, atol=1e-5, expect_op=None):
    from compiler import interp
    from frontends.torch import load_torch
    m = Fn(fn, *params)
    g = load_torch(m, inputs)
    with torch.no_grad():
        want = m(*inputs)
    want = want if isinstance(want, (tuple, list)) else (want,)
    got = interp.run(g, *[x.numpy() for x in inputs])
    for w, o in zip(want, got):
        if w.dtype.is_floating_point:
            np.testing.assert_allclose(o, w.numpy(), rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(o, w.numpy())
    if expect_op is not None:
        assert expect_op in g.op_histogram(), g.op_histogram()
    return g


R = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, generator=R)


CASES = {
    "convolution": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, dilation=1), [rand(1, 4, 9, 9)],
                    [rand(6, 4, 3, 3), rand(6)], "nn.conv"),
    "conv_grouped_dilated": (lambda x, w: F.conv2d(x, w, stride=1, padding=2, dilation=2, groups=2),
                             [rand(1, 4, 8, 8)], [rand(6, 2, 3, 3)], "nn.conv"),
    "conv1d": (lambda x, w: F.conv1d(x, w, padding=1), [rand(2, 3, 10)], [rand(5, 3, 3)], "nn.conv"),
    "conv_transpose": (lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1),
                       [rand(1, 4, 5, 5)], [rand(4, 3, 3, 3)], "nn.conv_transpose"),
    "addmm_linear": (lambda x, w, b: F.linear(x, w, b), [rand(3, 8)], [rand(5, 8), rand(5)], "nn.matmul"),
    "bmm": (lambda a, b: torch.bmm(a, b), [rand(2, 3, 4), rand(2, 4, 5)], [], "nn.matmul"),
    "matmul_4d": (lambda a, b: a @ b, [rand(1, 2, 3, 4), rand(1, 2, 4, 5)], [], "nn.matmul"),
    "batch_norm": (lambda x, w, b: F.batch_norm(x, torch.zeros(3) + 0.1, torch.ones(3) * 2, w, b, eps=1e-3),
                   [rand(2, 3, 4, 4)], [rand(3), rand(3)], "nn.batch_norm"),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (8,), w, b), [rand(2, 5, 8)], [rand(8), rand(8)],
                   "nn.layer_norm"),
    "gelu": (lambda x: F.gelu(x), [rand(4, 8) * 3], [], "nn.gelu"),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [rand(4, 8) * 3], [], "nn.gelu"),
    "relu": (lambda x: F.relu(x), [rand(4, 8)], [], "nn.relu"),
    "silu": (lambda x: F.silu(x), [rand(4, 8)], [], "nn.sigmoid"),
    "hardswish": (lambda x: F.hardswish(x), [rand(4, 8) * 4], [], None),
    "hardsigmoid": (lambda x: F.hardsigmoid(x), [rand(4, 8) * 4], [], None),
    "sigmoid_tanh": (lambda x: torch.sigmoid(x) + torch.tanh(x), [rand(4, 8)], [], "nn.tanh"),
    "relu6": (lambda x: F.relu6(x), [rand(4, 8) * 5], [], "nn.clip"),
    "leaky_elu": (lambda x: F.leaky_relu(x, 0.2) + F.elu(x), [rand(4, 8)], [], "nn.leaky_relu"),
    "softmax": (lambda x: torch.softmax(x, dim=1), [rand(3, 7, 2)], [], "nn.softmax"),
    "log_softmax": (lambda x: torch.log_softmax(x, dim=-1), [rand(3, 7)], [], "nn.log_softmax"),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), [rand(1, 2, 9, 9)], [], "nn.max_pool"),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), [rand(1, 2, 9, 9)], [],
                   "nn.avg_pool"),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, 1), [rand(1, 3, 5, 5)], [], "nn.reduce_mean"),
    "mean_sum_amax": (lambda x: x.mean((1, 2)) + x.sum(-1).amax(-1), [rand(2, 3, 4)], [], "nn.reduce_mean"),
    "embedding": (lambda i, w: F.embedding(i, w), [torch.tensor([[1, 0, 3], [2, 2, 1]])], [rand(4, 6)],
                  "nn.gather"),
    "index_select": (lambda x: x.index_select(1, torch.tensor([2, 0])), [rand(3, 4)], [], "nn.gather"),
    "slice_select": (lambda x: x[:, 1:5:2] + x[:, 0:1] * x[:, 3].unsqueeze(1), [rand(2, 6, 3)], [], None),
    "view_permute": (lambda x: x.view(2, 3, 4).permute(2, 0, 1).reshape(4, 6), [rand(6, 4)], [],
                     "nn.transpose"),
    "transpose_expand": (lambda x: x.transpose(0, 1).expand(2, 3, 4) * 1.5, [rand(4, 1)], [], "nn.expand"),
    "squeeze_unsqueeze": (lambda x: x.squeeze(1).unsqueeze(0), [rand(3, 1, 4)], [], "nn.reshape"),
    "cat": (lambda a, b: torch.cat([a, b], dim=1), [rand(2, 3), rand(2, 5)], [], "nn.concat"),
    "split": (lambda x: [t * 2 for t in torch.split(x, 2, dim=1)], [rand(2, 5)], [], "nn.slice"),
    "to_copy": (lambda x: (x * 3).to(torch.int64), [rand(3, 4)], [], "nn.cast"),
    "arith_scalars": (lambda x, y: (x + 2) * y - x / 3 + (1 - x), [rand(3, 4), rand(4)], [], "nn.sub"),
    "pow_sqrt_rsqrt": (lambda x: x.abs().pow(3) + (x.abs() + 1).sqrt() + torch.rsqrt(x.abs() + 1),
                       [rand(3, 4)], [], "nn.sqrt"),
    "exp_log_neg": (lambda x: torch.exp(-x) + torch.log(x.abs() + 1), [rand(3, 4)], [], "nn.exp"),
    "erf": (lambda x: torch.erf(x), [rand(3, 4)], [], "nn.erf"),
    "compare_where": (lambda x, y: torch.where(x > y, x, y * 2) + (x <= 0.5).float() + (x != y).float(),
                      [rand(3, 4), rand(3, 4)], [], "nn.where"),
    "logical": (lambda x: ((x > 0) & (x < 1) | ~(x > -1)).float(), [rand(3, 4)], [], "nn.and"),
    "full_arange": (lambda x: x + torch.arange(4, dtype=torch.float32) + torch.full((4,), 2.0),
                    [rand(3, 4)], [], None),
    "sdpa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [rand(1, 2, 5, 8), rand(1, 2, 5, 8),
                                                                       rand(1, 2, 5, 8)], [], "nn.softmax"),
    "pad": (lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), [rand(1, 2, 3, 3)], [], "nn.pad"),
    "clamp": (lambda x: x.clamp(-0.5, 0.7), [rand(3, 4)], [], "nn.clip"),
    "max_min": (lambda x, y: torch.maximum(x, y) - torch.minimum(x, y), [rand(3, 4), rand(3, 4)], [],
                "nn.max"),
    "argmax_cumsum": (lambda x: x.cumsum(1) + x.argmax(1, keepdim=True), [rand(3, 4)], [], "nn.argmax"),
    "topk": (lambda x: torch.topk(x, 2, dim=1)[0], [rand(3, 5)], [], "nn.topk"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_converter(name):
    fn, inputs, params, op = CASES[name]
    check(fn, *inputs, params=params, expect_op=op)


def test_unsupported_ops_listed_with_location():
    from compiler.diagnostics import Unsupported
    from frontends.torch import load_torch

    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.det(x) + torch.fft.fft(x).real.sum()

    with pytest.raises(Unsupported) as e:
        load_torch(Odd(), (rand(3, 3),))
    msg = str(e.value)
    assert "unsupported ATen ops in Odd" in msg and "test_converters.py:" in msg


def test_wrong_rank_example_input_is_invalid_input():
    from compiler.diagnostics import InvalidInput
    from frontends.torch import load_torch
    conv = torch.nn.Conv2d(3, 4, 3)
    with pytest.raises(InvalidInput, match=r"Conv2d fails on the example inputs \[\(3, 8\)\]"):
        load_torch(conv, (rand(3, 8),))


def test_export_failure_is_a_clear_error():
    from compiler.diagnostics import Unsupported
    from frontends.torch import load_torch

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x[x > 0].sum() if x.sum().item() > 0 else x.mean()

    with pytest.raises(Unsupported, match="torch.export could not capture DataDependent"):
        load_torch(DataDependent(), (rand(4),))


def test_importing_compiler_does_not_import_torch():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, compiler; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_flatten_after_global_pool_batch_gt_1():
    """torch exports this flatten as aten.as_strided at some batch sizes."""
    fn = lambda x: torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # noqa: E731
    check(fn, rand(6, 3, 4, 4))
    check(lambda x: torch.as_strided(x, (2, 3), (1, 2)), rand(6))

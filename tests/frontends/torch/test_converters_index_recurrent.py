"""ATen converters for indexing (gather, index.Tensor, scatter), the extra math and bitwise
ops, and nn.LSTM / nn.GRU / nn.RNN kept whole (aten.lstm.input, ...): each a tiny module,
exported, converted, run by the interpreter and compared with eager PyTorch."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import requires_torch

pytestmark = requires_torch
torch = pytest.importorskip("torch")


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


def check(model, *inputs, expect_op=None):
    from compiler import interp
    from frontends.torch import load_torch
    model = model if isinstance(model, torch.nn.Module) else Fn(model)
    g = load_torch(model, inputs)
    with torch.no_grad():
        want = model(*inputs)
    flat = []
    for w in (want if isinstance(want, (tuple, list)) else (want,)):
        flat.extend(w if isinstance(w, (tuple, list)) else [w])
    got = interp.run(g, *[x.numpy() for x in inputs])
    assert len(got) == len(flat)
    for w, o in zip(flat, got):
        if w.dtype.is_floating_point:
            np.testing.assert_allclose(o, w.numpy(), rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(o, w.numpy())
    if expect_op is not None:
        assert expect_op in g.op_histogram(), g.op_histogram()
    return g


def test_gather():
    idx = torch.tensor([[0, 2, 1], [1, 1, 0]])
    check(lambda x: torch.gather(x, 1, idx), torch.randn(2, 4), expect_op="nn.gather_elements")


def test_gather_runtime_index():
    check(lambda x, i: torch.gather(x, 0, i), torch.randn(3, 4), torch.randint(0, 3, (2, 4)))


@pytest.mark.parametrize("case", ["adjacent", "split", "negative", "one"])
def test_advanced_indexing(case):
    i = torch.tensor([[0], [2]])
    j = torch.tensor([1, -1, 0])
    fns = {"adjacent": lambda x: x[:, i, j], "split": lambda x: x[i, :, j],
           "negative": lambda x: x[j], "one": lambda x: x[:, :, j]}
    check(fns[case], torch.randn(3, 4, 5))


def test_advanced_indexing_runtime_index():
    check(lambda x, i: x[i, 1:], torch.randn(5, 3), torch.tensor([4, -2, 0]))


def test_boolean_mask_indexing_is_unsupported():
    from compiler.diagnostics import Unsupported
    with pytest.raises(Unsupported):          # export turns the mask into nonzero + size checks
        check(lambda x: x[torch.tensor([True, False, True])], torch.randn(3, 2))


@pytest.mark.parametrize("reduce", [None, "add"])
def test_scatter(reduce):
    idx = torch.tensor([[0, 1, 2], [2, 0, 1]])
    src = torch.randn(2, 3)
    if reduce is None:
        fn = lambda x: x.scatter(0, idx, src)
    else:
        fn = lambda x: x.scatter_add(0, idx, src)
    check(fn, torch.randn(3, 3), expect_op="nn.scatter_elements")


def test_math_and_float_tests():
    x = torch.tensor([0.3, -1.5, 2.5, float("nan"), float("inf"), -0.7])
    check(lambda x: (torch.sin(x), torch.cos(x), torch.atan(x), torch.round(x), torch.isnan(x),
                     torch.isinf(x)), x)


def test_bitwise_on_ints_and_bools():
    a, b = torch.randint(-20, 20, (3, 4), dtype=torch.int32), torch.randint(-20, 20, (4,), dtype=torch.int32)
    check(lambda a, b: (a & b, a | b, a ^ b, ~a, (a > 0) & (b > 0), (a > 0) ^ (b > 0)), a, b)


@pytest.mark.parametrize("kind,kw", [
    ("LSTM", {"num_layers": 2, "bidirectional": True}), ("LSTM", {"batch_first": True}),
    ("GRU", {"bidirectional": True}), ("GRU", {"batch_first": True, "bias": False}),
    ("RNN", {"nonlinearity": "relu"}), ("RNN", {"num_layers": 2})], ids=lambda v: str(v))
def test_recurrent_modules(kind, kw):
    torch.manual_seed(0)
    mod = getattr(torch.nn, kind)(4, 6, **kw).eval()
    x = torch.randn(3, 5, 4)
    g = check(mod, x)
    assert f"nn.{kind.lower()}" in g.op_histogram()


def test_lstm_with_initial_state():
    torch.manual_seed(0)
    mod = torch.nn.LSTM(4, 6, bidirectional=True).eval()
    check(lambda x, h, c: mod(x, (h, c)), torch.randn(5, 2, 4), torch.randn(2, 2, 6), torch.randn(2, 2, 6))


def test_lstm_projection_is_unsupported():
    from compiler.diagnostics import Unsupported
    mod = torch.nn.LSTM(4, 6, proj_size=3).eval()
    with pytest.raises(Unsupported, match="proj_size"):
        check(mod, torch.randn(5, 2, 4))

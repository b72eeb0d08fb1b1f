"""PyTorch nn.Module -> Graph: torch.export, decomposition to core ATen, one converter per op.

Parameters and buffers become graph constants; example inputs fix every shape (static).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from compiler.diagnostics import InvalidInput, InvalidModel, SourceLoc, Unsupported
from compiler.ir import Graph, Value
from compiler.types import DType, TensorType
from compiler.verify import verify
from frontends.common import Emitter, Operand

Converter = Callable[["TorchContext", torch.fx.Node, list[Any], dict[str, Any]], Any]
CONVERTERS: dict[str, Converter] = {}


def converts(*names: str) -> Callable[[Converter], Converter]:
    """Register a converter for ATen ops by packet name ("aten.relu") or overload
    ("aten.div.Tensor_mode"); an overload entry wins over its packet's."""
    def deco(fn: Converter) -> Converter:
        for n in names:
            if n in CONVERTERS:
                raise ValueError(f"two converters for {n}")
            CONVERTERS[n] = fn
        return fn
    return deco


def op_names(target: Any) -> tuple[str, str]:
    """(overload name, packet name) of an fx call target, e.g. ("aten.add.Tensor", "aten.add")."""
    full = str(target)
    if hasattr(target, "_schema"):
        packet = f"{target.namespace}.{target._schema.name.split('::')[-1]}"
        return full, packet
    return full, full


def find_converter(target: Any) -> Converter | None:
    full, packet = op_names(target)
    return CONVERTERS.get(full) or CONVERTERS.get(packet)


def torch_to_numpy_dtype(dt: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dt).numpy().dtype


def source_line(node: torch.fx.Node) -> str | None:
    """'file.py:42' of the user code that created the node, from torch.export's stack trace."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    user = [f for f in frames if "/torch/" not in f[0]] or frames
    return f"{user[-1][0]}:{user[-1][1]}" if user else None


class TorchContext(Emitter):
    """State while one ExportedProgram is converted."""

    def __init__(self, graph: Graph, model_name: str):
        super().__init__(graph)
        self.model_name = model_name
        self.node: torch.fx.Node | None = None

    def begin(self, node: torch.fx.Node) -> None:
        self.node = node
        self.node_name = node.name
        where = source_line(node)
        self.loc = SourceLoc(self.model_name, node.name + (f" at {where}" if where else ""),
                             op_names(node.target)[0])

    def unsupported(self, message: str) -> Unsupported:
        return Unsupported(f"{op_names(self.node.target)[0]}: {message}", self.loc)

    # -- meta of the current node ------------------------------------------------
    def out_meta(self, i: int | None = None) -> torch.Tensor:
        val = self.node.meta["val"]
        return val[i] if i is not None else val

    def out_dtype(self) -> np.dtype:
        return torch_to_numpy_dtype(self.out_meta().dtype)

    def out_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.out_meta().shape)

    # -- helpers converters share ----------------------------------------------
    def as_operand(self, x: Any, dtype: np.dtype) -> Operand:
        """A tensor operand, or a Python scalar made a constant of `dtype`."""
        if isinstance(x, (Value, np.ndarray)):
            return x
        return np.asarray(x, dtype=dtype)

    def cast(self, x: Operand, dtype: np.dtype) -> Operand:
        from compiler.ops import elementwise as ew
        if self.np_dtype(x) == dtype:
            return x
        return self.emit(ew.cast, [x], to=DType.from_numpy(dtype))


def _map_arg(a: Any, env: dict[str, Any]) -> Any:
    if isinstance(a, torch.fx.Node):
        return env[a.name]
    if isinstance(a, (list, tuple)):
        return type(a)(_map_arg(x, env) for x in a)
    return a


def _check_supported(ep: Any, model_name: str) -> None:
    missing: dict[str, list[str]] = {}
    for n in ep.graph.nodes:
        if n.op == "call_function" and find_converter(n.target) is None:
            where = source_line(n)
            missing.setdefault(op_names(n.target)[0], []).append(n.name + (f" at {where}" if where else ""))
    if missing:
        parts = [f"{op} (node {locs[0]}" + (f", and {len(locs) - 1} more)" if len(locs) > 1 else ")")
                 for op, locs in sorted(missing.items())]
        raise Unsupported(f"unsupported ATen ops in {model_name}: " + "; ".join(parts))


def _static_shape(t: torch.Tensor, what: str, model_name: str) -> tuple[int, ...]:
    dims = []
    for i, d in enumerate(t.shape):
        if not isinstance(d, int):
            try:
                d = int(d)
            except Exception:  # noqa: BLE001  (a SymInt that cannot be specialized)
                raise InvalidModel(f"{what} has a symbolic dimension {i} ({d}) that cannot be made static",
                                   SourceLoc(model_name),
                                   "export with concrete example inputs and no dynamic_shapes") from None
        dims.append(d)
    return tuple(dims)


def import_exported(ep: Any, model_name: str) -> Graph:
    """Convert a decomposed ExportedProgram."""
    from frontends.torch import (converters_index, converters_math, converters_nn,  # noqa: F401
                                 converters_recurrent, converters_shape)
    _check_supported(ep, model_name)
    g = Graph("main", source=model_name)
    ctx = TorchContext(g, model_name)
    env: dict[str, Any] = {}
    specs = {s.arg.name: s for s in ep.graph_signature.input_specs if hasattr(s.arg, "name")}
    consts = {**ep.state_dict, **getattr(ep, "constants", {})}
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            spec = specs.get(node.name)
            kind = spec.kind.name if spec is not None else "USER_INPUT"
            if kind == "USER_INPUT":
                meta = node.meta["val"]
                if not isinstance(meta, torch.Tensor):
                    raise InvalidInput(f"example input '{node.name}' is a {type(meta).__name__}; "
                                       "only tensors are supported", SourceLoc(model_name))
                shape = _static_shape(meta, f"input '{node.name}'", model_name)
                env[node.name] = g.add_input(node.name, TensorType(shape, DType.from_numpy(
                    torch_to_numpy_dtype(meta.dtype))))
            else:
                env[node.name] = consts[spec.target].detach().cpu().numpy().copy()
        elif node.op == "call_function":
            ctx.begin(node)
            args = _map_arg(list(node.args), env)
            kwargs = {k: _map_arg(v, env) for k, v in node.kwargs.items()}
            env[node.name] = find_converter(node.target)(ctx, node, args, kwargs)
        elif node.op == "output":
            outs = _map_arg(node.args[0], env)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            g.outputs = [ctx.value(o, "out") if not isinstance(o, Value) else o for o in outs]
        else:
            raise Unsupported(f"fx node kind {node.op!r} ({node.name})", SourceLoc(model_name))
    verify(g)
    return g


def load_torch(model: torch.nn.Module, example_inputs: Sequence[Any] | Any) -> Graph:
    """Export `model` on `example_inputs` (tensors; shapes become static) and convert it."""
    if not isinstance(model, torch.nn.Module):
        raise InvalidModel(f"expected a torch.nn.Module, got {type(model).__name__}")
    name = type(model).__name__
    if isinstance(example_inputs, torch.Tensor) or not isinstance(example_inputs, (list, tuple)):
        example_inputs = (example_inputs,)
    args = tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in example_inputs)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise InvalidInput(f"example_inputs for {name} must be tensors, got "
                           f"{[type(a).__name__ for a in args]}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                model(*args)
            except Exception as e:  # noqa: BLE001  (the user's model rejected the inputs)
                raise InvalidInput(f"{name} fails on the example inputs "
                                   f"{[tuple(a.shape) for a in args]}: {type(e).__name__}: "
                                   f"{str(e).strip().splitlines()[0]}",
                                   hint="pass example_inputs with the shapes and dtypes the model expects") \
                    from None
        ep = _export(model, args, name)
    finally:
        model.train(was_training)
    return import_exported(ep, name)


# Ops the IR has as one op: keep them whole instead of decomposing them to core ATen, so the
# graph matches what the ONNX exporter produces (Gemm/MatMul, HardSwish, ...).
KEEP_WHOLE = ("linear", "matmul", "hardswish", "hardsigmoid", "scaled_dot_product_attention", "lstm",
              "gru", "rnn_tanh", "rnn_relu")


def _decomposition_table() -> dict:
    table = torch.export.default_decompositions()
    for name in KEEP_WHOLE:
        packet = getattr(torch.ops.aten, name)
        for overload in packet.overloads():
            table.pop(getattr(packet, overload), None)
    return table


def _export(model: torch.nn.Module, args: tuple, name: str) -> Any:
    errors = []
    for strict in (False, True):
        try:
            return torch.export.export(model, args, strict=strict).run_decompositions(_decomposition_table())
        except Exception as e:  # noqa: BLE001  (export failures come in many types)
            errors.append(f"{'strict' if strict else 'non-strict'}: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    raise Unsupported(f"torch.export could not capture {name}: " + " | ".join(errors),
                      hint="models with data-dependent control flow need torch.cond or a rewrite")

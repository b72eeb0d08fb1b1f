"""ONNX model -> verified IR Graph: read and check the model, reject unsupported ops all at once,
fix static input shapes, then convert node by node through the per-family converter tables."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from compiler.diagnostics import InvalidModel, SourceLoc, Unsupported
from compiler.ir import Graph, Value
from compiler.ops.registry import TypeRuleError
from compiler.types import TensorType
from compiler.verify import verify
from frontends.onnx import (
    converters_attention,
    converters_bitcast,
    converters_composite,
    converters_index,
    converters_layout_ops,
    converters_llm,
    converters_loss,
    converters_math,
    converters_nn,
    converters_quant,
    converters_recurrent,
    converters_reduce,
    converters_resample,
    converters_shape,
    converters_signal,
    converters_text,
)
from frontends.onnx.context import ConvertContext, Converter, Operand, to_ir_dtype
from frontends.onnx.converters_composite import REFUSED
from frontends.onnx.opsets import MAX_OPSET, MIN_OPSET, version_problem

_DEFAULT_DOMAINS = ("", "ai.onnx")

CONVERTERS: dict[str, Converter] = {
    **converters_math.CONVERTERS, **converters_nn.CONVERTERS,
    **converters_reduce.CONVERTERS, **converters_resample.CONVERTERS,
    **converters_shape.CONVERTERS, **converters_index.CONVERTERS,
    **converters_recurrent.CONVERTERS, **converters_composite.CONVERTERS,
    **converters_quant.CONVERTERS, **converters_attention.CONVERTERS,
    **converters_llm.CONVERTERS, **converters_loss.CONVERTERS,
    **converters_layout_ops.CONVERTERS, **converters_bitcast.CONVERTERS,
    **converters_signal.CONVERTERS, **converters_text.CONVERTERS,
}


def supported_ops() -> list[str]:
    """The ONNX op types (default domain) this frontend converts."""
    return sorted(CONVERTERS)


def load_onnx(model: str | os.PathLike | onnx.ModelProto,
              input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Import an ONNX model (a file path or a ModelProto) as a verified IR graph.

    Args:
        model: path of an .onnx file (external data next to it is loaded), or a ModelProto.
        input_shapes: static shapes by input name; they override the model's (symbolic) dims.

    Raises:
        InvalidModel: missing/corrupt file, checker failure, symbolic input dims.
        Unsupported: opset outside 7..28, ops (or op versions) that are not implemented,
            unsupported types or attributes.
    """
    proto, source = _read_model(model)
    opset = _default_opset(proto, source)
    _check_model(proto, source)
    _check_for_unsupported_ops(proto.graph, source, opset)
    return _convert_graph(proto.graph, source, opset, dict(input_shapes or {}))


# -- reading and checking ------------------------------------------------------------
def _read_model(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, "<ModelProto>"
    path = os.fspath(model)
    loc = SourceLoc(path)
    if not os.path.exists(path):
        raise InvalidModel(f"model file '{path}' does not exist", loc)
    if os.path.isdir(path):
        raise InvalidModel(f"'{path}' is a directory, not an ONNX model file", loc)
    try:
        proto = onnx.load(path)
    except DecodeError as e:
        raise InvalidModel(f"not a valid ONNX model: {e} (file '{path}' is truncated or not an "
                           "ONNX protobuf)", loc) from None
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise InvalidModel(f"not a valid ONNX model: {e} (file '{path}')", loc) from None
    if not proto.HasField("graph") or proto.ir_version == 0:
        raise InvalidModel(f"not a valid ONNX model: file '{path}' has no graph or IR version", loc)
    return proto, path


def _default_opset(proto: onnx.ModelProto, source: str) -> int:
    versions = [o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        if any(n.domain in _DEFAULT_DOMAINS for n in proto.graph.node):
            raise InvalidModel("the model imports no version of the default ONNX domain",
                               SourceLoc(source))
        return MAX_OPSET            # no default-domain node: the op check names what is there
    opset = versions[0]
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise Unsupported(f"ONNX opset {opset} is not supported "
                          f"(supported: {MIN_OPSET}..{MAX_OPSET})",
                          SourceLoc(source),
                          "convert it first: onnx.version_converter.convert_version(model, 17)")
    return opset


def _check_model(proto: onnx.ModelProto, source: str) -> None:
    # Over 2 GB the checker cannot take the proto in memory; it wants the path.
    large = proto.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF and source != "<ModelProto>"
    try:
        onnx.checker.check_model(source if large else proto)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidModel(f"the model fails onnx.checker: {first}", SourceLoc(source)) from None


def _node_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in _DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _check_for_unsupported_ops(graph: onnx.GraphProto, source: str, opset: int) -> None:
    """Collect every unsupported op type (or op version) first and fail once, naming one node
    of each."""
    missing: dict[str, list[str]] = {}
    for i, node in enumerate(graph.node):
        key = _node_key(node)
        if key not in CONVERTERS:
            why = f"{key}: {REFUSED[key]}" if key in REFUSED else key     # refused on purpose
            missing.setdefault(why, []).append(_node_name(node, i))
        elif node.domain in _DEFAULT_DOMAINS:
            problem = version_problem(node, opset)
            if problem is not None:
                missing.setdefault(f"{key}: {problem}", []).append(_node_name(node, i))
    if not missing:
        return
    parts = []
    for op_type, names in missing.items():
        more = f", and {len(names) - 1} more" if len(names) > 1 else ""
        parts.append(f"{op_type} (node '{names[0]}'{more})")
    raise Unsupported(f"unsupported ONNX ops: {', '.join(parts)}",
                      SourceLoc(source, _first(missing)[0], _first(missing)[1]),
                      f"opset {opset}; frontends.onnx.supported_ops() lists the {len(CONVERTERS)} "
                      "supported op types")


def _first(missing: dict[str, list[str]]) -> tuple[str, str]:
    op_type, names = next(iter(missing.items()))
    return names[0], op_type.split(":")[0]


# -- inputs ----------------------------------------------------------------------------
def _input_type(vi: onnx.ValueInfoProto, source: str, override: Sequence[int] | None) -> TensorType:
    loc = SourceLoc(source, vi.name)
    if not vi.type.HasField("tensor_type"):
        raise Unsupported(f"input '{vi.name}' is not a tensor ({vi.type.WhichOneof('value')})", loc)
    tt = vi.type.tensor_type
    dtype = to_ir_dtype(tt.elem_type, f"input '{vi.name}'", loc)
    dims = list(tt.shape.dim) if tt.HasField("shape") else None
    if override is not None:
        shape = tuple(int(d) for d in override)
        if dims is not None and len(dims) != len(shape):
            raise InvalidModel(f"input_shapes gives input '{vi.name}' rank {len(shape)}, the model "
                               f"declares rank {len(dims)}", loc)
        return TensorType(shape, dtype)
    if dims is None:
        raise InvalidModel(f"input '{vi.name}' has no shape", loc,
                           _shape_hint(vi.name, None))
    for i, d in enumerate(dims):
        if not d.HasField("dim_value") or d.dim_value < 0:
            symbol = f"'{d.dim_param}'" if d.dim_param else "unknown"
            raise InvalidModel(f"input '{vi.name}' has a symbolic dimension {i} ({symbol}); the "
                               "compiler needs static shapes", loc, _shape_hint(vi.name, dims))
    return TensorType(tuple(d.dim_value for d in dims), dtype)


def _shape_hint(name: str, dims: list | None) -> str:
    example = ("x".join(str(d.dim_value) if d.HasField("dim_value") else "1" for d in dims)
               if dims else "1x3x224x224")
    dims_tuple = "(" + example.replace("x", ", ") + ("," if "x" not in example else "") + ")"
    return (f"give static shapes: --input-shape {name}={example} "
            f"(Python API: input_shapes={{'{name}': {dims_tuple}}})")


# -- conversion -------------------------------------------------------------------------
def _convert_graph(graph: onnx.GraphProto, source: str, opset: int,
                   input_shapes: dict[str, Sequence[int]]) -> Graph:
    g = Graph(graph.name or "main", source)
    init_names = {t.name for t in graph.initializer}
    if graph.sparse_initializer:
        raise Unsupported("sparse initializers are not supported", SourceLoc(source))
    real_inputs = [vi for vi in graph.input if vi.name not in init_names]
    unknown = sorted(set(input_shapes) - {vi.name for vi in real_inputs})
    if unknown:
        raise InvalidModel(f"input_shapes names unknown input(s) {unknown}; the model's inputs are "
                           f"{[vi.name for vi in real_inputs]}", SourceLoc(source))
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    ctx = ConvertContext(g, opset, source, used)
    for vi in real_inputs:
        ctx.env[vi.name] = g.add_input(vi.name, _input_type(vi, source, input_shapes.get(vi.name)))
    for t in graph.initializer:
        arr = numpy_helper.to_array(t)
        arr.setflags(write=False)
        ctx.env[t.name] = arr
    for i, node in enumerate(graph.node):
        _convert_node(ctx, node, _node_name(node, i))
    g.outputs = [_output_value(ctx, vi, source) for vi in graph.output]
    verify(g)
    return g


def _convert_node(ctx: ConvertContext, node: onnx.NodeProto, name: str) -> None:
    ctx.begin(node, name)
    try:
        result = CONVERTERS[_node_key(node)](ctx, node)
    except TypeRuleError as e:
        raise ctx.unsupported(str(e)) from e
    outs: Sequence[Operand] = result if isinstance(result, (list, tuple)) else [result]
    for i, out_name in enumerate(node.output):
        if not out_name:
            continue
        if i >= len(outs):
            if out_name in ctx.used:
                raise ctx.unsupported(f"output #{i} ('{out_name}') is not supported")
            continue
        ctx.env[out_name] = outs[i]


def _output_value(ctx: ConvertContext, vi: onnx.ValueInfoProto, source: str) -> Value:
    loc = SourceLoc(source, vi.name)
    if vi.HasField("type") and not vi.type.HasField("tensor_type"):
        raise Unsupported(f"output '{vi.name}' is not a tensor "
                          f"({vi.type.WhichOneof('value')})", loc)
    if vi.name not in ctx.env:
        raise InvalidModel(f"output '{vi.name}' is never produced", loc)
    x = ctx.env[vi.name]
    if isinstance(x, np.ndarray):
        ctx.begin(onnx.NodeProto(op_type="Output"), vi.name)
        return ctx.value(x, vi.name)
    if x.producer is not None and x.name != vi.name:   # keep the ONNX output name findable
        x.name = ctx.graph.fresh_name(vi.name)
    return x
